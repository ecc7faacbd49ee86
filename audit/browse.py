"""Browsing bins with filters, one page at a time, and one bin in detail.

Filters: split, expected counts, predicted counts, mismatch only (the prediction disagrees with
the record), beyond range only (the record is above a closed model's top count: no mismatch
probability), a mismatch-probability range, the latest decision, and a text search over bin ids, item
names and ASINs (served by a trigram index: FTS5 on SQLite, pg_trgm on PostgreSQL, both from
migration 4; terms under three characters are a plain LIKE scan). Pages come from the database with
LIMIT/OFFSET; nothing loads the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.queue import ranking
from binaudit import db

ORDERS = ("bin_id", "mismatch_probability")
BROWSE_COLUMNS = ["bin_id", "split", "expected_count", "predicted_count", "decoded_count", "mismatch_probability",
                  "argmax_differs", "beyond_range", "decision", "recounted_count", "image_uri", "row_version"]


@dataclass(frozen=True)
class BinFilter:
    splits: tuple[str, ...] = ()
    expected: tuple[int, ...] = ()
    predicted: tuple[int, ...] = ()
    mismatch_only: bool = False
    beyond_range_only: bool = False  # records above a closed model's top count (no mismatch probability)
    prob_min: float = 0.0
    prob_max: float = 1.0
    decisions: tuple[str, ...] = ()  # "none" selects undecided bins
    text: str = ""


def _columns() -> list[sa.ColumnElement]:
    b, p = db.bins, db.predictions
    return [b.c.id.label("bin_id"), b.c.split, b.c.expected_count, p.c.predicted_count, p.c.decoded_count,
            p.c.mismatch_probability, p.c.argmax_differs, p.c.beyond_range, b.c.decision, b.c.recounted_count, b.c.image_uri,
            b.c.row_version]


def _prediction_conditions(p: sa.FromClause, f: BinFilter) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if f.predicted:
        conds.append(p.c.predicted_count.in_(f.predicted))
    if f.mismatch_only:
        conds.append(p.c.argmax_differs.is_(True))
    if f.beyond_range_only:
        conds.append(p.c.beyond_range.is_(True))
    if f.prob_min > 0.0 or f.prob_max < 1.0:
        conds.append(p.c.mismatch_probability.between(f.prob_min, f.prob_max))
    return conds


def _text_condition(dialect: str, text: str) -> sa.ColumnElement[bool]:
    term = text.replace("\x00", "").strip().lower()  # no stored text holds NUL (PostgreSQL refuses it in a query)
    if dialect == "sqlite" and len(term) >= 3:  # the trigram index needs three characters
        phrase = '"' + term.replace('"', '""') + '"'
        return sa.literal_column("bins.rowid").in_(sa.text("SELECT rowid FROM bins_fts WHERE bins_fts MATCH :phrase")
                                                   .bindparams(phrase=phrase))
    # escape LIKE wildcards: a search for "50%" means the text, not a pattern
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return db.bins.c.search_text.like(f"%{escaped}%", escape="\\")


def _bin_conditions(dialect: str, f: BinFilter) -> list[sa.ColumnElement[bool]]:
    b = db.bins
    conds: list[sa.ColumnElement[bool]] = []
    if f.splits:
        conds.append(b.c.split.in_(f.splits))
    if f.expected:
        conds.append(b.c.expected_count.in_(f.expected))
    if f.decisions:
        named = [d for d in f.decisions if d != "none"]
        cond = b.c.decision.in_(named) if named else sa.false()
        conds.append(cond | b.c.decision.is_(None) if "none" in f.decisions else cond)
    if f.text.strip():
        conds.append(_text_condition(dialect, f.text))
    return conds


def _query(dialect: str, version_id: int | None, f: BinFilter, order: str) -> sa.Select:
    """Bins in id order are driven from the bins table, prediction filters checked per bin (EXISTS on the
    (bin, version) key), so a page stops after `limit` matches; bins ordered by mismatch probability are
    driven from the (version, probability, bin) index. The latter lists scored bins only."""
    b, p = db.bins, db.predictions
    version = version_id if version_id is not None else -1
    if order == "mismatch_probability":
        q = (sa.select(*_columns()).select_from(p.join(b, b.c.id == p.c.bin_id))
             .where(p.c.model_version_id == version, *_prediction_conditions(p, f))
             .order_by(*ranking(dialect)))
    else:
        q = (sa.select(*_columns())
             .select_from(b.outerjoin(p, (p.c.bin_id == b.c.id) & (p.c.model_version_id == version)))
             .order_by(b.c.id))
        pf = p.alias("pf")  # the filter's own copy: the outer join's predictions row may be absent
        if conds := _prediction_conditions(pf, f):
            q = q.where(sa.exists().where(pf.c.bin_id == b.c.id, pf.c.model_version_id == version, *conds))
    return q.where(*_bin_conditions(dialect, f))


def filter_values(engine: Engine) -> tuple[list[str], list[int]]:
    """The splits and the expected counts present among the bins (each sorted): the filters' options, so every value
    a bin has can be selected (a record of 13 too) and a split filter shows only where some bin has a split."""
    b = db.bins
    with engine.connect() as conn:
        splits = conn.execute(sa.select(b.c.split).distinct().where(b.c.split.is_not(None))).scalars().all()
        expected = conn.execute(sa.select(b.c.expected_count).distinct().where(b.c.expected_count.is_not(None))
                                ).scalars().all()
    return sorted(splits), sorted(expected)


def browse_page(engine: Engine, version_id: int | None, f: BinFilter, *, order: str = "bin_id", limit: int = 48,
                offset: int = 0) -> pd.DataFrame:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    q = _query(engine.dialect.name, version_id, f, order).limit(limit).offset(offset)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return pd.DataFrame(rows, columns=BROWSE_COLUMNS)


def browse_count(engine: Engine, version_id: int | None, f: BinFilter, *, order: str = "bin_id") -> int:
    q = _query(engine.dialect.name, version_id, f, order).order_by(None).with_only_columns(sa.func.count())
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
