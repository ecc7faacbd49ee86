"""The Overview page's figures: the headline counts (each one aggregate query), and the loop's figures as pure
functions of the decisions (queue precision per model version, decisions per analyst per day)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.queue import queue_size
from audit.vocabulary import CONFIRM, DISMISS, UNSURE
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
                                 .where(b.c.decision == CONFIRM)).scalar_one()
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


def _standing(decisions: pd.DataFrame) -> pd.DataFrame:
    """Decisions not undone (audit.reviews.decisions_frame's rows)."""
    return decisions[decisions["undone_at"].isna()] if "undone_at" in decisions else decisions


def queue_precision(decisions: pd.DataFrame, names: dict[int, str] | None = None) -> pd.DataFrame:
    """Per model version, over the bins decided in its queue (each bin's latest standing decision there): decided,
    confirmed, dismissed, unsure, and precision = confirmed mismatches / decided bins. The figure that says whether a
    new model sends analysts fewer bins that were right all along. `decisions`: audit.reviews.decisions_frame."""
    columns = ["model_version_id", "model", "decided", "confirmed", "dismissed", "unsure", "precision"]
    standing = _standing(decisions).dropna(subset=["model_version_id"])
    if standing.empty:
        return pd.DataFrame(columns=columns)
    latest = standing.sort_values(["created_at", "review_id"]).groupby(["model_version_id", "bin_id"]).tail(1)
    counts = pd.crosstab(latest["model_version_id"].astype(int), latest["decision"])
    out = pd.DataFrame({"model_version_id": counts.index,
                        "confirmed": counts.get(CONFIRM, 0), "dismissed": counts.get(DISMISS, 0),
                        "unsure": counts.get(UNSURE, 0)}).reset_index(drop=True)
    out["decided"] = out[["confirmed", "dismissed", "unsure"]].sum(axis=1)
    out["precision"] = out["confirmed"] / out["decided"]
    out["model"] = out["model_version_id"].map(lambda v: (names or {}).get(int(v), f"version {v}"))
    return out[columns].sort_values("model_version_id").reset_index(drop=True)


def decisions_per_analyst_per_day(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per (UTC day, reviewer): decisions that stand, and how many confirmed a mismatch; newest day first."""
    columns = ["day", "reviewer", "decisions", "confirmed"]
    standing = _standing(decisions)
    if standing.empty:
        return pd.DataFrame(columns=columns)
    frame = standing.assign(day=pd.to_datetime(standing["created_at"]).dt.date,
                            confirmed=standing["decision"] == CONFIRM)
    out = (frame.groupby(["day", "reviewer"]).agg(decisions=("review_id", "count"), confirmed=("confirmed", "sum"))
           .reset_index())
    out["confirmed"] = out["confirmed"].astype(int)
    return out.sort_values(["day", "reviewer"], ascending=[False, True]).reset_index(drop=True)[columns]
