"""Jobs: training, tuning, serving and batch transform, on this machine (local/) or on SageMaker (sagemaker/), behind
one interface (backend.py); docs/architecture.md maps the files.

    backend = get_backend(settings.backend, settings=settings, workspace=workspace, engine=engine)
    job = backend.start_training(TrainingParams(train="data/train", val="data/val", epochs=5), actor="ana")
    job = backend.refresh(job.id)              # status, per-epoch metrics; a finished run registers a version
    job = follow(backend, job, on_log=print)   # or wait for the end (the CLI and the demo seed do)
    refresh_active(engine)                     # the dashboard polls every active job like this

Importing this package is cheap: no torch, no boto3, no SageMaker SDK (the SageMaker backend brings boto3 when it is
asked for, the SDK later still, on first use).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from binaudit.config import ConfigError, Settings, load_settings
from binaudit.workspace import Workspace
from jobs import store
from jobs.backend import Backend
from jobs.local.backend import LocalBackend
from jobs.params import TrainingParams, TuningParams, trial_value
from jobs.records import BACKEND_NAMES, EndpointError, JobError, JobRecord
from jobs.search_space import DEFAULT_SEARCH_SPACE, Categorical, Continuous, Integer, SearchSpaceError
from jobs.store import get_job, list_jobs

# what the dashboard, the audit core and the tests use; the constants (KINDS, STATUSES, ...) live in their modules
__all__ = [
    "DEFAULT_SEARCH_SPACE", "Backend", "Categorical", "Continuous", "EndpointError", "Integer", "JobError",
    "JobRecord", "SearchSpaceError", "TrainingParams", "TuningParams", "follow", "get_backend", "get_job",
    "list_jobs", "refresh_active", "trial_value",
]

log = logging.getLogger(__name__)

LOCAL_POLL_SECONDS = 1.0
SAGEMAKER_POLL_SECONDS = 30.0


def get_backend(name: str, *, settings: Settings, workspace: Workspace, engine: Engine) -> Backend:
    """"local" (this machine) or "sagemaker" (AWS; raises ConfigError naming what to set when it is not set up)."""
    if name == "local":
        return LocalBackend(settings=settings, workspace=workspace, engine=engine)
    if name == "sagemaker":
        from jobs.sagemaker.backend import SageMakerBackend

        return SageMakerBackend(settings=settings, workspace=workspace, engine=engine)
    raise ConfigError(f"backend {name!r} is not one of: {', '.join(BACKEND_NAMES)}")


def refresh_active(engine: Engine, *, settings: Settings | None = None, workspace: Workspace | None = None,
                   backends: dict[str, Backend] | None = None) -> list[JobRecord]:
    """Refresh every active job (either backend); returns them as they are now. A backend that cannot be set up
    (no AWS credentials, say) leaves its jobs as they were and logs why."""
    settings = settings or load_settings()
    workspace = workspace or Workspace.from_settings(settings)
    backends = {} if backends is None else backends
    refreshed = []
    for job in store.list_jobs(engine, limit=None, active_only=True):
        try:
            if job.backend not in backends:
                backends[job.backend] = get_backend(job.backend, settings=settings, workspace=workspace,
                                                    engine=engine)
            refreshed.append(backends[job.backend].refresh(job.id))
        except (ConfigError, JobError) as exc:
            log.warning("cannot refresh job %s: %s", job.id, exc)
            refreshed.append(job)
    return refreshed


def follow(backend: Backend, job: JobRecord, *, on_log: Callable[[str], None],
           on_change: Callable[[JobRecord], None] | None = None, sleep: Callable[[float], None] = time.sleep,
           poll_seconds: float | None = None) -> JobRecord:
    """Poll until `job` ends, giving its new log text to `on_log` (a local job's file, a SageMaker job's
    CloudWatch streams) and, for a SageMaker job, status or epoch-count changes to `on_change` (which gets the
    refreshed record). Returns the final record."""
    local = job.backend == "local"
    new_text = backend.log_follower(job.id)
    seen = (None, 0)
    while True:
        job = backend.refresh(job.id)
        text = new_text()
        if text:
            on_log(text)
        if not local and (job.status, len(job.metrics)) != seen and on_change is not None:
            seen = (job.status, len(job.metrics))
            on_change(job)
        if not job.is_active:
            return job
        sleep(poll_seconds or (LOCAL_POLL_SECONDS if local else SAGEMAKER_POLL_SECONDS))
