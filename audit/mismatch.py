"""Mismatch scoring and queue rules as typed pure functions (numpy in, DataFrames out).

These are the definitions. The database layer (`audit.queue`) runs the same rules as SQL so
that 500,000 bins never have to be loaded into pandas; a test checks the two agree.

Ranking is by the posterior mismatch probability, 1 - p(expected count), not by whether the
argmax differs from the expected count: a bin the model is unsure about (p(e) = 0.4, argmax = e)
is more likely wrong than one it confidently agrees with, and the argmax rule cannot tell them
apart. The argmax-differs flag is kept beside it so the two can be compared.

A record above the model's top exact count N: an open model compares it with its "N+1 or more"
class (1 - p("6+")); a closed model cannot check it at all. Such a bin is *beyond the model's
range*: no mismatch probability, never queued on its own (an analyst may still send it by hand).
No bin gets a probability that its photo cannot change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from modeling.counts import CountClasses
from modeling.metrics import decode_argmax, decode_expected, mismatch_probability


def score_distributions(
    probs: np.ndarray, expected: Sequence[int | None], *, classes: CountClasses | None = None
) -> pd.DataFrame:
    """One row per bin: predicted (argmax) and decoded (min. expected squared error) class counts, p(expected),
    mismatch probability, the argmax-differs flag, and whether the record is beyond the model's range.

    classes: the model's classes (default: closed, 0..C-1). With an open top class a predicted or decoded count
    of N+1 means "N+1 or more", and a record above N is compared with it (modeling.metrics.mismatch_probability).
    `expected` may hold None where nothing is known about the stock record, and a closed model has nothing to say
    about a record above N (`beyond_range`): either way the bin has no mismatch probability (NaN) and no
    argmax-differs flag (NA), and never enters the queue on its own.
    """
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if p.shape[0] != len(expected):
        raise ValueError(f"{p.shape[0]} distributions but {len(expected)} expected counts")
    if p.size and (np.abs(p.sum(axis=1) - 1.0) > 1e-4).any():
        raise ValueError("each row of probs must sum to 1")
    classes = classes or CountClasses(p.shape[1] - 1)
    if p.size and p.shape[1] != classes.num_classes:
        raise ValueError(f"{p.shape[1]} probabilities per bin, but the model has {classes.num_classes} classes")
    counts = classes.class_to_count
    known = np.array([e is not None for e in expected], dtype=bool)
    e = np.array([e if e is not None else 0 for e in expected], dtype=np.int64)
    if (e < 0).any():
        raise ValueError("expected counts must not be negative")
    beyond = known & ~classes.open_top & (e > classes.max_count)
    checked = known & ~beyond

    predicted = decode_argmax(p, counts) if len(p) else np.zeros(0, dtype=np.int64)
    mismatch = np.asarray(mismatch_probability(p, e, open_top=classes.open_top), dtype=np.float64) \
        if len(p) else np.zeros(0)
    as_class = np.minimum(e, classes.max_count + 1)  # a record above N is the open class's (when there is one)
    return pd.DataFrame({
        "predicted_count": predicted,
        "decoded_count": decode_expected(p, counts) if len(p) else np.zeros(0, dtype=np.int64),
        "expected_count": pd.array([x if k else pd.NA for x, k in zip(e, known, strict=True)], dtype="Int64"),
        "p_expected": np.where(checked, 1.0 - mismatch, np.nan),
        "mismatch_probability": np.where(checked, mismatch, np.nan),
        "argmax_differs": pd.array([bool(a != x) if k else pd.NA for a, x, k in zip(predicted, as_class, checked,
                                                                                     strict=True)], dtype="boolean"),
        "beyond_range": beyond,
    })


def queue_rules(
    candidates: pd.DataFrame, *, threshold: float, budget: int | None = None, decided_today: int = 0
) -> pd.DataFrame:
    """The review queue from one row per scored bin.

    Columns used: bin_id, mismatch_probability, predicted_at, decided_at (NaT when undecided), queued
    (sent to the queue by hand). Rules:
      - a bin enters when its mismatch probability is >= threshold, or it was queued by hand; a bin without one
        (no stock record, or a record beyond a closed model's range) enters only by hand;
      - a decision takes it out, unless a newer prediction (a newer model) came after the decision;
      - ranked by mismatch probability, highest first (ties by bin id);
      - a daily budget keeps only the top `budget - decided_today` (the analysts' remaining capacity).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    df = candidates
    enters = (df["mismatch_probability"].fillna(-1.0) >= threshold) | df["queued"].astype(bool)
    open_ = df["decided_at"].isna() | (df["decided_at"] < df["predicted_at"])
    queue = df[enters & open_].sort_values(["mismatch_probability", "bin_id"], ascending=[False, True],
                                           na_position="last")
    if budget is not None:
        queue = queue.head(max(0, budget - decided_today))
    return queue.reset_index(drop=True)


def precision_recall_at(scores: np.ndarray, truth: np.ndarray, k: int) -> tuple[float, float]:
    """Precision and recall of flagging the k highest-scoring bins (ties broken by order)."""
    truth = np.asarray(truth, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    hits = truth[order].sum()
    return (hits / k if k else 0.0), (hits / truth.sum() if truth.sum() else 0.0)


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the precision-recall curve, as the mean precision at each true positive's rank."""
    truth = np.asarray(truth, dtype=bool)
    if not truth.any():
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.cumsum(truth[order])
    precision_at_hit = hits[truth[order]] / (np.flatnonzero(truth[order]) + 1)
    return float(precision_at_hit.mean())
