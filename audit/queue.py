"""The review queue, as SQL: the rules of `mismatch.queue_rules`, run by the database.

Rules (see `queue_rules` for the reference definition, and the test that the two agree):
a bin with a prediction by the model version enters when its mismatch probability is at least the
threshold or an analyst sent it by hand (a bin beyond a closed model's range has no probability:
only by hand); a decision takes it out unless a newer prediction came
after the decision; ranked by mismatch probability, highest first, ties by bin id; a daily budget
keeps only as many as the analysts can still check today.

Speed: "decided after this prediction" and "sent by hand" are kept on the prediction row itself
(`settled`, `queued`), so the queue is a walk down the (model version, settled, probability,
bin id) index that stops at the page size, and its size is an index range count. Bins are joined
only for the rows of the page.

Filters (`QueueFilter`: expected count, predicted count, probability band, sent by hand) narrow the queue without
changing its order; the options a page offers come from `queue_values` (every value present in the queue).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from binaudit import db
from modeling.registry import get_version

QUEUE_COLUMNS = ["bin_id", "mismatch_probability", "expected_count", "predicted_count", "decoded_count",
                 "argmax_differs", "beyond_range", "probabilities", "predicted_at", "queued", "decided_at", "decision",
                 "row_version", "image_uri", "items", "split"]
# the CSV: stable codes (audit.vocabulary explains each); `queued` is true for every row (the file is the queue)
QUEUE_CSV_COLUMNS = ["bin_id", "mismatch_probability", "expected_count", "predicted_count", "decoded_count",
                     "predicted_count_differs", "queued", "sent_by_hand", "beyond_range", "predicted_at", "decided_at",
                     "decision", "items", "split"]


@dataclass(frozen=True)
class QueueFilter:
    """Narrows the queue; the empty filter keeps every queued bin. A probability band excludes bins without a
    probability (sent by hand beyond a closed model's range)."""

    expected: tuple[int, ...] = ()
    predicted: tuple[int, ...] = ()
    prob_min: float = 0.0
    prob_max: float = 1.0
    sent_by_hand: bool | None = None  # True: only those sent by hand; False: only those over the threshold

    def conditions(self, p: sa.FromClause) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = []
        if self.expected:
            conds.append(p.c.expected_count.in_(self.expected))
        if self.predicted:
            conds.append(p.c.predicted_count.in_(self.predicted))
        if self.prob_min > 0.0 or self.prob_max < 1.0:
            conds.append(p.c.mismatch_probability.between(self.prob_min, self.prob_max))
        if self.sent_by_hand is not None:
            conds.append(p.c.queued.is_(self.sent_by_hand))
        return conds


NO_FILTER = QueueFilter()


def start_of_day(now: dt.datetime | None = None) -> dt.datetime:
    """Midnight UTC of `now`'s day: the daily budget counts decisions since then."""
    now = now or db.utcnow()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _open(version_id: int) -> sa.ColumnElement[bool]:
    p = db.predictions
    return (p.c.model_version_id == version_id) & p.c.settled.is_(False)


def ranking(dialect: str) -> list[sa.ColumnElement]:
    """Highest mismatch probability first, unknown ones last, ties by bin id: the order of the rank indexes."""
    prob = db.predictions.c.mismatch_probability.desc()
    # SQLite sorts NULLs last in DESC order already, and an explicit NULLS LAST would stop it using the index;
    # PostgreSQL's rank indexes are declared DESC NULLS LAST (migration 4), so the query must say so too
    return [prob if dialect == "sqlite" else prob.nulls_last(), db.predictions.c.bin_id]


def remaining_budget(engine: Engine, budget: int | None, now: dt.datetime | None = None) -> int | None:
    if not budget:
        return None
    with engine.connect() as conn:
        done = conn.execute(sa.select(sa.func.count()).select_from(db.reviews)
                            .where(db.reviews.c.created_at >= start_of_day(now))).scalar_one()
    return max(0, budget - done)


def queue_page(engine: Engine, version_id: int, *, threshold: float, budget: int | None = None, limit: int = 50,
               offset: int = 0, now: dt.datetime | None = None, where: QueueFilter = NO_FILTER) -> pd.DataFrame:
    """One page of the queue (narrowed by `where`), highest mismatch probability first."""
    remaining = remaining_budget(engine, budget, now)
    if remaining is not None:
        limit = max(0, min(limit, remaining - offset))
    if not limit:
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    b, p = db.bins, db.predictions
    page = (sa.select(p.c.bin_id, p.c.mismatch_probability, p.c.predicted_count, p.c.decoded_count,
                      p.c.argmax_differs, p.c.beyond_range, p.c.probabilities, p.c.created_at.label("predicted_at"),
                      p.c.queued)
            .where(_open(version_id), (p.c.mismatch_probability >= threshold) | p.c.queued.is_(True),
                   *where.conditions(p))
            .order_by(*ranking(engine.dialect.name)).limit(limit).offset(offset).subquery())
    q = (sa.select(page.c.bin_id, page.c.mismatch_probability, b.c.expected_count, page.c.predicted_count,
                   page.c.decoded_count, page.c.argmax_differs, page.c.beyond_range, page.c.probabilities,
                   page.c.predicted_at,
                   page.c.queued, b.c.decided_at, b.c.decision, b.c.row_version, b.c.image_uri, b.c["items"], b.c.split)
         .select_from(page.join(b, b.c.id == page.c.bin_id)))
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    frame = pd.DataFrame(rows, columns=QUEUE_COLUMNS)
    # the join does not keep the page's order: restore the ranking
    return frame.sort_values(["mismatch_probability", "bin_id"], ascending=[False, True],
                             na_position="last").reset_index(drop=True)


def queue_size(engine: Engine, version_id: int, *, threshold: float, budget: int | None = None,
               now: dt.datetime | None = None, where: QueueFilter = NO_FILTER) -> int:
    p = db.predictions
    over = sa.select(sa.func.count()).select_from(p).where(_open(version_id), p.c.mismatch_probability >= threshold,
                                                           *where.conditions(p))
    by_hand = sa.select(sa.func.count()).select_from(p).where(
        p.c.model_version_id == version_id, p.c.queued.is_(True), p.c.settled.is_(False),
        sa.or_(p.c.mismatch_probability < threshold, p.c.mismatch_probability.is_(None)), *where.conditions(p))
    with engine.connect() as conn:
        size = conn.execute(over).scalar_one() + conn.execute(by_hand).scalar_one()
    remaining = remaining_budget(engine, budget, now)
    return size if remaining is None else min(size, remaining)


def queue_values(engine: Engine, version_id: int, *, threshold: float) -> tuple[list[int], list[int]]:
    """The expected counts and the predicted counts present in the queue (each sorted): a filter's options."""
    p = db.predictions
    queued = sa.and_(_open(version_id), (p.c.mismatch_probability >= threshold) | p.c.queued.is_(True))
    with engine.connect() as conn:
        expected = conn.execute(sa.select(p.c.expected_count).distinct().where(queued, p.c.expected_count.is_not(None))
                                ).scalars().all()
        predicted = conn.execute(sa.select(p.c.predicted_count).distinct().where(queued)).scalars().all()
    return sorted(expected), sorted(predicted)


def queue_frame(engine: Engine, version_id: int, *, threshold: float, budget: int | None = None,
                where: QueueFilter = NO_FILTER) -> pd.DataFrame:
    """The whole queue (the CSV export) in QUEUE_CSV_COLUMNS; counts as the model's labels ("6+")."""
    classes = get_version(engine, version_id).classes
    size = queue_size(engine, version_id, threshold=threshold, budget=budget, where=where)
    page = queue_page(engine, version_id, threshold=threshold, budget=budget, limit=max(size, 1), where=where)
    page["items"] = page["items"].map(lambda items: "; ".join(f"{i.get('quantity')}x {i.get('name')} ({i.get('asin')})"
                                                              for i in (items or [])))
    for column in ("predicted_count", "decoded_count"):
        page[column] = page[column].map(classes.label)
    page = page.rename(columns={"argmax_differs": "predicted_count_differs", "queued": "sent_by_hand"})
    page["queued"] = True
    return page[QUEUE_CSV_COLUMNS]
