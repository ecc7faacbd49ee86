"""What a job is: kinds, statuses, the `JobRecord` read from the `jobs` table, and the jobs layer's errors (cheap to
import: the dashboard lists jobs with this)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

KINDS = ("training", "tuning", "deployment", "transform")
STATUSES = ("Pending", "InProgress", "Completed", "Failed", "Stopped")
ACTIVE_STATUSES = ("Pending", "InProgress")
FINAL_STATUSES = ("Completed", "Failed", "Stopped")
BACKEND_NAMES = ("local", "sagemaker")


class JobError(RuntimeError):
    """A job that does not exist, a request that does not fit the job's state, or a job the backend cannot run."""


class EndpointError(JobError):
    """An endpoint answered with an error (a request it cannot score); `status` is the HTTP status (4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_choice(what: str, value: str, allowed: tuple[str, ...] | dict[str, str]) -> str:
    """`value` when it is one of `allowed`, else a JobError naming them ("Invalid job kind ...")."""
    if value not in allowed:
        raise JobError(f"Invalid {what} {value!r}. Only {', '.join(allowed)} are supported.")
    return value


@dataclass(frozen=True)
class TrainingProgress:
    epoch: int  # the last finished epoch (0 before the first ends)
    epochs: int
    elapsed_s: float
    left_s: float | None  # None until an epoch has finished, and once the job has ended

    def describe(self) -> str:
        left = f" · about {_duration(self.left_s)} left" if self.left_s is not None else ""
        return f"epoch {self.epoch} of {self.epochs} · {_duration(self.elapsed_s)} elapsed{left}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class JobRecord:
    """One row of the `jobs` table; `metrics` is the list of per-epoch dicts parsed from the job's log."""

    id: str
    kind: str
    backend: str
    status: str
    params: dict[str, Any]
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    log_path: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    failure_reason: str | None = None
    pid: int | None = None
    external_id: str | None = None
    parent_id: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    stop_requested: bool = False
    row_version: int = 1

    @property
    def is_active(self) -> bool:
        """Pending or InProgress: a running job, or an endpoint that is up (and billing, on SageMaker)."""
        return self.status in ACTIVE_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def last_epoch(self) -> dict[str, Any]:
        """The newest per-epoch metrics ({} before the first epoch ends)."""
        return self.metrics[-1] if self.metrics else {}

    @property
    def model_version_id(self) -> int | None:
        value = self.output.get("model_version_id")
        return int(value) if value is not None else None

    @property
    def endpoint(self) -> str | None:
        """A deployment's URL (local) or endpoint name (SageMaker)."""
        return self.output.get("endpoint_url") or self.output.get("endpoint_name")

    def progress(self, now: dt.datetime | None = None) -> TrainingProgress | None:
        """A training job's epoch k of n, elapsed and estimated time left (None for other kinds, or before it
        started). The estimate: the mean time of this job's epochs so far times the epochs left; a resumed job counts
        only the epochs it ran itself."""
        epochs = (self.params.get("training") or {}).get("epochs")
        if self.kind != "training" or self.started_at is None or not epochs:
            return None
        elapsed = self._elapsed(now)
        epoch = int(self.last_epoch.get("epoch") or 0)
        ran = epoch - int(self.output.get("resumed_after_epoch") or 0)
        left = elapsed / ran * (int(epochs) - epoch) if ran > 0 and self.is_active else None
        return TrainingProgress(epoch, int(epochs), elapsed, left)

    @property
    def duration_seconds(self) -> float | None:
        return self._elapsed() if self.started_at is not None else None

    def _elapsed(self, now: dt.datetime | None = None) -> float:
        end = self.ended_at or now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return max(0.0, (end - self.started_at).total_seconds())
