"""Browsing bins with filters, one page at a time, and one bin in detail.

Filters: split, expected counts, predicted counts, mismatch only (the prediction disagrees with
the record), a mismatch-probability range, the latest decision, and a text search over item names
and ASINs. Pages come from the database with LIMIT/OFFSET; nothing loads the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from binaudit import db

ORDERS = ("bin_id", "mismatch_probability")
BROWSE_COLUMNS = ["bin_id", "split", "expected_count", "predicted_count", "decoded_count", "mismatch_probability",
                  "argmax_differs", "decision", "recounted_count", "image_uri", "row_version"]


@dataclass(frozen=True)
class BinFilter:
    splits: tuple[str, ...] = ()
    expected: tuple[int, ...] = ()
    predicted: tuple[int, ...] = ()
    mismatch_only: bool = False
    prob_min: float = 0.0
    prob_max: float = 1.0
    decisions: tuple[str, ...] = ()  # "none" selects undecided bins
    text: str = ""


def _base(version_id: int | None) -> sa.Select:
    b, p = db.bins, db.predictions
    join_on = (p.c.bin_id == b.c.id) & (p.c.model_version_id == (version_id if version_id is not None else -1))
    return sa.select(b.c.id.label("bin_id"), b.c.split, b.c.expected_count, p.c.predicted_count, p.c.decoded_count,
                     p.c.mismatch_probability, p.c.argmax_differs, b.c.decision, b.c.recounted_count,
                     b.c.image_uri, b.c.row_version).select_from(b.outerjoin(p, join_on))


def _apply(q: sa.Select, f: BinFilter) -> sa.Select:
    b, p = db.bins, db.predictions
    if f.splits:
        q = q.where(b.c.split.in_(f.splits))
    if f.expected:
        q = q.where(b.c.expected_count.in_(f.expected))
    if f.predicted:
        q = q.where(p.c.predicted_count.in_(f.predicted))
    if f.mismatch_only:
        q = q.where(p.c.argmax_differs.is_(True))
    if f.prob_min > 0.0 or f.prob_max < 1.0:
        q = q.where(p.c.mismatch_probability.between(f.prob_min, f.prob_max))
    if f.decisions:
        named = [d for d in f.decisions if d != "none"]
        cond = b.c.decision.in_(named) if named else sa.false()
        q = q.where(cond | b.c.decision.is_(None) if "none" in f.decisions else cond)
    if f.text.strip():
        # escape LIKE wildcards: a search for "50%" means the text, not a pattern
        term = f.text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(b.c.search_text.like(f"%{term}%", escape="\\") | b.c.id.like(f"%{term}%", escape="\\"))
    return q


def browse_page(engine: Engine, version_id: int | None, f: BinFilter, *, order: str = "bin_id", limit: int = 48,
                offset: int = 0) -> pd.DataFrame:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    q = _apply(_base(version_id), f)
    if order == "mismatch_probability":
        q = q.order_by(db.predictions.c.mismatch_probability.desc().nulls_last(), db.bins.c.id)
    else:
        q = q.order_by(db.bins.c.id)
    with engine.connect() as conn:
        rows = conn.execute(q.limit(limit).offset(offset)).mappings().all()
    return pd.DataFrame(rows, columns=BROWSE_COLUMNS)


def browse_count(engine: Engine, version_id: int | None, f: BinFilter) -> int:
    q = _apply(_base(version_id), f).with_only_columns(sa.func.count())
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def bin_detail(engine: Engine, bin_id: str, version_id: int | None) -> dict[str, Any] | None:
    """Everything the detail view shows: the bin row, its items, and the prediction of the version."""
    b, p = db.bins, db.predictions
    with engine.connect() as conn:
        row = conn.execute(sa.select(b).where(b.c.id == bin_id)).mappings().first()
        if row is None:
            return None
        pred = None
        if version_id is not None:
            pred = conn.execute(sa.select(p).where(p.c.bin_id == bin_id, p.c.model_version_id == version_id)
                                ).mappings().first()
        problems = conn.execute(sa.select(db.problems.c.stage, db.problems.c.reason, db.problems.c.created_at)
                                .where(db.problems.c.bin_id == bin_id).order_by(db.problems.c.id.desc())
                                ).mappings().all()
    return {"bin": dict(row), "prediction": dict(pred) if pred else None, "problems": [dict(x) for x in problems]}
