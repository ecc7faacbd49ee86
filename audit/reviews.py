"""Analysts' decisions on bins, with optimistic concurrency.

A decision is made against the bin's `row_version` the analyst saw. The update succeeds only if
nobody changed the bin since; otherwise `ReviewConflict` says who decided what and when, and
nothing is overwritten. Every decision is kept in `reviews` (history) and in the audit log;
the bin row carries the latest decision so queue queries need no join over history.

`undo`: a reviewer takes back her own latest decision on a bin within UNDO_WINDOW, while nobody changed the bin
since. The review row stays in the history; the audit log records the undo (entity "review", the review's id), and
history and exports mark the review as undone. The bin gets back the decision before it (or none) and its queue state.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.vocabulary import CONFIRM, DECISIONS, DISMISS, UNSURE, decision_label  # noqa: F401 (the codes' home)
from binaudit import db
from data_tools.metadata import MAX_QUANTITY

MAX_REVIEWER = 200  # the reviewer columns' length (enforced by PostgreSQL)


# A recount is a number of items in one bin: ABID bins hold a few dozen, and the metadata parser refuses records
# over this many too (data_tools.metadata.MAX_QUANTITY), so a larger "recount" is a typo or an attack.
MAX_RECOUNT = MAX_QUANTITY
MAX_NOTE_CHARS = 5000
UNDO_WINDOW = dt.timedelta(minutes=5)


class ReviewError(ValueError):
    """A decision that cannot be stored as given (unknown bin, missing recount, ...)."""


class ReviewConflict(RuntimeError):
    """Someone changed the bin after the analyst loaded it; nothing was written."""

    def __init__(self, bin_id: str, decision: str | None, by: str | None, at: dt.datetime | None, version: int,
                 message: str | None = None):
        self.bin_id, self.decision, self.by, self.at, self.version = bin_id, decision, by, at, version
        if message is None and decision and at:
            message = (f"bin {bin_id} was decided meanwhile: {by} decided '{decision_label(decision)}' at "
                       f"{at:%Y-%m-%d %H:%M:%S} UTC. Reload it to see the current state.")
        elif message is None:
            message = (f"bin {bin_id} changed since it was loaded (sent to the queue or re-imported; row version now "
                       f"{version}). Reload it to see the current state.")
        super().__init__(message)


@dataclass(frozen=True)
class Decision:
    bin_id: str
    decision: str
    reviewer: str
    expected_version: int  # the bin's row_version when the analyst loaded it
    recounted_count: int | None = None
    note: str = ""
    model_version_id: int | None = None


@dataclass(frozen=True)
class BinState:
    """A bin's current decision and row version: what a reviewer sees before deciding."""

    bin_id: str
    row_version: int
    expected_count: int | None
    decision: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    recounted_count: int | None

    def describe(self) -> str:
        if self.decision is None:
            return f"bin {self.bin_id}: no decision yet (row version {self.row_version})"
        recount = f", recount {self.recounted_count}" if self.recounted_count is not None else ""
        at = f" at {self.decided_at:%Y-%m-%d %H:%M:%S} UTC" if self.decided_at else ""
        return (f"bin {self.bin_id}: '{self.decision}'{recount} by {self.decided_by}{at} "
                f"(row version {self.row_version})")


class AlreadyDecided(ReviewConflict):
    """A decision without a row version would replace one the reviewer has not seen; nothing was written."""

    def __init__(self, state: BinState):
        self.state = state
        super().__init__(state.bin_id, state.decision, state.decided_by, state.decided_at, state.row_version,
                         f"{state.describe()}. Not replaced: pass --replace to replace it, or --expect-version "
                         f"{state.row_version} to replace exactly this decision.")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _known_bin_id(bin_id: object) -> str:
    """`bin_id`, or ReviewError for one no bin can have (PostgreSQL refuses NUL even in a query)."""
    if not isinstance(bin_id, str) or "\x00" in bin_id:
        raise ReviewError(f"no bin {str(bin_id)[:120]!r}")
    return bin_id


def validate(d: Decision, expected_count: int | None) -> None:
    """Raise ReviewError naming what is wrong with `d`; every field is checked, whatever its type."""
    if d.decision not in DECISIONS:
        raise ReviewError(f"unknown decision {str(d.decision)[:40]!r}; one of: {', '.join(DECISIONS)}")
    if not isinstance(d.reviewer, str) or not d.reviewer.strip():
        raise ReviewError("a decision needs the reviewer's name")
    if len(d.reviewer) > MAX_REVIEWER or not d.reviewer.isprintable():
        raise ReviewError(f"a reviewer's name is one line of at most {MAX_REVIEWER} characters")
    if not isinstance(d.note, str) or len(d.note) > MAX_NOTE_CHARS or "\x00" in d.note:
        raise ReviewError(f"a note is text of at most {MAX_NOTE_CHARS} characters (no NUL)")
    if not _is_int(d.expected_version):
        raise ReviewError("a decision needs the row version of the bin the reviewer saw")
    if d.model_version_id is not None and not _is_int(d.model_version_id):
        raise ReviewError("the model version must be an id (an integer)")
    if d.recounted_count is not None and not (_is_int(d.recounted_count) and 0 <= d.recounted_count <= MAX_RECOUNT):
        raise ReviewError(f"a recounted quantity is a whole number from 0 to {MAX_RECOUNT:,}, "
                          f"got {str(d.recounted_count)[:40]}")
    if d.decision == CONFIRM:
        if d.recounted_count is None:
            raise ReviewError("confirming a mismatch needs the recounted quantity (0 or more)")
        if expected_count is not None and d.recounted_count == expected_count:
            raise ReviewError(f"the recount equals the expected count ({expected_count}): dismiss instead")


def bin_state(engine: Engine, bin_id: str) -> BinState:
    """The bin's current decision and row version; ReviewError when there is no such bin."""
    b = db.bins
    bin_id = _known_bin_id(bin_id)
    with engine.connect() as conn:
        row = conn.execute(sa.select(b.c.row_version, b.c.expected_count, b.c.decision, b.c.decided_by,
                                     b.c.decided_at, b.c.recounted_count).where(b.c.id == bin_id)).first()
    if row is None:
        raise ReviewError(f"no bin {bin_id!r}")
    return BinState(bin_id, row.row_version, row.expected_count, row.decision, row.decided_by, row.decided_at,
                    row.recounted_count)


def version_to_decide(state: BinState, *, expect_version: int | None = None, replace: bool = False) -> int:
    """The row version a decision from the shell is made against (the shell has no page that showed the bin).

    `expect_version`: the one the reviewer names (a conflict if the bin changed since). Otherwise the current one,
    but only while the bin has no decision: replacing a decision the reviewer has not seen needs `replace`.
    A concurrent decision still loses the race in `decide` (its version check is in the same write).
    """
    if expect_version is not None:
        return expect_version
    if state.decision is not None and not replace:
        raise AlreadyDecided(state)
    return state.row_version


def decide(engine: Engine, d: Decision) -> int:
    """Store a decision made against `d.expected_version`; returns the bin's new row_version.

    Raises ReviewError (bad input, unknown bin) or ReviewConflict (the bin changed since that version: nothing is
    written, and the exception says who decided what and when).
    """
    b = db.bins
    _known_bin_id(d.bin_id)
    with db.write_tx(engine) as conn:
        current = conn.execute(sa.select(b.c.expected_count, b.c.row_version, b.c.decision, b.c.decided_by,
                                         b.c.decided_at, b.c.queued).where(b.c.id == d.bin_id)).first()
        if current is None:
            raise ReviewError(f"no bin {str(d.bin_id)[:120]!r}")
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
        review_id = conn.execute(db.reviews.insert().values(
            bin_id=d.bin_id, decision=d.decision, recounted_count=d.recounted_count, reviewer=d.reviewer,
            note=d.note, model_version_id=d.model_version_id, created_at=now)).inserted_primary_key[0]
        db.log_change(conn, actor=d.reviewer, action="decide", entity="bin", entity_id=d.bin_id, details={
            "decision": d.decision, "recounted_count": d.recounted_count, "note": d.note,
            "previous": current.decision, "model_version_id": d.model_version_id, "review_id": review_id,
            "previously_sent_by_hand": bool(current.queued)})
        return d.expected_version + 1


def _undone_ids(conn: sa.Connection, review_ids: list[int] | None = None) -> dict[int, dt.datetime]:
    """Review id -> when it was undone (from the audit log); only among `review_ids` when given (one bin's reviews:
    a walk of the audit log's (entity, entity_id) index instead of every undo ever made)."""
    log = db.audit_log
    q = sa.select(log.c.entity_id, log.c.at).where(log.c.entity == "review", log.c.action == "undo_decision")
    if review_ids is not None:
        q = q.where(log.c.entity_id.in_([str(i) for i in review_ids]))
    return {int(entity_id): at for entity_id, at in conn.execute(q).all()}


def _standing_reviews(conn: sa.Connection, bin_id: str) -> list:
    """The bin's reviews that were not undone, newest first."""
    r = db.reviews
    rows = conn.execute(sa.select(r).where(r.c.bin_id == bin_id).order_by(r.c.created_at.desc(), r.c.id.desc())).all()
    undone = _undone_ids(conn, [row.id for row in rows])
    return [row for row in rows if row.id not in undone]


def _undoable(conn: sa.Connection, bin_id: str, reviewer: str, expected_version: int, now: dt.datetime,
              window: dt.timedelta):
    """(bin row, the review to undo, the standing review before it), or ReviewError/ReviewConflict saying why not."""
    b = db.bins
    row = conn.execute(sa.select(b).where(b.c.id == bin_id)).first()
    if row is None:
        raise ReviewError(f"no bin {bin_id[:120]!r}")
    if row.row_version != expected_version:
        raise ReviewConflict(bin_id, row.decision, row.decided_by, row.decided_at, row.row_version,
                             f"bin {bin_id} changed after your decision (row version now {row.row_version}): "
                             f"{row.decided_by or 'someone'} acted on it, so your decision is no longer the latest")
    standing = _standing_reviews(conn, bin_id)
    if not standing or standing[0].reviewer != reviewer:
        raise ReviewError(f"bin {bin_id}: the latest decision is not yours to undo")
    if now - standing[0].created_at > window:
        raise ReviewError(f"bin {bin_id}: decisions can be undone for {int(window.total_seconds() // 60)} minutes; "
                          "this one is older")
    return row, standing[0], (standing[1] if len(standing) > 1 else None)


def undo_window_left(engine: Engine, bin_id: str, reviewer: str, expected_version: int,
                     window: dt.timedelta = UNDO_WINDOW) -> bool:
    """Whether `reviewer` may still undo her decision on the bin (nobody changed it since, within the window)."""
    try:
        with engine.connect() as conn:
            _undoable(conn, _known_bin_id(bin_id), reviewer, expected_version, db.utcnow(), window)
    except (ReviewError, ReviewConflict):
        return False
    return True


def undo(engine: Engine, bin_id: str, *, reviewer: str, expected_version: int,
         window: dt.timedelta = UNDO_WINDOW) -> int:
    """Take back `reviewer`'s latest decision on the bin (made at `expected_version` - 1); returns the new row
    version. The bin gets the decision before it back (or none) and, when it had none, its queue state."""
    b, p = db.bins, db.predictions
    _known_bin_id(bin_id)
    with db.write_tx(engine) as conn:
        now = db.utcnow()
        row, review, before = _undoable(conn, bin_id, reviewer, expected_version, now, window)
        log = db.audit_log
        decided = conn.execute(sa.select(log.c.details).where(log.c.entity == "bin", log.c.entity_id == bin_id,
                                                              log.c.action == "decide")
                               .order_by(log.c.id.desc()).limit(1)).scalar() or {}
        queued = bool(decided.get("previously_sent_by_hand")) if before is None else False
        conn.execute(b.update().where(b.c.id == bin_id, b.c.row_version == expected_version).values(
            decision=before.decision if before else None,
            recounted_count=before.recounted_count if before else None,
            decided_by=before.reviewer if before else None, decided_at=before.created_at if before else None,
            queued=queued, row_version=b.c.row_version + 1, updated_at=now))
        # predictions settled by the undone decision open again; those the decision before it settled stay settled
        settled = (p.c.created_at <= before.created_at) if before else sa.false()
        conn.execute(p.update().where(p.c.bin_id == bin_id).values(
            settled=sa.case((settled, True), else_=False), queued=queued))
        db.log_change(conn, actor=reviewer, action="undo_decision", entity="review", entity_id=review.id, details={
            "bin_id": bin_id, "decision": review.decision, "recounted_count": review.recounted_count,
            "restored": before.decision if before else None})
        return expected_version + 1


def settle_predictions(conn: sa.Connection, bin_id: str, decided_at) -> None:
    """A decision settles every prediction made up to it (a later one, by a newer model, stays open)."""
    p = db.predictions
    conn.execute(p.update().where(p.c.bin_id == bin_id, p.c.created_at <= decided_at).values(settled=True, queued=False))


def send_to_queue(engine: Engine, bin_id: str, *, actor: str, expected_version: int) -> int:
    """Put a bin in the review queue by hand (from the upload or browse pages), against the row version the analyst
    saw (it clears the bin's decision, so it must not clear one made since); returns the new row_version."""
    b = db.bins
    _known_bin_id(bin_id)
    with db.write_tx(engine) as conn:
        updated = conn.execute(b.update().where(b.c.id == bin_id, b.c.row_version == expected_version).values(
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
    """Every decision on a bin, newest first; `undone_at` says when one was taken back (NaT: it stands)."""
    r = db.reviews
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.c.id, r.c.created_at, r.c.reviewer, r.c.decision, r.c.recounted_count,
                                      r.c.note, r.c.model_version_id).where(r.c.bin_id == bin_id)
                            .order_by(r.c.created_at.desc(), r.c.id.desc())).mappings().all()
        undone = _undone_ids(conn, [row["id"] for row in rows])
    frame = pd.DataFrame(rows, columns=["id", "created_at", "reviewer", "decision", "recounted_count", "note",
                                        "model_version_id"])
    frame["undone_at"] = pd.to_datetime(frame["id"].map(undone))
    return frame.drop(columns=["id"]).astype({"recounted_count": "Int64", "model_version_id": "Int64"})


# the decisions export's columns (decisions_frame), named without a query for the CSV legend
DECISION_CSV_COLUMNS = ["review_id", "bin_id", "expected_count", "decision", "recounted_count", "reviewer", "note",
                        "model_version_id", "created_at", "undone_at"]


def decisions_frame(engine: Engine, *, since: dt.datetime | None = None) -> pd.DataFrame:
    """All decisions (the export, in DECISION_CSV_COLUMNS), oldest first, with the bin's expected count beside the
    recount."""
    r, b = db.reviews, db.bins
    q = (sa.select(r.c.id.label("review_id"), r.c.bin_id, b.c.expected_count, r.c.decision, r.c.recounted_count,
                   r.c.reviewer, r.c.note, r.c.model_version_id, r.c.created_at)
         .join(b, b.c.id == r.c.bin_id).order_by(r.c.created_at, r.c.id))
    if since is not None:
        q = q.where(r.c.created_at >= since)
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(q).mappings().all(), columns=DECISION_CSV_COLUMNS[:-1])
        undone = _undone_ids(conn)
    frame["undone_at"] = pd.to_datetime(frame["review_id"].map(undone))
    return frame


def decided_since(engine: Engine, since: dt.datetime) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(db.reviews)
                            .where(db.reviews.c.created_at >= since)).scalar_one()
