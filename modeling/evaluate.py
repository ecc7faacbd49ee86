"""Evaluate a model folder on a data folder of <count>/<image>: metrics.json and predictions.csv.

metrics.json holds both decodings (argmax and the expected-squared-error-minimising count) with accuracy, RMSE,
MAE, within-one, the per-count table and the confusion matrix; predictions.csv one row per scored photo. Counts
above N are truncated at N+1 and shown as the open class's label ("6+"), never as N+1.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from binaudit.csvsafe import spreadsheet_safe
from modeling.artifacts import write_json
from modeling.counts import CountClasses
from modeling.data import scan_count_folders
from modeling.metrics import decode_argmax, decode_expected, evaluation_summary
from modeling.predictor import Predictor

PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"


def evaluate_folder(predictor: Predictor, data_dir: str | os.PathLike, batch_size: int = 16,
                    workers: int | None = None, progress: bool | None = None) -> tuple[dict[str, Any], list[list]]:
    """(metrics, prediction rows) of `predictor` on every photo under data_dir/<count>/; bad photos are listed.

    The folder may have the open class folder ("6+") whatever the model: a closed model is then charged for the
    bins it has no class for (its best guess, N, is one off the truncated count N+1), so an open and a closed model
    can be compared on the same folder. Counts are truncated at N+1 (modeling.metrics).
    """
    spec = predictor.spec
    samples = scan_count_folders(data_dir, spec.max_count, open_top=True)
    counts = predictor.class_to_count
    open_data = any(label > spec.max_count for _, label in samples)
    scale = CountClasses(spec.max_count, spec.classes.open_top or open_data)  # the rows and columns of the matrix
    results = list(predictor.predict_paths([p for p, _ in samples], batch_size, workers, progress))
    ok = [i for i, r in enumerate(results) if r.probs is not None]
    probs = np.stack([results[i].probs for i in ok]) if ok else np.zeros((0, len(counts)))
    true = np.array([samples[i][1] for i in ok], dtype=np.int64)
    metrics = {
        "data": str(data_dir),
        "n_images": len(samples),
        "n_scored": len(ok),
        "failed": [{"path": r.path, "error": r.error} for r in results if r.probs is None],
        "precision": predictor.precision,
        "runtime": predictor.runtime,
        "class_to_count": counts,
        "class_labels": list(spec.classes.labels),
        "top_class": spec.top_class,
        "data_has_open_class": open_data,
        **evaluation_summary(true, probs, counts, scale.labels),
    }
    return metrics, prediction_rows(samples, ok, probs, spec.classes)


def prediction_rows(samples: Sequence[tuple[str, int]], ok: Sequence[int], probs: np.ndarray,
                    classes: CountClasses) -> list[list]:
    """bin_id, true_count, predicted_count (argmax), expected_count_decoded, p0..pN per scored photo; counts
    as labels ("6+" for the open class, and for a true count above N)."""
    counts = classes.class_to_count
    argmax, expected = decode_argmax(probs, counts), decode_expected(probs, counts)
    shown = CountClasses(classes.max_count, True).label  # a true count of N+1 is the open class's, whatever the model
    return [
        [spreadsheet_safe(Path(samples[i][0]).stem), shown(samples[i][1]), classes.label(a), classes.label(e),
         *(f"{p:.6f}" for p in row)]
        for i, a, e, row in zip(ok, argmax, expected, probs, strict=True)
    ]


def write_evaluation(out_dir: str | os.PathLike, metrics: dict[str, Any], rows: list[list],
                     labels: Sequence[str]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / METRICS_FILE, metrics)
    with (out_dir / PREDICTIONS_FILE).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["bin_id", "true_count", "predicted_count", "expected_count_decoded",
                         *(f"p{label}" for label in labels)])
        writer.writerows(rows)
