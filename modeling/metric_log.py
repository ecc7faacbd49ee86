"""The log lines that report metrics and the regexes that read them back: an interface, so both live here.

After every epoch train.py prints exactly one line (wrapped here):

    epoch=3 train_loss=0.9123 train_accuracy=0.6100 val_loss=1.0200 val_accuracy=0.5567 val_rmse=0.9300 val_mae=0.6100
        best_val_accuracy=0.5567 best_val_rmse=0.9300

`format_epoch_line` writes that epoch's figures; `format_best_line` appends those of the model train.py keeps (the
best epoch so far by --best-metric). Tuning ranks trials by the latter: SageMaker takes the latest value a trial
emits of its objective metric, so the objective is `best_<metric>` (see objective_metric_name), and printing it every
epoch keeps SageMaker's early stopping, which compares objective values epoch by epoch, working.

SageMaker's metric definitions (tuning objectives, CloudWatch) and the local jobs layer use METRIC_DEFINITIONS;
tests prove they match what `format_epoch_line` and `format_best_line` print.
"""

from __future__ import annotations

import math
import re

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_rmse", "val_mae")
BEST_LINE_METRICS = ("val_accuracy", "val_rmse")  # the tuning objectives, for the kept model
_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)"
_BEST_PREFIX = "best_"

EPOCH_DEFINITIONS: list[dict[str, str]] = [
    # not anchored at ^: launchers (torchrun --tee, log shippers) may prefix the line
    {"Name": "epoch", "Regex": r"\bepoch=(\d+) train_loss="},
    # the leading space keeps " val_rmse=" from matching inside "best_val_rmse="
    *({"Name": name, "Regex": rf" {name}={_NUMBER}(?:\s|$)"} for name in EPOCH_METRICS),
]
BEST_DEFINITIONS: list[dict[str, str]] = [
    {"Name": _BEST_PREFIX + name, "Regex": rf"\b{_BEST_PREFIX}{name}={_NUMBER}(?:\s|$)"} for name in BEST_LINE_METRICS
]
METRIC_DEFINITIONS: list[dict[str, str]] = [*EPOCH_DEFINITIONS, *BEST_DEFINITIONS]


def objective_metric_name(metric: str) -> str:
    """The metric a tuner ranks trials by for `metric` (val_accuracy -> best_val_accuracy): the kept model's."""
    if metric not in BEST_LINE_METRICS:
        raise ValueError(f"Invalid objective {metric!r}. Only {', '.join(BEST_LINE_METRICS)} are supported.")
    return _BEST_PREFIX + metric


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else "inf" if value == math.inf else "-inf" if value == -math.inf else f"{value:.4f}"


def format_epoch_line(epoch: int, metrics: dict[str, float]) -> str:
    """`epoch=N name=value ...` with every name of EPOCH_METRICS, in that order, 4 decimals."""
    missing = [m for m in EPOCH_METRICS if m not in metrics]
    if missing:
        raise KeyError(f"epoch line needs {', '.join(missing)}")
    return f"epoch={int(epoch)} " + " ".join(f"{name}={_fmt(float(metrics[name]))}" for name in EPOCH_METRICS)


def format_best_line(kept: dict[str, float]) -> str:
    """`best_val_accuracy=... best_val_rmse=...`: the kept model's validation figures, 4 decimals."""
    missing = [m for m in BEST_LINE_METRICS if m not in kept]
    if missing:
        raise KeyError(f"best figures need {', '.join(missing)}")
    return " ".join(f"{_BEST_PREFIX}{name}={_fmt(float(kept[name]))}" for name in BEST_LINE_METRICS)


def parse_metric_log(text: str) -> list[dict[str, float]]:
    """One dict per epoch line in a log (other lines ignored; the best_* figures are not read), with "epoch" and every
    metric found."""
    regexes = [(d["Name"], re.compile(d["Regex"])) for d in EPOCH_DEFINITIONS]
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
