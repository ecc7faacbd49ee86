"""The review queue, as SQL: the rules of `mismatch.queue_rules`, run by the database.

Rules (see `queue_rules` for the reference definition, and the test that the two agree):
a bin with a prediction by the model version enters when its mismatch probability is at least the
threshold or an analyst sent it by hand; a decision takes it out unless a newer prediction came
after the decision; ranked by mismatch probability, highest first; a daily budget keeps only as
many as the analysts can still check today.

The ranking walks the (model_version_id, mismatch_probability) index from the top and stops at
the page size, so a page costs the same with 500 or 500,000 bins.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from binaudit import db

QUEUE_COLUMNS = ["bin_id", "mismatch_probability", "expected_count", "predicted_count", "decoded_count",
                 "argmax_differs", "probabilities", "predicted_at", "queued", "decided_at", "decision",
                 "row_version", "image_uri", "items", "split"]


def start_of_day(now: dt.datetime | None = None) -> dt.datetime:
    """Midnight UTC of `now`'s day: the daily budget counts decisions since then."""
    now = now or db.utcnow()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _queue_query(version_id: int, threshold: float) -> sa.Select:
    b, p = db.bins, db.predictions
    enters = (p.c.mismatch_probability >= threshold) | b.c.queued.is_(True)
    open_ = b.c.decided_at.is_(None) | (b.c.decided_at < p.c.created_at)
    return (
        sa.select(b.c.id.label("bin_id"), p.c.mismatch_probability, b.c.expected_count, p.c.predicted_count,
                  p.c.decoded_count, p.c.argmax_differs, p.c.probabilities, p.c.created_at.label("predicted_at"),
                  b.c.queued, b.c.decided_at, b.c.decision, b.c.row_version, b.c.image_uri, b.c["items"], b.c.split)
        .select_from(p.join(b, b.c.id == p.c.bin_id))
        .where(p.c.model_version_id == version_id, enters, open_)
    )


def remaining_budget(engine: Engine, budget: int | None, now: dt.datetime | None = None) -> int | None:
    if not budget:
        return None
    with engine.connect() as conn:
        done = conn.execute(sa.select(sa.func.count()).select_from(db.reviews)
                            .where(db.reviews.c.created_at >= start_of_day(now))).scalar_one()
    return max(0, budget - done)


def queue_page(engine: Engine, version_id: int, *, threshold: float, budget: int | None = None, limit: int = 50,
               offset: int = 0, now: dt.datetime | None = None) -> pd.DataFrame:
    """One page of the queue, highest mismatch probability first."""
    remaining = remaining_budget(engine, budget, now)
    if remaining is not None:
        limit = max(0, min(limit, remaining - offset))
    q = (_queue_query(version_id, threshold)
         .order_by(db.predictions.c.mismatch_probability.desc().nulls_last(), db.bins.c.id)
         .limit(limit).offset(offset))
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all() if limit else []
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def queue_size(engine: Engine, version_id: int, *, threshold: float, budget: int | None = None,
               now: dt.datetime | None = None) -> int:
    with engine.connect() as conn:
        size = conn.execute(sa.select(sa.func.count()).select_from(_queue_query(version_id, threshold).subquery())
                            ).scalar_one()
    remaining = remaining_budget(engine, budget, now)
    return size if remaining is None else min(size, remaining)


def queue_frame(engine: Engine, version_id: int, *, threshold: float, budget: int | None = None) -> pd.DataFrame:
    """The whole queue (the CSV export), without the heavy columns."""
    size = queue_size(engine, version_id, threshold=threshold, budget=budget)
    page = queue_page(engine, version_id, threshold=threshold, budget=budget, limit=max(size, 1))
    page["items"] = page["items"].map(lambda items: "; ".join(f"{i.get('quantity')}x {i.get('name')} ({i.get('asin')})"
                                                              for i in (items or [])))
    return page.drop(columns=["probabilities", "image_uri", "row_version"])
