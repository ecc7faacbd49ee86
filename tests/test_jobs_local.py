"""The local backend end to end on tiny synthetic data: train, tune, fail, stop, restart, resume, promote."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit.export import build_recount_dataset
from binaudit import db
from binaudit.workspace import Workspace
from jobs import Integer, JobError, TuningParams, get_backend, list_jobs, refresh_active, store
from jobs.jobdirs import checkpoint_dir, checkpoint_info, job_dir
from jobs.local.backend import ENDPOINT_MODULE, RUNNER_MODULE, TRAIN_MODULE
from jobs.local.processes import process_alive
from modeling import registry
from modeling.metric_log import parse_metric_log
from modeling.promotion import Comparison, Scores, compare_with_active, promote
from tests.test_jobs_support import (
    JOB_TIMEOUT_SECONDS,
    add_recount,
    hold_train_py_after_epoch,
    make_local,
    stop_leftovers,
    tiny_params,
    wait_done,
    wait_for,
)


@pytest.fixture
def local(tmp_path, monkeypatch):
    ctx = make_local(tmp_path, monkeypatch)
    yield ctx
    stop_leftovers(ctx)


def _audit_actions(engine, entity_id) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(db.audit_log.c.action).where(db.audit_log.c.entity_id == str(entity_id))
                                 .order_by(db.audit_log.c.id)).scalars())


@pytest.mark.slow
def test_training_with_recounts_completes_registers_and_is_promoted(local, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("BINAUDIT_CHECK_SCORING_PATHS", "true")  # the default: registration checks the ONNX paths
    replaced = sorted((tiny_dataset / "train" / "1").glob("*.jpg"))[0]  # recounted as 4: must move class
    extra = sorted((tiny_dataset / "test" / "2").glob("*.jpg"))[0]
    add_recount(local.engine, local.workspace, replaced.stem, replaced, 4)
    add_recount(local.engine, local.workspace, "recount-new", extra, 2)
    in_val = sorted((tiny_dataset / "val" / "2").glob("*.jpg"))[0]  # a held-out bin: must stay out of training
    add_recount(local.engine, local.workspace, in_val.stem, in_val, 3)
    # the audit core's folder, written without naming the job's val/test: train.py must leave in_val out itself
    recounts = tmp_path / "recounts"
    build_recount_dataset(local.engine, local.workspace, recounts, max_count=5)
    assert (recounts / "3" / in_val.name).is_file()

    job = local.backend.start_training(tiny_params(tiny_dataset, epochs=2, recounts=str(recounts)), actor="ana")
    assert job.status == "InProgress" and job.pid and job.is_active and job.kind == "training"
    job = wait_done(local.backend, job.id)

    assert job.status == "Completed", job.failure_reason
    assert [m["epoch"] for m in job.metrics] == [1, 2]
    assert all({"val_accuracy", "val_rmse"} <= set(m) for m in job.metrics)
    assert job.metrics == parse_metric_log(Path(job.log_path).read_text())
    version = registry.get_version(local.engine, job.model_version_id)
    assert version.job_id == job.id and version.name == job.output["model_version"]
    assert version.val_accuracy is not None and version.val_rmse is not None
    assert not checkpoint_dir(job_dir(local.workspace, job.id)).exists()  # checkpointed, deleted once registered
    # registration exported the ONNX copies and checked them on the job's validation photos, on this machine
    check = json.loads((version.model_dir / "scoring_paths.json").read_text())["checks"][-1]
    assert check["val"] == str(tiny_dataset / "val") and check["paths"]["onnx fp32"]["count_agreement"] == 1.0
    assert (version.model_dir / "model.onnx").is_file() and (version.model_dir / "model.int8.onnx").is_file()
    assert f"checking the scoring paths of {version.name}" in (job_dir(local.workspace, job.id) / "runner.log").read_text()

    # the recounts channel: train.py trained on two recounts (one replacing its photo), left the val bin's out
    assert version.metrics["recounts"] == {"folder": str(recounts), "used": 2, "replaced": 1, "left_out": 1,
                                           "left_out_bins": [in_val.stem], "beyond_range": 0}
    assert ("recounts: 2 used (1 replacing their photo in --train), 1 left out of training because their bins are "
            f"in val/test (training on them would leak held-out photos): {in_val.stem}") in Path(job.log_path).read_text()
    assert version.config["job"]["recounts"] == str(recounts) == version.config["resolved_args"]["recounts"]
    plain = [len(list((tiny_dataset / "train" / c).glob("*.jpg"))) for c in (*map(str, range(6)), "6+")]
    moved = [n - (c == 1) + (c == 4) + (c == 2) for c, n in enumerate(plain)]  # 1 -> 4, and recount-new as 2
    assert version.config["train_class_counts"] == moved

    first = promote(local.engine, version.id, actor="ana")
    assert first.promoted and first.comparison is None and registry.active_version(local.engine).id == version.id
    assert "activate_model" in _audit_actions(local.engine, version.id)


@pytest.mark.slow
def test_promotion_refuses_a_worse_candidate_unless_forced(local, tiny_dataset, tmp_path):
    job = wait_done(local.backend, local.backend.start_training(tiny_params(tiny_dataset), actor="ana").id)
    model_dir = local.workspace.jobs_dir / job.id / "model"
    active = registry.get_version(local.engine, job.model_version_id)
    promote(local.engine, active.id, actor="ana")
    candidate = registry.register_model(local.engine, model_dir, local.workspace.models_dir, actor="ana")

    # the real comparison: both versions scored on the same folder with the shared evaluation code
    same = compare_with_active(local.engine, candidate.id, tiny_dataset / "val")
    assert same.active is not None and same.candidate.n_scored == same.active.n_scored > 0
    assert (same.candidate.accuracy, same.candidate.rmse) == (same.active.accuracy, same.active.rmse)

    worse = Comparison(str(tiny_dataset / "val"), Scores(candidate.id, candidate.name, 0.20, 1.90, 13),
                       Scores(active.id, active.name, 0.55, 0.80, 13))
    refused = promote(local.engine, candidate.id, actor="ana", comparison=worse)
    assert not refused.promoted and "refused" in refused.reason
    assert registry.active_version(local.engine).id == active.id
    assert "promotion_refused" in _audit_actions(local.engine, candidate.id)
    by_rmse = promote(local.engine, candidate.id, metric="val_rmse", actor="ana", comparison=worse)
    assert not by_rmse.promoted

    forced = promote(local.engine, candidate.id, actor="ana", comparison=worse, force=True)
    assert forced.promoted and "forced" in forced.reason
    assert registry.active_version(local.engine).id == candidate.id

    tie = promote(local.engine, active.id, actor="ana", val_dir=tiny_dataset / "val")  # equal: the candidate wins
    assert tie.promoted and registry.active_version(local.engine).id == active.id
    with pytest.raises(registry.RegistryError, match="val_accuracy, val_rmse"):
        promote(local.engine, candidate.id, actor="ana", metric="loss")


@pytest.mark.slow
def test_bad_data_path_fails_with_train_py_reason_and_registers_nothing(local, tiny_dataset, tmp_path):
    missing = tmp_path / "no-such-folder"
    job = local.backend.start_training(tiny_params(tiny_dataset, train=str(missing)), actor="ana")
    job = wait_done(local.backend, job.id)
    assert job.status == "Failed"
    assert job.failure_reason == f"data folder not found: {missing}"
    assert job.model_version_id is None and registry.list_versions(local.engine) == []


@pytest.mark.slow
def test_stop_request_stops_the_process_group_and_registers_nothing(local, tiny_dataset):
    job = local.backend.start_training(tiny_params(tiny_dataset, epochs=500), actor="ana")
    wait_for(lambda: "training resnet18" in local.backend.log_tail(job.id), what="train.py to start")
    job = local.backend.stop(job.id, actor="ana")

    assert job.status == "Stopped" and job.stop_requested
    assert job.failure_reason == "stopped on request"
    assert not process_alive(job.pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)  # nothing of the group is left: runner and train.py both ended
    assert registry.list_versions(local.engine) == []
    assert "stop_job" in _audit_actions(local.engine, job.id)
    assert local.backend.stop(job.id, actor="ana").status == "Stopped"  # stopping again changes nothing


@pytest.mark.slow
def test_restart_finds_the_jobs_and_fails_a_job_whose_process_died(local, tiny_dataset):
    job = local.backend.start_training(tiny_params(tiny_dataset, epochs=500), actor="ana")
    wait_for(lambda: "training resnet18" in local.backend.log_tail(job.id), what="train.py to start")
    os.killpg(job.pid, signal.SIGKILL)  # the machine "reboots": nobody records anything
    wait_for(lambda: not process_alive(job.pid), what="the runner to die")

    engine = Workspace(local.workspace.root, local.workspace.database_url).open()  # a new app, the same database
    found = list_jobs(engine)
    assert [j.id for j in found] == [job.id] and found[0].status == "InProgress"
    refreshed = {j.id: j for j in refresh_active(engine, settings=local.settings, workspace=local.workspace)}
    assert refreshed[job.id].status == "Failed"
    assert refreshed[job.id].failure_reason == (
        f"the training process exited without a result (pid {job.pid} not running)")
    again = get_backend("local", settings=local.settings, workspace=local.workspace, engine=engine)
    assert again.refresh(job.id).status == "Failed" and registry.list_versions(engine) == []


def _job_with_pid(local, kind: str, pid: int, tmp_path: Path):
    job = store.create_job(local.engine, kind=kind, backend="local", params={}, actor="ana",
                           log_path=str(tmp_path / "x.log"))
    return store.mark_started(local.engine, job.id, pid=pid)


@pytest.mark.parametrize(("kind", "module"), [("training", RUNNER_MODULE), ("deployment", ENDPOINT_MODULE)])
def test_a_pid_reused_by_another_jobs_process_is_not_this_jobs(local, tmp_path, kind, module):
    """After a container restart the pid a job recorded can run ANOTHER job's runner or endpoint (same module in
    its command line, another job id): the job must not look alive, and stopping it must not kill the other job."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", module,
                              "train-20260101-000000-beef"], start_new_session=True)
    try:
        wait_for(lambda: module.encode() in Path(f"/proc/{other.pid}/cmdline").read_bytes(), what="exec")
        dead, stopped = (_job_with_pid(local, kind, other.pid, tmp_path) for _ in range(2))
        assert process_alive(other.pid, module) and not process_alive(other.pid, module, job_id=dead.id)

        refreshed = local.backend.refresh(dead.id)
        assert refreshed.status == "Failed" and f"pid {other.pid} not running" in refreshed.failure_reason
        local.backend.stop_grace_seconds = 2
        assert local.backend.stop(stopped.id, actor="ana").status == "Stopped"
        assert other.poll() is None  # the other job's process was not signalled
    finally:
        other.kill()
        other.wait()


def _sleeping_train_py(model_dir: Path) -> subprocess.Popen:
    """A process whose command line is a train.py run's (the runner names the job's folder in --model-dir)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", TRAIN_MODULE,
                             "--model-dir", str(model_dir)], start_new_session=True)
    wait_for(lambda: TRAIN_MODULE.encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), what="exec")
    return proc


def test_stopping_a_trial_signals_its_own_train_py_and_no_other_jobs(local):
    tuning = store.create_job(local.engine, kind="tuning", backend="local", params={}, actor="ana")
    trials = [store.create_job(local.engine, kind="training", backend="local", params={}, actor="ana",
                               parent_id=tuning.id) for _ in range(2)]
    other = _sleeping_train_py(job_dir(local.workspace, "train-20260101-000000-beef") / "model")
    own = _sleeping_train_py(job_dir(local.workspace, trials[1].id) / "model")
    try:
        local.backend.stop_grace_seconds = 2
        reused = store.mark_started(local.engine, trials[0].id, pid=other.pid)  # its pid now runs another job
        assert local.backend.stop(reused.id, actor="ana").status == "Stopped"
        assert other.poll() is None
        store.mark_started(local.engine, trials[1].id, pid=own.pid)
        assert local.backend.stop(trials[1].id, actor="ana").status == "Stopped"
        own.wait(timeout=10)  # ended (sleeping 120 s): signalled; its status was reaped by the liveness check
    finally:
        for proc in (other, own):
            proc.kill()
            proc.wait()


def test_local_backend_refuses_what_it_cannot_run(local, tiny_dataset):
    with pytest.raises(JobError, match="local folders"):
        local.backend.start_training(tiny_params(tiny_dataset, train="s3://bucket/train"), actor="ana")
    with pytest.raises(JobError, match="1 or 2 trials"):
        local.backend.start_tuning(TuningParams(base=tiny_params(tiny_dataset), max_parallel_jobs=3), actor="ana")
    with pytest.raises(JobError, match="resnet18"):
        local.backend.start_training(tiny_params(tiny_dataset, arch="vgg16"), actor="ana")
    with pytest.raises(JobError, match="from 32 to 1024 px"):
        bad_space = {"image_size": Integer(8, 64)}  # 8 px is below train.py's minimum
        local.backend.start_tuning(TuningParams(base=tiny_params(tiny_dataset), search_space=bad_space), actor="a")
    assert list_jobs(local.engine) == []  # nothing was started


def _checkpoint_epoch(local, job_id: str) -> int:
    return (checkpoint_info(job_dir(local.workspace, job_id)) or {}).get("epoch") or 0


def _first_epoch_line(log_path: str) -> int:
    return int(re.search(r"^epoch=(\d+) ", Path(log_path).read_text(), re.M).group(1))


@pytest.mark.slow
def test_a_stopped_training_job_resumes_from_its_checkpoint_as_a_new_job(local, tiny_dataset, tmp_path, monkeypatch):
    hold_train_py_after_epoch(monkeypatch, tmp_path, 1)  # never released: the stop lands after epoch 1 of 3
    job = local.backend.start_training(tiny_params(tiny_dataset, epochs=3), actor="ana")
    wait_for(lambda: _checkpoint_epoch(local, job.id) == 1, timeout=JOB_TIMEOUT_SECONDS,
             what="train.py held after epoch 1's checkpoint")
    stopped = local.backend.stop(job.id, actor="ana")
    assert stopped.status == "Stopped", stopped.failure_reason
    after = _checkpoint_epoch(local, job.id)
    assert after == 1 and registry.list_versions(local.engine) == []

    resumed = local.backend.resume_training(job.id, actor="ben")
    assert resumed.id != job.id and resumed.kind == "training" and resumed.is_active
    assert resumed.params == {**stopped.params, "resumed_from": job.id}
    assert resumed.output["resumed_from"] == job.id and resumed.output["resumed_after_epoch"] == after
    assert not checkpoint_dir(job_dir(local.workspace, job.id)).exists()  # moved: each job owns its files
    with local.engine.connect() as conn:
        created = conn.execute(sa.select(db.audit_log.c.actor, db.audit_log.c.details).where(
            db.audit_log.c.entity_id == resumed.id, db.audit_log.c.action == "create_job")).one()
    assert created.actor == "ben" and created.details["resumed_from"] == job.id

    done = wait_done(local.backend, resumed.id)
    assert done.status == "Completed", done.failure_reason
    log = Path(done.log_path).read_text()
    assert f"resuming from {checkpoint_dir(job_dir(local.workspace, done.id))} after epoch {after}" in log
    assert "epochs 2..3" in log and _first_epoch_line(done.log_path) == 2  # starts after the held epoch: never held
    assert [m["epoch"] for m in done.metrics] == [2, 3]
    version = registry.get_version(local.engine, done.model_version_id)
    assert version.job_id == done.id and version.val_accuracy is not None
    assert not checkpoint_dir(job_dir(local.workspace, done.id)).exists()  # the registered model is what is kept

    with pytest.raises(JobError, match=f"job {done.id} completed .*nothing to resume"):
        local.backend.resume_training(done.id, actor="ana")
    with pytest.raises(JobError, match=f"job {job.id} was resumed as {done.id}"):
        local.backend.resume_training(job.id, actor="ana")


def test_resume_refuses_jobs_it_cannot_continue(local, tmp_path):
    def record(kind: str, status: str, **kwargs):
        return store.create_job(local.engine, kind=kind, backend="local", params={"training": {}}, actor="ana",
                                status=status, **kwargs)

    never_checkpointed = record("training", "Failed")
    with pytest.raises(JobError, match=f"job {never_checkpointed.id} has no checkpoint to resume from"):
        local.backend.resume_training(never_checkpointed.id, actor="ana")
    running = record("training", "InProgress")  # just created: no process yet, but not given up on
    with pytest.raises(JobError, match="is still InProgress; stop it first"):
        local.backend.resume_training(running.id, actor="ana")
    for job in (record("transform", "Failed"), record("training", "Stopped", parent_id=running.id),
                store.create_job(local.engine, kind="training", backend="sagemaker", params={}, actor="ana",
                                 status="Stopped")):
        with pytest.raises(JobError, match="only local training jobs can be resumed"):
            local.backend.resume_training(job.id, actor="ana")
    assert [j.id for j in list_jobs(local.engine, kind="training", backend="local")
            if j.params.get("resumed_from")] == []  # nothing was started
