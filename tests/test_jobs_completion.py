"""A completed local run is registered once, however many refreshers see it complete at the same time
(on SQLite and on PostgreSQL)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from jobs import JobRecord, store
from jobs.jobdirs import job_dir, write_exit_record
from modeling import registry
from tests.modeling_fixtures import tiny_model
from tests.test_jobs_support import make_local, refresh_while_another_registers, stop_leftovers, tiny_params


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory):
    return tiny_model(tiny_dataset, tmp_path_factory)


@pytest.fixture
def local(tmp_path, monkeypatch, database_url):
    ctx = make_local(tmp_path, monkeypatch, database_url)
    yield ctx
    stop_leftovers(ctx)


def _completed_run_nobody_recorded(local, tiny_dataset, model_dir) -> JobRecord:
    """A training job whose train.py completed (model saved, exit record written) and whose runner died before
    recording it: the next refresh finishes it and registers the model."""
    job_id = store.new_job_id("training")
    folder = job_dir(local.workspace, job_id)
    shutil.copytree(model_dir, folder / "model")
    (folder / "train.log").write_text("")
    write_exit_record(folder, 0)
    runner = subprocess.Popen([sys.executable, "-c", ""])
    runner.wait()
    job = store.create_job(local.engine, kind="training", backend="local", job_id=job_id, actor="ana",
                           params={"training": tiny_params(tiny_dataset).to_dict()},
                           log_path=str(folder / "train.log"), output={"requested_by": "ana"})
    return store.mark_started(local.engine, job.id, pid=runner.pid)


def _versions_of(engine, job_id: str) -> list[registry.ModelVersion]:
    return [v for v in registry.list_versions(engine) if v.job_id == job_id]


def test_two_refreshers_of_a_completed_run_register_one_version(local, tiny_dataset, tiny_model_dir, monkeypatch):
    job = _completed_run_nobody_recorded(local, tiny_dataset, tiny_model_dir)
    refresh = lambda: local.backend.refresh(job.id)  # noqa: E731 - the dashboard's fragment and a CLI `jobs --refresh`
    first, second = refresh_while_another_registers(monkeypatch, refresh, refresh)

    versions = _versions_of(local.engine, job.id)
    assert len(versions) == 1
    final = store.get_job(local.engine, job.id)
    assert final.status == "Completed" and final.model_version_id == versions[0].id
    assert store.CLAIM_KEY not in final.output
    assert (first.status, second.status) == ("Completed", "InProgress")  # the second saw it being registered


def test_a_live_claim_is_left_alone_and_an_expired_one_is_taken_over_without_registering_twice(
        local, tiny_dataset, tiny_model_dir):
    job = _completed_run_nobody_recorded(local, tiny_dataset, tiny_model_dir)
    store.merge_output(local.engine, job.id, **{store.CLAIM_KEY: {"by": "elsewhere", "since": "2999-01-01"}})
    assert local.backend.refresh(job.id).status == "InProgress" and _versions_of(local.engine, job.id) == []

    # a refresher claimed the job, registered its model and crashed before finishing the job
    registered = registry.register_model(local.engine, job_dir(local.workspace, job.id) / "model",
                                         local.workspace.models_dir, job_id=job.id)
    store.merge_output(local.engine, job.id, **{store.CLAIM_KEY: {"by": "gone", "since": "2020-01-01T00:00:00"}})
    job = local.backend.refresh(job.id)
    assert job.status == "Completed" and job.model_version_id == registered.id
    assert [v.id for v in _versions_of(local.engine, job.id)] == [registered.id]


def test_a_claim_is_given_back_when_registering_raises(local, tiny_dataset, tiny_model_dir, monkeypatch):
    job = _completed_run_nobody_recorded(local, tiny_dataset, tiny_model_dir)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_register = registry.register_model
    monkeypatch.setattr(registry, "register_model", disk_full)
    with pytest.raises(OSError):
        local.backend.refresh(job.id)
    assert store.CLAIM_KEY not in store.get_job(local.engine, job.id).output
    monkeypatch.setattr(registry, "register_model", real_register)
    assert local.backend.refresh(job.id).status == "Completed"  # the next refresh retries at once
