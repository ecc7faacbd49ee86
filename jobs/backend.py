"""The one interface both backends implement (jobs.local.backend.LocalBackend, jobs.sagemaker.backend.SageMakerBackend);
`jobs.get_backend` picks one."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from binaudit.config import Settings
from binaudit.workspace import Workspace
from jobs import store
from jobs.jobdirs import tail_lines
from jobs.params import TrainingParams, TuningParams
from jobs.records import JobError, JobRecord


class Backend(abc.ABC):
    """Where jobs run. Every method returns fresh JobRecords read back from the database."""

    name: str

    def __init__(self, *, settings: Settings, workspace: Workspace, engine: Engine) -> None:
        self.settings = settings
        self.workspace = workspace
        self.engine = engine

    # ---- training and tuning
    @abc.abstractmethod
    def start_training(self, params: TrainingParams, *, actor: str) -> JobRecord: ...

    @abc.abstractmethod
    def start_tuning(self, params: TuningParams, *, actor: str) -> JobRecord: ...

    # ---- endpoints
    @abc.abstractmethod
    def deploy(self, model_version_id: int | str, *, actor: str, wait: bool = False) -> JobRecord: ...

    @abc.abstractmethod
    def invoke(self, job_or_endpoint: str, body: bytes, content_type: str,
               accept: str = "application/json") -> dict[str, Any]: ...

    @abc.abstractmethod
    def delete_endpoint(self, job_or_endpoint: str, *, actor: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list_endpoints(self) -> list[dict[str, Any]]: ...

    # ---- batch transform
    @abc.abstractmethod
    def start_transform(self, model_version_id: int | str, input: str, output: str | None, *, actor: str
                        ) -> JobRecord: ...

    # ---- any job
    def refresh(self, job_id: str) -> JobRecord:
        """The job as it is now (status, metrics); a completed training job registers its model version here."""
        job = self._own_job(job_id)
        return self._refresh(job) if job.is_active else job

    @abc.abstractmethod
    def _refresh(self, job: JobRecord) -> JobRecord:
        """Poll an active job and record what changed."""

    def stop(self, job_id: str, *, actor: str) -> JobRecord:
        """Stop a job: a finished one is returned as it is, an endpoint is deleted, anything else is asked to stop."""
        job = self._own_job(job_id)
        if not job.is_active:
            return job
        if job.kind == "deployment":
            return self.delete_endpoint(job.id, actor=actor)
        store.request_stop(self.engine, job.id, actor=actor)
        return self._stop_running(job, actor=actor)

    def resume_checkpoint(self, job: JobRecord) -> dict[str, Any] | None:
        """{"epoch": ..., "epochs": ...} of the checkpoint a Failed or Stopped job could resume from; None when it
        cannot be resumed (the local backend)."""
        return None

    def resume_training(self, job_id: str, *, actor: str) -> JobRecord:
        """Continue a Failed or Stopped training job from its checkpoint as a new job (the local backend)."""
        raise JobError(f"only local training jobs can be resumed; job {job_id} ran on {self.name} (SageMaker "
                       f"spot training resumes from its checkpoints by itself)")

    @abc.abstractmethod
    def _stop_running(self, job: JobRecord, *, actor: str) -> JobRecord:
        """Stop a training, tuning or transform job whose stop request is already recorded."""

    def log_tail(self, job_id: str, lines: int = 50) -> str:
        return tail_lines(self._own_job(job_id).log_path, lines)

    def log_follower(self, job_id: str) -> Callable[[], str]:
        """A function that returns the job's log text written since its last call (here: the job's log file)."""
        path, offset = self._own_job(job_id).log_path, 0

        def new_text() -> str:
            nonlocal offset
            if not path:
                return ""
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    fh.seek(offset)
                    text = fh.read()
                    offset = fh.tell()
            except OSError:  # not written yet
                return ""
            return text

        return new_text

    def _create(self, kind: str, params: dict[str, Any], actor: str, *, job_id: str | None = None,
                details: dict[str, Any] | None = None, **output: Any) -> JobRecord:
        job_id = job_id or store.new_job_id(kind)
        return store.create_job(self.engine, kind=kind, backend=self.name, params=params, actor=actor, job_id=job_id,
                                log_path=self._log_path(kind, job_id), output={"requested_by": actor, **output},
                                details=details)

    def _log_path(self, kind: str, job_id: str) -> str | None:
        """The job's log file on this machine (None: its log is elsewhere)."""
        return None

    def _own_job(self, job_id: str) -> JobRecord:
        job = store.get_job(self.engine, job_id)
        if job.backend != self.name:
            raise JobError(f"job {job_id} ran on the {job.backend} backend, not {self.name}")
        return job
