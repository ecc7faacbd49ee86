"""The headline figures of the Overview page, each one aggregate query."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.queue import queue_size
from binaudit import db


@dataclass(frozen=True)
class Overview:
    bins: int
    scored: int  # bins with a prediction by the model version
    agree: int  # scored bins whose predicted count equals the stock record
    with_record: int  # scored bins whose expected count the model can check
    open_queue: int
    beyond_range: int  # scored bins whose record is above a closed model's top count: not checked, never queued
    decisions_week: int
    confirmed_mismatches: int
    score_problems: int

    @property
    def agree_share(self) -> float | None:
        return self.agree / self.with_record if self.with_record else None


def overview(engine: Engine, version_id: int | None, *, threshold: float, budget: int | None = None,
             now: dt.datetime | None = None) -> Overview:
    b, p = db.bins, db.predictions
    now = now or db.utcnow()
    with engine.connect() as conn:
        n_bins = conn.execute(sa.select(sa.func.count()).select_from(b)).scalar_one()
        week = conn.execute(sa.select(sa.func.count()).select_from(db.reviews)
                            .where(db.reviews.c.created_at >= now - dt.timedelta(days=7))).scalar_one()
        confirmed = conn.execute(sa.select(sa.func.count()).select_from(b)
                                 .where(b.c.decision == "confirm_mismatch")).scalar_one()
        scored = agree = with_record = problems = beyond = 0
        if version_id is not None:
            # one walk of the (version, argmax_differs) index: differs is NULL where no stock record is known and
            # where the record is beyond a closed model's range (the share is over the bins the model can check)
            by_flag = dict(conn.execute(sa.select(p.c.argmax_differs, sa.func.count())
                                        .where(p.c.model_version_id == version_id)
                                        .group_by(p.c.argmax_differs)).all())
            scored = sum(by_flag.values())
            agree = by_flag.get(False, 0)
            with_record = agree + by_flag.get(True, 0)
            beyond = conn.execute(sa.select(sa.func.count()).select_from(p).where(
                p.c.model_version_id == version_id, p.c.beyond_range.is_(True))).scalar_one()
            problems = conn.execute(sa.select(sa.func.count()).select_from(db.problems).where(
                db.problems.c.stage == "score", db.problems.c.model_version_id == version_id)).scalar_one()
    open_queue = queue_size(engine, version_id, threshold=threshold, budget=budget) if version_id is not None else 0
    return Overview(n_bins, scored, int(agree), with_record, open_queue, beyond, week, confirmed, problems)
