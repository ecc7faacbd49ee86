"""Helpers shared by tests/test_jobs_*.py (no tests here): a local backend over a temporary workspace, tiny params."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from binaudit import db
from binaudit.config import load_settings
from binaudit.workspace import Workspace
from jobs import JobRecord, TrainingParams, get_backend, list_jobs
from modeling import registry

JOB_TIMEOUT_SECONDS = 180


def tiny_params(dataset: Path, **changes) -> TrainingParams:
    """resnet18 at 32 px, 1 epoch, no DataLoader workers: a few seconds on a CPU."""
    params = TrainingParams(train=str(dataset / "train"), val=str(dataset / "val"), arch="resnet18", image_size=32,
                            epochs=1, batch_size=16, workers=0)
    return params.replace(**changes)


def make_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None = None) -> SimpleNamespace:
    """A local backend over a workspace in `tmp_path`, its database SQLite or `database_url`."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the job processes: 2 cores, 2 test workers
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    if database_url:  # the job processes open the same database
        monkeypatch.setenv("BINAUDIT_DATABASE_URL", database_url)
    settings = load_settings(env={}, secrets_path=tmp_path / "no-secrets.toml", workspace=tmp_path / "ws",
                             database_url=database_url)
    workspace = Workspace.from_settings(settings)
    engine = workspace.open()
    backend = get_backend("local", settings=settings, workspace=workspace, engine=engine)
    return SimpleNamespace(settings=settings, workspace=workspace, engine=engine, backend=backend)


def stop_leftovers(ctx: SimpleNamespace) -> None:
    """A failed test must not leave training processes or endpoints running."""
    for job in list_jobs(ctx.engine, limit=None, active_only=True):
        if job.backend == "local" and job.parent_id is None:
            ctx.backend.stop_grace_seconds = 2
            ctx.backend.stop(job.id, actor="test-cleanup")


def wait_done(backend, job_id: str, timeout: float = JOB_TIMEOUT_SECONDS) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        job = backend.refresh(job_id)
        if not job.is_active:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout} s:\n{backend.log_tail(job_id)}")
        time.sleep(0.3)


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def hold_train_py_after_epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, epoch: int) -> Path:
    """train.py runs started from here on wait after `epoch`'s checkpoint until the returned file exists.

    modeling.train.hold_for_test honours the two variables (inherited by runners and train.py): a test can stop,
    kill or resume a job at a known epoch, however fast or slow the machine is.
    """
    barrier = tmp_path / "release-train-py"
    monkeypatch.setenv("BINAUDIT_TEST_PAUSE_AFTER_EPOCH", str(epoch))
    monkeypatch.setenv("BINAUDIT_TEST_BARRIER", str(barrier))
    return barrier


def add_recount(engine, workspace: Workspace, bin_id: str, photo: Path, count: int) -> None:
    """A bin whose latest decision confirms a mismatch with a recounted quantity (what audit records)."""
    dest = workspace.images_dir / f"{bin_id}.jpg"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(photo, dest)
    now = db.utcnow()
    with db.write_tx(engine) as conn:
        conn.execute(db.bins.insert().values(
            id=bin_id, image_uri=f"images/{bin_id}.jpg", expected_count=count + 1, items=[], search_text="",
            source="upload", created_at=now, updated_at=now, decision="confirm_mismatch", recounted_count=count,
            decided_by="analyst", decided_at=now, queued=False, row_version=1))


def refresh_while_another_registers(monkeypatch: pytest.MonkeyPatch, first, second) -> tuple:
    """Two refreshers of one completed job, overlapping at a known point: `first()` is held inside
    registry.register_model while `second()` runs to its end, then released. A second refresher entering
    register_model fails the test at once. Returns (first's result, second's result).
    """
    real_register = registry.register_model
    inside, second_done = threading.Event(), threading.Event()

    def held_register(*args, **kwargs):
        if inside.is_set():
            raise AssertionError("a second refresher is registering the same model")
        inside.set()
        if not second_done.wait(JOB_TIMEOUT_SECONDS):
            raise AssertionError("the second refresher never returned")
        return real_register(*args, **kwargs)

    def run_second():
        if not inside.wait(JOB_TIMEOUT_SECONDS):
            raise AssertionError("the first refresher never started registering")
        try:
            return second()
        finally:
            second_done.set()

    monkeypatch.setattr(registry, "register_model", held_register)
    with ThreadPoolExecutor(2) as pool:
        results = pool.submit(first), pool.submit(run_second)
        return results[0].result(), results[1].result()
