"""Counting metrics as pure numpy functions (the abid_challenge measures), and the mismatch probability.

All error measures are over COUNTS: class indices go through `class_to_count` first. With an open top class
("N+1 or more", modeling.counts) counts are truncated at N+1: the open class counts as N+1, and so does a true
count above N, so accuracy is over the classes and RMSE / MAE are over truncated counts. Two decodings of a
predicted distribution are reported side by side:

- argmax: the most probable class; maximises expected accuracy.
- expected: the integer nearest the distribution's mean (halves round up), clipped to the count range. For any
  integer k, E[(k - Y)^2] = (k - mean)^2 + Var(Y), so the nearest integer to the mean is exactly the count that
  minimises the expected squared error, i.e. RMSE. (The median would minimise absolute error, i.e. MAE.) With an
  open class the mean is that of the truncated count min(Y, N+1): a lower bound of the true mean whenever the open
  class has mass, and its rounding minimises the truncated RMSE; a decoded N+1 reads "N+1 or more".

Everything a summary reports derives from the confusion matrix of counts, so per-rank confusion matrices summed
across DDP ranks give exactly the single-process numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DECODINGS = ("argmax", "expected")


def to_counts(indices: np.ndarray, class_to_count: Sequence[int]) -> np.ndarray:
    return np.asarray(class_to_count, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]


def decode_argmax(probs: np.ndarray, class_to_count: Sequence[int]) -> np.ndarray:
    """The most probable count per row of an (N, C) probability array."""
    return to_counts(np.asarray(probs).argmax(axis=-1), class_to_count)


def expected_count(probs: np.ndarray, class_to_count: Sequence[int]) -> np.ndarray:
    """The mean count under each row's distribution (float)."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(class_to_count, dtype=np.float64)


def decode_expected(probs: np.ndarray, class_to_count: Sequence[int]) -> np.ndarray:
    """The count that minimises expected squared error: the rounded mean, clipped to the count range."""
    mean = expected_count(probs, class_to_count)
    return np.clip(np.floor(mean + 0.5), min(class_to_count), max(class_to_count)).astype(np.int64)


def decode(probs: np.ndarray, class_to_count: Sequence[int], decoding: str) -> np.ndarray:
    if decoding == "argmax":
        return decode_argmax(probs, class_to_count)
    if decoding == "expected":
        return decode_expected(probs, class_to_count)
    raise ValueError(f"unknown decoding {decoding!r}; only {', '.join(DECODINGS)}")


# ---------------------------------------------------------------- per-sample measures over counts

def _pair(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true, dtype=np.int64).ravel(), np.asarray(pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and predicted counts differ in length: {t.size} vs {p.size}")
    return t, p


def accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    t, p = _pair(true, pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def rmse(true: np.ndarray, pred: np.ndarray) -> float:
    t, p = _pair(true, pred)
    return float(np.sqrt(np.mean((t - p) ** 2))) if t.size else float("nan")


def mae(true: np.ndarray, pred: np.ndarray) -> float:
    t, p = _pair(true, pred)
    return float(np.mean(np.abs(t - p))) if t.size else float("nan")


def within_one(true: np.ndarray, pred: np.ndarray) -> float:
    """Share of predictions off by at most one item."""
    t, p = _pair(true, pred)
    return float(np.mean(np.abs(t - p) <= 1)) if t.size else float("nan")


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_counts: int) -> np.ndarray:
    """(num_counts, num_counts) int64: rows are true counts, columns predicted counts."""
    t, p = _pair(true, pred)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_counts):
        raise ValueError(f"counts must lie in 0..{num_counts - 1}")
    return np.bincount(t * num_counts + p, minlength=num_counts * num_counts).reshape(num_counts, num_counts)


# ---------------------------------------------------------------- summaries from a confusion matrix

def summarize_confusion(cm: np.ndarray, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """accuracy, RMSE, MAE, within-one, per-count accuracy and RMSE (the abid_challenge table), the matrix.

    labels: how each row reads ("0".."5", "6+" for an open class; default the counts), kept in the per-count rows.
    """
    cm = np.asarray(cm, dtype=np.int64)
    counts = np.arange(cm.shape[0])
    err = counts[None, :] - counts[:, None]  # predicted - true, cell by cell
    n = int(cm.sum())
    row_n = cm.sum(axis=1)

    def safe(num: float, den: float) -> float:
        return float(num / den) if den else float("nan")

    names = list(labels) if labels is not None else [str(c) for c in counts]
    if len(names) != len(counts):
        raise ValueError(f"{len(names)} labels for a {len(counts)}-count confusion matrix")
    per_class = [
        {
            "count": int(c),
            "label": names[c],
            "n": int(row_n[c]),
            "accuracy": safe(cm[c, c], row_n[c]),
            "rmse": float(np.sqrt(safe((cm[c] * err[c] ** 2).sum(), row_n[c]))),
        }
        for c in counts
    ]
    return {
        "n": n,
        "accuracy": safe(np.trace(cm), n),
        "rmse": float(np.sqrt(safe((cm * err**2).sum(), n))),
        "mae": safe((cm * np.abs(err)).sum(), n),
        "within_one": safe(cm[np.abs(err) <= 1].sum(), n),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": names,
    }


def evaluation_summary(true_counts: np.ndarray, probs: np.ndarray, class_to_count: Sequence[int],
                       labels: Sequence[str] | None = None) -> dict[str, Any]:
    """{"argmax": summary, "expected": summary} for true counts (already truncated at N+1 for an open model, see
    CountClasses.truncate) and an (N, C) probability array."""
    num_counts = len(labels) if labels is not None else max(class_to_count) + 1
    return {
        name: summarize_confusion(confusion_matrix(true_counts, decode(probs, class_to_count, name), num_counts),
                                  labels)
        for name in DECODINGS
    }


def format_per_class_table(summary: dict[str, Any]) -> str:
    """The abid_challenge table: one row per count with n, accuracy and RMSE, then the overall row."""
    lines = [f"{'count':>5} {'n':>6} {'accuracy':>9} {'rmse':>7}"]
    for row in summary["per_class"]:
        lines.append(f"{row.get('label', row['count']):>5} {row['n']:>6} {row['accuracy']:>9.4f} {row['rmse']:>7.4f}")
    lines.append(f"{'all':>5} {summary['n']:>6} {summary['accuracy']:>9.4f} {summary['rmse']:>7.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- audit

def mismatch_probability(probs: np.ndarray, expected: int | np.ndarray, *, open_top: bool = False
                         ) -> np.ndarray | float:
    """Probability that a bin does NOT hold `expected` items, from its predicted class distribution.

    probs: (C,) or (N, C) over the classes (index == count; with `open_top` the last class is "N+1 or more");
    expected: int or (N,) ints. With N the highest exact count:
      e <= N:                  1 - p[e]
      e > N, open top class:   1 - p["N+1 or more"] (a record of 9 agrees with a photo of "6+": the model cannot
                               tell 9 from 7, and it does not pretend to)
      e > N, closed model:     NaN: the record is beyond the model's range. Every probability it has is on
                               0..N, so any number here (1 - 0, or p(<= N) = 1) would be fixed by construction,
                               whatever the photo shows.
    Negative expected counts raise ValueError. Returns a float for one row, else an (N,) array.
    """
    p = np.asarray(probs, dtype=np.float64)
    single = p.ndim == 1
    p = np.atleast_2d(p)
    e = np.broadcast_to(np.asarray(expected, dtype=np.int64), (p.shape[0],))
    if (e < 0).any():
        raise ValueError("expected counts must not be negative")
    top = p.shape[1] - 1  # the open class, or the highest exact count of a closed model
    max_count = top - 1 if open_top else top
    p_at_e = np.take_along_axis(p, np.minimum(e, top)[:, None], axis=1)[:, 0]
    # clipped: rounding in a softmax (or in stored probabilities) can sum to 1 + 1e-7, and a probability is <= 1
    out = np.clip(1.0 - p_at_e, 0.0, 1.0)
    out = np.where(open_top | (e <= max_count), out, np.nan)
    return float(out[0]) if single and np.ndim(expected) == 0 else out
