"""The local backend: every job runs on this machine, no AWS account needed.

Training, tuning and batch transform run in a detached `jobs.local.runner` process, which records the outcome
itself; a deployment is `jobs.local.endpoint`, an HTTP server on 127.0.0.1. `refresh` parses metrics from the log
and ends a job whose process died without recording a result. `resume_training` continues a Failed or Stopped
training job from its last epoch's checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from binaudit import db
from jobs import store
from jobs.backend import Backend
from jobs.jobdirs import (
    ENDPOINT_FILE,
    LOG_FILES,
    checkpoint_dir,
    checkpoint_info,
    job_dir,
    read_exit_code,
    read_json,
    read_text,
    tail_lines,
)
from jobs.local.processes import process_alive, spawn_detached, terminate
from jobs.local.training import TRAIN_MODULE, finish_training_run
from jobs.params import TrainingParams, TuningParams
from jobs.records import EndpointError, JobError, JobRecord
from modeling import registry
from modeling.metric_log import parse_metric_log

RUNNER_MODULE = "jobs.local.runner"
ENDPOINT_MODULE = "jobs.local.endpoint"
MAX_LOCAL_PARALLEL_TRIALS = 2
NEVER_STARTED_SECONDS = 300  # a Pending job without a process after this long was never launched
STOP_GRACE_SECONDS = 10.0


def _absolute_channels(params: TrainingParams) -> TrainingParams:
    """Folders resolved against the caller's working directory (the runner runs from the project root)."""
    for name, value in params.channels().items():
        if value.startswith("s3://"):
            raise JobError(f"the local backend reads local folders, but {name} is {value}; download the data "
                           f"(python -m data_tools download ...) or use --backend sagemaker")
    if not params.train or not params.val:
        raise JobError("a training job needs a train folder and a val folder of <count>/<image> (--train, --val)")
    return params.replace(**{k: str(Path(v).expanduser().absolute()) for k, v in params.channels().items()})


def _runner_alive(job: JobRecord) -> bool:
    """Whether the process that records the job's result runs (a trial's is its tuning job's runner)."""
    return process_alive(job.output.get("runner_pid") or job.pid, marker=RUNNER_MODULE, job_id=job.parent_id or job.id)


class LocalBackend(Backend):
    name = "local"
    stop_grace_seconds: float = STOP_GRACE_SECONDS  # SIGTERM, then SIGKILL after this long

    # ---------------------------------------------------------------- launching

    def _log_path(self, kind: str, job_id: str) -> str:
        folder = job_dir(self.workspace, job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / LOG_FILES[kind])

    def _runner_log(self, job: JobRecord) -> Path:
        """The runner's own output: a training job's train.py writes the job's log, its runner runner.log."""
        return job_dir(self.workspace, job.id) / "runner.log" if job.kind == "training" else Path(job.log_path)

    def _launch(self, job: JobRecord, args: list[str] | None = None) -> JobRecord:
        """Start the job's runner (or the process `args` name) detached."""
        args = args or ["-m", RUNNER_MODULE, job.id, "--workspace", str(self.workspace.root),
                        "--database-url", self.workspace.database_url]
        try:
            pid = spawn_detached(args, log_file=self._runner_log(job))
        except OSError as exc:
            return store.finish_job(self.engine, job.id, "Failed", failure_reason=f"could not start: {exc}")[0]
        if job.kind != "deployment":  # the process that records the job's result (see refresh)
            store.merge_output(self.engine, job.id, runner_pid=pid)
        return store.mark_started(self.engine, job.id, pid=pid)

    def start_training(self, params: TrainingParams, *, actor: str) -> JobRecord:
        params = _absolute_channels(params)
        params.check()
        return self._launch(self._create("training", {"training": params.to_dict()}, actor))

    # ---------------------------------------------------------------- resuming

    def resume_training(self, job_id: str, *, actor: str) -> JobRecord:
        """A new training job with the same params that continues a Failed or Stopped one from its checkpoint,
        which moves into the new job's folder (each job owns its files); the new one records `resumed_from`."""
        old = self._resumable(job_id)
        new_id = store.new_job_id("training")
        old_checkpoint, folder = checkpoint_dir(job_dir(self.workspace, old.id)), job_dir(self.workspace, new_id)
        folder.mkdir(parents=True)
        try:  # atomic: of two resumes of one job at once (two analysts, two clicks) exactly one gets the checkpoint
            os.rename(old_checkpoint, checkpoint_dir(folder))
        except FileNotFoundError:
            folder.rmdir()
            raise JobError(self._no_checkpoint(old.id)) from None
        try:
            job = self._create("training", {**old.params, "resumed_from": old.id}, actor, job_id=new_id,
                               details={"resumed_from": old.id}, resumed_from=old.id,
                               resumed_after_epoch=(checkpoint_info(folder) or {}).get("epoch"))
        except BaseException:  # not recorded: the checkpoint goes back to the job that can still be resumed
            os.rename(checkpoint_dir(folder), old_checkpoint)
            raise
        return self._launch(job)

    def _resumable(self, job_id: str) -> JobRecord:
        job = store.get_job(self.engine, job_id)
        if job.backend != self.name or job.kind != "training" or job.parent_id:
            what = "a tuning trial" if job.parent_id else f"a {job.backend} {job.kind} job"
            raise JobError(f"job {job.id} is {what}; only local training jobs can be resumed")
        job = self.refresh(job.id)  # an InProgress record whose process died ends Failed here
        if job.is_active:
            raise JobError(f"job {job.id} is still {job.status}; stop it first (python -m jobs stop {job.id})")
        if job.status == "Completed":
            raise JobError(f"job {job.id} completed (model version {job.output.get('model_version', '?')}); "
                           f"there is nothing to resume")
        if self.resume_checkpoint(job) is None:
            raise JobError(self._no_checkpoint(job.id))
        return job

    def resume_checkpoint(self, job: JobRecord) -> dict[str, Any] | None:
        if (job.backend != self.name or job.kind != "training" or job.parent_id
                or job.status not in ("Failed", "Stopped")):
            return None
        return checkpoint_info(job_dir(self.workspace, job.id))

    def _no_checkpoint(self, job_id: str) -> str:
        for later in store.list_jobs(self.engine, kind="training", backend=self.name, limit=None):
            if later.params.get("resumed_from") == job_id:
                return f"job {job_id} was resumed as {later.id}; its checkpoint moved there"
        return (f"job {job_id} has no checkpoint to resume from (it ended before its first epoch did, or it ran "
                f"before local jobs kept checkpoints)")

    # ---------------------------------------------------------------- tuning and transform

    def start_tuning(self, params: TuningParams, *, actor: str) -> JobRecord:
        if params.max_parallel_jobs > MAX_LOCAL_PARALLEL_TRIALS:
            raise JobError(f"the local backend runs 1 or 2 trials at a time, got max_parallel_jobs="
                           f"{params.max_parallel_jobs}")
        params = TuningParams.from_dict({**params.to_dict(), "base": _absolute_channels(params.base).to_dict()})
        params.check()
        return self._launch(self._create("tuning", {"tuning": params.to_dict()}, actor))

    def start_transform(self, model_version_id: int | str, input: str, output: str | None, *, actor: str,
                        batch_size: int = 16, workers: int | None = None, runtime: str = "auto",
                        precision: str = "auto") -> JobRecord:
        """Score a folder into JSON lines at `output` (a .jsonl file or a folder; None: the job's folder), on the
        scoring path runtime x precision picks (modeling/scoring_paths.py)."""
        if str(input).startswith("s3://") or str(output or "").startswith("s3://"):
            raise JobError("the local backend transforms a local folder into a local file; use --backend "
                           "sagemaker for s3:// locations")
        version = registry.get_version(self.engine, model_version_id)
        job_id = store.new_job_id("transform")
        spec = {"model_version_id": version.id, "model_version": version.name, "model_dir": version.artifact_uri,
                "input": str(Path(input).expanduser().absolute()), "batch_size": batch_size, "workers": workers,
                "output": str(Path(output).expanduser().absolute()) if output else str(job_dir(self.workspace, job_id)),
                "runtime": runtime, "precision": precision}
        return self._launch(self._create("transform", {"transform": spec}, actor, job_id=job_id))

    # ---------------------------------------------------------------- endpoints

    def deploy(self, model_version_id: int | str, *, actor: str, wait: bool = False,
               timeout_seconds: float = 120.0, runtime: str = "auto", precision: str = "auto") -> JobRecord:
        version = registry.get_version(self.engine, model_version_id)
        spec = {"model_version_id": version.id, "model_version": version.name, "model_dir": version.artifact_uri,
                "runtime": runtime, "precision": precision}
        job = self._create("deployment", spec, actor, endpoint_status="Creating", **spec)
        job = self._launch(job, ["-m", ENDPOINT_MODULE, "--job-id", job.id, "--model-dir", version.artifact_uri,
                                 "--ready-file", str(job_dir(self.workspace, job.id) / ENDPOINT_FILE),
                                 "--runtime", runtime, "--precision", precision])
        deadline = time.monotonic() + timeout_seconds
        while wait:
            job = self.refresh(job.id)
            if job.output.get("endpoint_url") or not job.is_active:
                break
            if time.monotonic() > deadline:
                raise JobError(f"endpoint {job.id} did not come up in {timeout_seconds:.0f} s; see {job.log_path}")
            time.sleep(0.2)
        return job

    def _endpoint_job(self, job_or_endpoint: str) -> JobRecord:
        if job_or_endpoint.startswith("http://"):
            for job in store.list_jobs(self.engine, kind="deployment", backend=self.name, limit=None):
                if job.output.get("endpoint_url") == job_or_endpoint.rstrip("/"):
                    return job
            raise JobError(f"no local endpoint at {job_or_endpoint}")
        job = self._own_job(job_or_endpoint)
        if job.kind != "deployment":
            raise JobError(f"job {job.id} is a {job.kind} job, not a deployment")
        return job

    def invoke(self, job_or_endpoint: str, body: bytes, content_type: str,
               accept: str = "application/json") -> dict[str, Any]:
        job = self.refresh(self._endpoint_job(job_or_endpoint).id)
        if not job.is_active:
            raise JobError(f"endpoint {job.id} is {job.status}" + (f": {job.failure_reason}" if job.failure_reason
                                                                    else ""))
        url = job.output.get("endpoint_url")
        if not url:
            raise JobError(f"endpoint {job.id} is still starting; try again in a few seconds")
        request = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                         headers={"Content-Type": content_type, "Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            with contextlib.suppress(ValueError, AttributeError):  # not our JSON error body: keep the text
                detail = json.loads(detail).get("error", detail)
            raise EndpointError(f"the endpoint answered {exc.code}: {detail}", exc.code) from None

    def delete_endpoint(self, job_or_endpoint: str, *, actor: str) -> JobRecord:
        job = self._endpoint_job(job_or_endpoint)
        if not job.is_active:
            return job
        store.request_stop(self.engine, job.id, actor=actor)
        if job.pid:
            terminate(job.pid, group=True, markers=(ENDPOINT_MODULE,), job_ids=(job.id,), grace_seconds=5.0)
        return store.finish_job(self.engine, job.id, "Stopped", actor=actor,
                                output={"endpoint_status": "Deleted"})[0]

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Local endpoints that are up (or starting)."""
        out = []
        for job in store.list_jobs(self.engine, kind="deployment", backend=self.name, limit=None, active_only=True):
            job = self.refresh(job.id)
            if job.is_active:
                out.append({"backend": self.name, "name": job.id, "job_id": job.id,
                            "status": job.output.get("endpoint_status"), "url": job.output.get("endpoint_url"),
                            "model_version": job.output.get("model_version"), "created_at": job.created_at})
        return out

    # ---------------------------------------------------------------- watching

    def _refresh(self, job: JobRecord) -> JobRecord:
        return self._refresh_endpoint(job) if job.kind == "deployment" else self._refresh_run(job)

    def _refresh_run(self, job: JobRecord) -> JobRecord:
        if job.kind == "training":
            metrics = parse_metric_log(read_text(job.log_path))
            if metrics != job.metrics:
                job = store.update_job(self.engine, job.id, metrics=metrics)
        runner_pid = job.output.get("runner_pid") or job.pid
        if runner_pid is None:
            age = (db.utcnow() - job.created_at).total_seconds()
            if age > NEVER_STARTED_SECONDS:
                return store.finish_job(self.engine, job.id, "Failed",
                                        failure_reason="the job was never started (no process was recorded)")[0]
            return job
        if _runner_alive(job):
            return job
        returncode = read_exit_code(job_dir(self.workspace, job.id))
        if job.kind == "training" and returncode is not None:  # train.py ended; its runner died before recording it
            return finish_training_run(self.engine, self.workspace, job.id, returncode)
        what = "training" if job.kind == "training" else f"{job.kind} runner"
        # a trial's runner is its tuning job's: its log says nothing about this trial
        return self._process_gone(job, runner_pid, f"the {what} process exited without a result",
                                  None if job.parent_id else self._runner_log(job),
                                  stopped={"failure_reason": "stopped on request"})

    def _refresh_endpoint(self, job: JobRecord) -> JobRecord:
        if not process_alive(job.pid, marker=ENDPOINT_MODULE, job_id=job.id):
            return self._process_gone(job, job.pid, "the endpoint process exited", job.log_path,
                                      stopped={"output": {"endpoint_status": "Deleted"}}, endpoint_status="Failed")
        ready = read_json(job_dir(self.workspace, job.id) / ENDPOINT_FILE)
        if ready and job.output.get("endpoint_url") != ready.get("url"):
            job = store.merge_output(self.engine, job.id, endpoint_url=ready["url"], endpoint_status="InService")
        return job

    def _process_gone(self, job: JobRecord, pid: int | None, failure: str, log: str | Path | None, *,
                      stopped: dict[str, Any], **failed_output: Any) -> JobRecord:
        """End a job whose process is gone without recording the end: Stopped when a stop was asked for, else
        Failed naming the pid and the process's last line (a traceback's, when it crashed)."""
        job = store.get_job(self.engine, job.id)
        if not job.is_active:  # it did record it, after all
            return job
        if job.stop_requested:
            return store.finish_job(self.engine, job.id, "Stopped", **stopped)[0]
        last = tail_lines(log, 1).strip()
        return store.finish_job(self.engine, job.id, "Failed", output=failed_output or None, failure_reason=(
            f"{failure} (pid {pid} not running)" + (f"; its last words: {last}" if last else "")))[0]

    # ---------------------------------------------------------------- stopping

    def _stop_running(self, job: JobRecord, *, actor: str) -> JobRecord:
        """SIGTERM to the job's processes, SIGKILL after the grace period; the job ends Stopped, registering nothing."""
        grace_seconds = self.stop_grace_seconds
        job_ids = [job.id]  # a tuning job's group also runs its trials' train.py, named by the trials' ids
        if job.kind == "tuning":
            for trial in store.list_jobs(self.engine, parent_id=job.id, limit=None, active_only=True):
                store.request_stop(self.engine, trial.id, actor=actor)
                job_ids.append(trial.id)
        if job.pid:
            # a trial shares its tuning runner's process group: signal its train.py alone
            trial = job.parent_id is not None
            terminate(job.pid, group=not trial, markers=(TRAIN_MODULE,) if trial else (RUNNER_MODULE, TRAIN_MODULE),
                      job_ids=job_ids, grace_seconds=grace_seconds)
        deadline = time.monotonic() + grace_seconds  # the runner records the stop itself, unless it is gone
        while time.monotonic() < deadline:
            current = store.get_job(self.engine, job.id)
            if not current.is_active:
                return current
            if not _runner_alive(job):
                break
            time.sleep(0.1)
        for trial in store.list_jobs(self.engine, parent_id=job.id, limit=None, active_only=True):
            store.finish_job(self.engine, trial.id, "Stopped", actor=actor, failure_reason="stopped on request")
        return store.finish_job(self.engine, job.id, "Stopped", actor=actor, failure_reason="stopped on request")[0]
