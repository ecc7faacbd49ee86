"""Ending a local training run: status, metrics from its log, the failure reason, the model version.

Called by the runner when train.py exits, and by `refresh` when the runner died after writing the exit record
(refresh only finishes a job whose runner is gone, and several refreshers may: registering goes to whoever claims
the job first, see store.claim_registration). A failed or stopped run registers nothing and keeps its checkpoint
(a local training job can be resumed from it); a completed one's checkpoint is deleted.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from binaudit.workspace import Workspace
from jobs import store
from jobs.jobdirs import job_dir, read_text, remove_checkpoint
from jobs.records import JobRecord
from modeling import registry
from modeling.metric_log import parse_metric_log

_ERROR_LINE = re.compile(r"^(?:\S+: )?error: (.+)$")
TAIL_LINES = 8


def failure_reason(log_text: str, returncode: int) -> str:
    """train.py's last `error: ...` line, else the last lines of the log (a traceback's end), else the code."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match.group(1)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"train.py was killed by {name}"
    tail = " | ".join(lines[-TAIL_LINES:])
    return f"train.py exited with status {returncode}" + (f": {tail}" if tail else "")


def _register(engine: Engine, workspace: Workspace, job: JobRecord, model_dir: Path) -> registry.ModelVersion:
    return registry.register_model(
        engine, model_dir, workspace.models_dir, job_id=job.id, actor=job.output.get("requested_by", "system"),
        extra_config={"job": {"id": job.id, "backend": job.backend, "parent_id": job.parent_id,
                              "include_recounts": bool(job.params.get("training", {}).get("include_recounts"))}},
    )


def version_summary(version: registry.ModelVersion) -> dict[str, Any]:
    return {"model_version_id": version.id, "model_version": version.name, "model_dir": version.artifact_uri,
            "val_accuracy": version.val_accuracy, "val_rmse": version.val_rmse}


def finish_training_run(engine: Engine, workspace: Workspace, job_id: str, returncode: int,
                        *, stop_reason: str | None = None) -> JobRecord:
    """Record how a local train.py run ended; registers a model version when it completed."""
    job = store.get_job(engine, job_id)
    if not job.is_active:
        return job
    folder = job_dir(workspace, job.id)
    metrics = parse_metric_log(read_text(job.log_path))
    model_dir = folder / "model"
    if returncode != 0 and (job.stop_requested or stop_reason):
        return store.finish_job(engine, job.id, "Stopped", metrics=metrics,
                                failure_reason=stop_reason or "stopped on request")[0]
    if returncode != 0:
        return store.finish_job(engine, job.id, "Failed", metrics=metrics,
                                failure_reason=failure_reason(read_text(job.log_path), returncode))[0]
    with store.registration_claim(engine, job.id) as mine:
        if not mine:  # another caller (the runner, a second refresher) is registering it
            return store.get_job(engine, job.id)
        try:
            # a version already there was registered by a caller that crashed before finishing the job
            version = registry.version_for_job(engine, job.id) or _register(engine, workspace, job, model_dir)
        except registry.RegistryError as exc:
            return store.finish_job(engine, job.id, "Failed", metrics=metrics, failure_reason=(
                f"train.py finished but its model could not be registered: {exc}"))[0]
        # the registered model is what is kept (a Failed or Stopped run keeps its checkpoint to resume); deleted
        # before the job reads Completed, so whoever sees it Completed sees the space freed
        remove_checkpoint(folder)
        return store.finish_job(engine, job.id, "Completed", metrics=metrics, output=version_summary(version))[0]
