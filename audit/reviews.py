"""Analysts' decisions on bins, with optimistic concurrency.

A decision is made against the bin's `row_version` the analyst saw. The update succeeds only if
nobody changed the bin since; otherwise `ReviewConflict` says who decided what and when, and
nothing is overwritten. Every decision is kept in `reviews` (history) and in the audit log;
the bin row carries the latest decision so queue queries need no join over history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from binaudit import db

CONFIRM, DISMISS, UNSURE = "confirm_mismatch", "dismiss", "unsure"
DECISIONS = (CONFIRM, DISMISS, UNSURE)
MAX_REVIEWER = 200  # the reviewer columns' length (enforced by PostgreSQL)
DECISION_LABELS = {CONFIRM: "Confirm mismatch", DISMISS: "Dismiss (record is right)", UNSURE: "Unsure"}


class ReviewError(ValueError):
    """A decision that cannot be stored as given (unknown bin, missing recount, ...)."""


class ReviewConflict(RuntimeError):
    """Someone changed the bin after the analyst loaded it; nothing was written."""

    def __init__(self, bin_id: str, decision: str | None, by: str | None, at: dt.datetime | None, version: int):
        self.bin_id, self.decision, self.by, self.at, self.version = bin_id, decision, by, at, version
        who = f"{by} decided '{decision}' at {at:%Y-%m-%d %H:%M:%S} UTC" if decision and at else "it was changed"
        super().__init__(f"bin {bin_id} was decided meanwhile: {who}. Reload it to see the current state.")


@dataclass(frozen=True)
class Decision:
    bin_id: str
    decision: str
    reviewer: str
    expected_version: int  # the bin's row_version when the analyst loaded it
    recounted_count: int | None = None
    note: str = ""
    model_version_id: int | None = None


def validate(d: Decision, expected_count: int | None) -> None:
    if d.decision not in DECISIONS:
        raise ReviewError(f"unknown decision {d.decision!r}; one of: {', '.join(DECISIONS)}")
    if not d.reviewer.strip():
        raise ReviewError("a decision needs the reviewer's name")
    if len(d.reviewer) > MAX_REVIEWER:
        raise ReviewError(f"a reviewer's name has at most {MAX_REVIEWER} characters")
    if d.decision == CONFIRM:
        if d.recounted_count is None or d.recounted_count < 0:
            raise ReviewError("confirming a mismatch needs the recounted quantity (0 or more)")
        if expected_count is not None and d.recounted_count == expected_count:
            raise ReviewError(f"the recount equals the expected count ({expected_count}): dismiss instead")
    elif d.recounted_count is not None and d.recounted_count < 0:
        raise ReviewError("a recounted quantity must not be negative")


def decide(engine: Engine, d: Decision) -> int:
    """Store a decision; returns the bin's new row_version. Raises ReviewConflict or ReviewError."""
    b = db.bins
    with db.write_tx(engine) as conn:
        current = conn.execute(sa.select(b.c.expected_count, b.c.row_version, b.c.decision, b.c.decided_by,
                                         b.c.decided_at).where(b.c.id == d.bin_id)).first()
        if current is None:
            raise ReviewError(f"no bin {d.bin_id!r}")
        validate(d, current.expected_count)
        now = db.utcnow()
        updated = conn.execute(
            b.update().where(b.c.id == d.bin_id, b.c.row_version == d.expected_version).values(
                decision=d.decision, recounted_count=d.recounted_count, decided_by=d.reviewer, decided_at=now,
                queued=False, row_version=b.c.row_version + 1, updated_at=now)
        )
        if updated.rowcount != 1:
            raise ReviewConflict(d.bin_id, current.decision, current.decided_by, current.decided_at,
                                 current.row_version)
        settle_predictions(conn, d.bin_id, now)
        conn.execute(db.reviews.insert().values(
            bin_id=d.bin_id, decision=d.decision, recounted_count=d.recounted_count, reviewer=d.reviewer,
            note=d.note, model_version_id=d.model_version_id, created_at=now))
        db.log_change(conn, actor=d.reviewer, action="decide", entity="bin", entity_id=d.bin_id, details={
            "decision": d.decision, "recounted_count": d.recounted_count, "note": d.note,
            "previous": current.decision, "model_version_id": d.model_version_id})
        return d.expected_version + 1


def settle_predictions(conn: sa.Connection, bin_id: str, decided_at) -> None:
    """A decision settles every prediction made up to it (a later one, by a newer model, stays open)."""
    p = db.predictions
    conn.execute(p.update().where(p.c.bin_id == bin_id, p.c.created_at <= decided_at).values(settled=True, queued=False))


def send_to_queue(engine: Engine, bin_id: str, *, actor: str, expected_version: int | None = None) -> int:
    """Put a bin in the review queue by hand (from the upload or browse pages); returns the new row_version."""
    b = db.bins
    with db.write_tx(engine) as conn:
        cond = b.c.id == bin_id
        if expected_version is not None:
            cond &= b.c.row_version == expected_version
        updated = conn.execute(b.update().where(cond).values(
            queued=True, decision=None, decided_at=None, decided_by=None, recounted_count=None,
            row_version=b.c.row_version + 1, updated_at=db.utcnow()))
        if updated.rowcount != 1:
            current = conn.execute(sa.select(b.c.decision, b.c.decided_by, b.c.decided_at, b.c.row_version)
                                   .where(b.c.id == bin_id)).first()
            if current is None:
                raise ReviewError(f"no bin {bin_id!r}")
            raise ReviewConflict(bin_id, current.decision, current.decided_by, current.decided_at, current.row_version)
        p = db.predictions
        conn.execute(p.update().where(p.c.bin_id == bin_id).values(queued=True, settled=False))
        db.log_change(conn, actor=actor, action="send_to_queue", entity="bin", entity_id=bin_id)
        return conn.execute(sa.select(b.c.row_version).where(b.c.id == bin_id)).scalar_one()


def history(engine: Engine, bin_id: str) -> pd.DataFrame:
    """Every decision on a bin, newest first."""
    r = db.reviews
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.c.created_at, r.c.reviewer, r.c.decision, r.c.recounted_count, r.c.note,
                                      r.c.model_version_id).where(r.c.bin_id == bin_id)
                            .order_by(r.c.created_at.desc(), r.c.id.desc())).mappings().all()
    return pd.DataFrame(rows, columns=["created_at", "reviewer", "decision", "recounted_count", "note",
                                       "model_version_id"])


def decisions_frame(engine: Engine, *, since: dt.datetime | None = None) -> pd.DataFrame:
    """All decisions (the export), oldest first, with the bin's expected count beside the recount."""
    r, b = db.reviews, db.bins
    q = (sa.select(r.c.id.label("review_id"), r.c.bin_id, b.c.expected_count, r.c.decision, r.c.recounted_count,
                   r.c.reviewer, r.c.note, r.c.model_version_id, r.c.created_at)
         .join(b, b.c.id == r.c.bin_id).order_by(r.c.created_at, r.c.id))
    if since is not None:
        q = q.where(r.c.created_at >= since)
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(q).mappings().all(),
                            columns=["review_id", "bin_id", "expected_count", "decision", "recounted_count",
                                     "reviewer", "note", "model_version_id", "created_at"])


def decided_since(engine: Engine, since: dt.datetime) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(db.reviews)
                            .where(db.reviews.c.created_at >= since)).scalar_one()
