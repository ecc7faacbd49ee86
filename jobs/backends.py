"""Follow a job until it ends: poll its backend and hand on what is new (the CLI and the demo seed use this)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from jobs.records import JobRecord

LOCAL_POLL_SECONDS = 1.0
SAGEMAKER_POLL_SECONDS = 30.0


def new_log_text(path: str | None, offset: int) -> tuple[str, int]:
    """The log's text after `offset`, and the new offset (nothing when the log is not there yet)."""
    if not path:
        return "", offset
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            fh.seek(offset)
            text = fh.read()
            return text, fh.tell()
    except OSError:
        return "", offset


def follow(backend: Any, job: JobRecord, *, on_log: Callable[[str], None],
           on_change: Callable[[JobRecord], None] | None = None,
           sleep: Callable[[float], None] = time.sleep) -> JobRecord:
    """Poll until `job` ends. A local job's new log text goes to `on_log`; a SageMaker job's status or
    epoch-count changes go to `on_change` (which gets the refreshed record). Returns the final record."""
    local = job.backend == "local"
    offset, seen = 0, (None, 0)
    while True:
        job = backend.refresh(job.id)
        if local:
            text, offset = new_log_text(job.log_path, offset)
            if text:
                on_log(text)
        elif (job.status, len(job.metrics)) != seen and on_change is not None:
            seen = (job.status, len(job.metrics))
            on_change(job)
        if not job.is_active:
            return job
        sleep(LOCAL_POLL_SECONDS if local else SAGEMAKER_POLL_SECONDS)
