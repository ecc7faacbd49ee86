"""The per-epoch log line and the regexes that read it back: an interface, so both live here.

    epoch=3 train_loss=0.9123 train_accuracy=0.6100 val_loss=1.0200 val_accuracy=0.5567 val_rmse=0.9300 val_mae=0.6100

SageMaker's metric definitions (tuning objectives, CloudWatch) and the local jobs layer use METRIC_DEFINITIONS;
a test proves they match what `format_epoch_line` prints.
"""

from __future__ import annotations

import math
import re

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_rmse", "val_mae")
_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)"

METRIC_DEFINITIONS: list[dict[str, str]] = [
    # not anchored at ^: launchers (torchrun --tee, log shippers) may prefix the line
    {"Name": "epoch", "Regex": r"\bepoch=(\d+) train_loss="},
    *({"Name": name, "Regex": rf" {name}={_NUMBER}(?:\s|$)"} for name in EPOCH_METRICS),
]


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else "inf" if value == math.inf else "-inf" if value == -math.inf else f"{value:.4f}"


def format_epoch_line(epoch: int, metrics: dict[str, float]) -> str:
    """`epoch=N name=value ...` with every name of EPOCH_METRICS, in that order, 4 decimals."""
    missing = [m for m in EPOCH_METRICS if m not in metrics]
    if missing:
        raise KeyError(f"epoch line needs {', '.join(missing)}")
    return f"epoch={int(epoch)} " + " ".join(f"{name}={_fmt(float(metrics[name]))}" for name in EPOCH_METRICS)


def parse_metric_log(text: str) -> list[dict[str, float]]:
    """One dict per epoch line in a log (other lines ignored), with "epoch" and every metric found."""
    regexes = [(d["Name"], re.compile(d["Regex"])) for d in METRIC_DEFINITIONS]
    epochs = []
    for line in text.splitlines():
        row: dict[str, float] = {}
        for name, regex in regexes:
            match = regex.search(line)
            if match:
                row[name] = int(match.group(1)) if name == "epoch" else float(match.group(1))
        if "epoch" in row:
            epochs.append(row)
    return epochs
