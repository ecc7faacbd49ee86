"""Jobs in the project database: create, read, update, finish. Works for both backends.

Every state change is one short write transaction (BEGIN IMMEDIATE on SQLite), so the dashboard, the CLI and the
local runner processes can all write the same job table. Finishing is conditional on the job still being active:
whoever ends a job first (the runner, a stop request, a refresh that found the process dead) wins, and the others
leave it alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from binaudit import db
from jobs.records import ACTIVE_STATUSES, FINAL_STATUSES, KINDS, STATUSES, JobError, JobRecord, check_choice
from modeling import registry
from modeling.registry import ModelVersion

CLAIM_KEY = "registering"  # in a job's output while one caller registers its model
REGISTRATION_CLAIM_SECONDS = 900  # after this long a claim is taken to be its holder's crash, and may be taken over
ID_PREFIXES = {"training": "train", "tuning": "tune", "deployment": "deploy", "transform": "transform"}
_COLUMNS = ("id", "kind", "backend", "status", "params", "created_at", "started_at", "ended_at", "log_path",
            "metrics", "failure_reason", "pid", "external_id", "parent_id", "output", "stop_requested", "row_version")


def new_job_id(kind: str) -> str:
    """"train-20260105-134501-3fa2": sortable, readable, and valid in SageMaker names."""
    return f"{ID_PREFIXES[check_choice('job kind', kind, KINDS)]}-{db.utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _read(conn: Connection, job_id: str, *columns: sa.Column) -> Any:
    row = conn.execute(sa.select(*columns).where(db.jobs.c.id == job_id)).first()
    if row is None:
        raise JobError(f"no job {job_id!r}")
    return row


def _write(conn: Connection, job_id: str, *conditions: Any, **values: Any) -> int:
    """UPDATE one job (bumping row_version); the number of rows changed."""
    return conn.execute(db.jobs.update().where(db.jobs.c.id == job_id, *conditions)
                        .values(**values, row_version=db.jobs.c.row_version + 1)).rowcount


def create_job(engine: Engine, *, kind: str, backend: str, params: Mapping[str, Any], actor: str,
               parent_id: str | None = None, job_id: str | None = None, status: str = "Pending",
               log_path: str | None = None, output: Mapping[str, Any] | None = None,
               details: Mapping[str, Any] | None = None) -> JobRecord:
    """A new job; `details` go into its create_job audit entry (e.g. the job a resumed run continues)."""
    job_id = job_id or new_job_id(kind)
    with db.write_tx(engine) as conn:
        conn.execute(db.jobs.insert().values(
            id=job_id, kind=check_choice("job kind", kind, KINDS), backend=backend,
            status=check_choice("job status", status, STATUSES), params=_jsonable(params),
            created_at=db.utcnow(), log_path=log_path, metrics=[], parent_id=parent_id,
            output=_jsonable(dict(output or {})), stop_requested=False, row_version=1,
        ))
        db.log_change(conn, actor=actor, action="create_job", entity="job", entity_id=job_id,
                      details={"kind": kind, "backend": backend, "parent_id": parent_id, **(details or {})})
    return get_job(engine, job_id)


def _record(row: Mapping[str, Any]) -> JobRecord:
    values = {name: row[name] for name in _COLUMNS}
    return JobRecord(**{**values, "params": values["params"] or {}, "metrics": values["metrics"] or [],
                        "output": values["output"] or {}, "stop_requested": bool(values["stop_requested"])})


def get_job(engine: Engine, job_id: str) -> JobRecord:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.jobs).where(db.jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise JobError(f"no job {job_id!r}; `python -m jobs list` lists them")
    return _record(row)


def list_jobs(engine: Engine, kind: str | None = None, limit: int | None = 50, parent_id: str | None = None, *,
              backend: str | None = None, active_only: bool = False, top_level: bool = False) -> list[JobRecord]:
    """Jobs newest first. parent_id: a tuning job's trials; top_level: leave trials out."""
    c = db.jobs.c
    query = sa.select(db.jobs).order_by(c.created_at.desc(), c.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(c.kind == check_choice("job kind", kind, KINDS))
    if parent_id is not None:
        query = query.where(c.parent_id == parent_id)
    elif top_level:
        query = query.where(c.parent_id.is_(None))
    if backend is not None:
        query = query.where(c.backend == backend)
    if active_only:
        query = query.where(c.status.in_(ACTIVE_STATUSES))
    with engine.connect() as conn:
        return [_record(row) for row in conn.execute(query).mappings()]


def update_job(engine: Engine, job_id: str, **values: Any) -> JobRecord:
    """Set columns (params/metrics/output are replaced whole; see merge_output); bumps row_version."""
    unknown = sorted(set(values) - set(_COLUMNS))
    if unknown:
        raise JobError(f"jobs has no column(s) {', '.join(unknown)}")
    if "status" in values:
        check_choice("job status", values["status"], STATUSES)
    values.update({name: _jsonable(values[name]) for name in ("params", "metrics", "output") if name in values})
    with db.write_tx(engine) as conn:
        if not _write(conn, job_id, **values):
            raise JobError(f"no job {job_id!r}")
    return get_job(engine, job_id)


def merge_output(engine: Engine, job_id: str, **items: Any) -> JobRecord:
    """Add keys to a job's output dict, read and written in one transaction."""
    with db.write_tx(engine) as conn:
        current = conn.execute(sa.select(db.jobs.c.output).where(db.jobs.c.id == job_id)).scalar_one_or_none()
        _write(conn, job_id, output=_jsonable({**(current or {}), **items}))
    return get_job(engine, job_id)


def mark_started(engine: Engine, job_id: str, *, pid: int | None = None, external_id: str | None = None) -> JobRecord:
    """Pending -> InProgress, recording the process or the AWS name. A job that already ended keeps its status (a
    fast local job can fail before the process that launched it gets here)."""
    values: dict[str, Any] = {k: v for k, v in (("pid", pid), ("external_id", external_id)) if v is not None}
    with db.write_tx(engine) as conn:
        row = _read(conn, job_id, db.jobs.c.status, db.jobs.c.started_at)
        if row.status in ACTIVE_STATUSES:
            values.update(status="InProgress", started_at=row.started_at or db.utcnow())
        if values:
            _write(conn, job_id, **values)
    return get_job(engine, job_id)


def finish_job(engine: Engine, job_id: str, status: str, *, actor: str = "system", failure_reason: str | None = None,
               metrics: list[dict[str, Any]] | None = None, output: Mapping[str, Any] | None = None
               ) -> tuple[JobRecord, bool]:
    """End an active job (Completed, Failed or Stopped); (record, False) if someone else ended it first."""
    check_choice("final status", status, FINAL_STATUSES)
    with db.write_tx(engine) as conn:
        row = _read(conn, job_id, db.jobs.c.status, db.jobs.c.output)
        applied = row.status in ACTIVE_STATUSES
        if applied:
            values: dict[str, Any] = {"status": status, "ended_at": db.utcnow(), "failure_reason": failure_reason}
            if metrics is not None:
                values["metrics"] = _jsonable(metrics)
            merged = {**(row.output or {}), **(output or {})}
            merged.pop(CLAIM_KEY, None)  # an ended job has nothing left to register: its claim goes
            values["output"] = _jsonable(merged)
            _write(conn, job_id, **values)
            db.log_change(conn, actor=actor, action="finish_job", entity="job", entity_id=job_id,
                          details={"status": status, "failure_reason": failure_reason})
    return get_job(engine, job_id), applied


def request_stop(engine: Engine, job_id: str, *, actor: str) -> JobRecord:
    """Record that someone asked to stop the job (the runner then ends it as Stopped, registering nothing)."""
    with db.write_tx(engine) as conn:
        if not _write(conn, job_id, stop_requested=True):
            raise JobError(f"no job {job_id!r}")
        db.log_change(conn, actor=actor, action="stop_job", entity="job", entity_id=job_id)
    return get_job(engine, job_id)


# ---------------------------------------------------------------- registering a completed job's model, once

def _claim_expired(claim: Mapping[str, Any], now: dt.datetime, ttl_seconds: float) -> bool:
    try:
        return (now - dt.datetime.fromisoformat(str(claim.get("since")))).total_seconds() > ttl_seconds
    except ValueError:
        return True


def _claim(engine: Engine, job_id: str, ttl_seconds: float) -> str | None:
    """A claim token, or None if the job ended or another caller holds a claim younger than ttl_seconds. The UPDATE
    is conditional on the row_version read, so exactly one caller wins, on SQLite and PostgreSQL alike."""
    token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    now = db.utcnow()
    with db.write_tx(engine) as conn:
        row = _read(conn, job_id, db.jobs.c.status, db.jobs.c.output, db.jobs.c.row_version)
        claim = (row.output or {}).get(CLAIM_KEY)
        if row.status not in ACTIVE_STATUSES or (claim and not _claim_expired(claim, now, ttl_seconds)):
            return None
        output = {**(row.output or {}), CLAIM_KEY: {"by": token, "since": now.isoformat()}}
        won = _write(conn, job_id, db.jobs.c.row_version == row.row_version, output=_jsonable(output))
    return token if won == 1 else None


def _release(engine: Engine, job_id: str, token: str) -> None:
    with db.write_tx(engine) as conn:
        output = conn.execute(sa.select(db.jobs.c.output).where(db.jobs.c.id == job_id)).scalar_one_or_none() or {}
        if (output.get(CLAIM_KEY) or {}).get("by") == token:
            _write(conn, job_id, output={k: v for k, v in output.items() if k != CLAIM_KEY})


@contextlib.contextmanager
def registration_claim(engine: Engine, job_id: str, *, ttl_seconds: float = REGISTRATION_CLAIM_SECONDS
                       ) -> Iterator[bool]:
    """`with registration_claim(engine, job.id) as mine:` register only if mine. Two refreshers (the dashboard and
    a CLI watching) can see the same job complete, and registering is not undoable: it goes to whoever claims first.
    finish_job clears the claim, an exception gives it back; a crashed caller's claim expires after ttl_seconds."""
    token = _claim(engine, job_id, ttl_seconds)
    try:
        yield token is not None
    except BaseException:
        if token is not None:
            _release(engine, job_id, token)
        raise


def finish_with_model(engine: Engine, job_id: str, register: Callable[[], ModelVersion], *, failure: str,
                      errors: tuple[type[Exception], ...] = (registry.RegistryError,),
                      metrics: list[dict[str, Any]] | None = None, output: Mapping[str, Any] | None = None,
                      before_completed: Callable[[ModelVersion], None] | None = None) -> JobRecord:
    """End a job whose run completed with the model version `register()` makes, exactly once (see
    registration_claim); an error of `errors` fails it with "<failure>: <error>". `before_completed(version)` runs
    before the job reads Completed."""
    with registration_claim(engine, job_id) as mine:
        if not mine:  # another caller (the runner, a refresher) is registering it
            return get_job(engine, job_id)
        try:
            # a version already there was registered by a caller that crashed before finishing the job
            version = registry.version_for_job(engine, job_id) or register()
        except errors as exc:
            return finish_job(engine, job_id, "Failed", metrics=metrics, output=output,
                              failure_reason=f"{failure}: {exc}")[0]
        if before_completed is not None:
            before_completed(version)
        summary = {"model_version_id": version.id, "model_version": version.name, "model_dir": version.artifact_uri,
                   "val_accuracy": version.val_accuracy, "val_rmse": version.val_rmse}
        return finish_job(engine, job_id, "Completed", metrics=metrics, output={**(output or {}), **summary})[0]
