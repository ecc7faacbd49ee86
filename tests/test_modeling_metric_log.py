"""The epoch line is an interface: SageMaker's regexes and the local log parser must read what is printed."""

from __future__ import annotations

import math
import re

import pytest

from modeling.metric_log import EPOCH_METRICS, METRIC_DEFINITIONS, format_epoch_line, parse_metric_log

VALUES = {"train_loss": 0.91234, "train_accuracy": 0.61, "val_loss": 1.02, "val_accuracy": 0.55667,
          "val_rmse": 0.93, "val_mae": 0.6104, "lr": 0.01}


def test_format_matches_the_documented_shape():
    line = format_epoch_line(3, VALUES)
    assert line == ("epoch=3 train_loss=0.9123 train_accuracy=0.6100 val_loss=1.0200 val_accuracy=0.5567 "
                    "val_rmse=0.9300 val_mae=0.6104")


def test_every_metric_definition_matches_the_printed_line_and_recovers_its_value():
    line = format_epoch_line(12, VALUES)
    names = {d["Name"] for d in METRIC_DEFINITIONS}
    assert names == {"epoch", *EPOCH_METRICS}
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], line)
        assert match, definition
        expected = 12 if definition["Name"] == "epoch" else round(VALUES[definition["Name"]], 4)
        assert float(match.group(1)) == pytest.approx(expected, abs=1e-9)


def test_regexes_do_not_confuse_train_and_val_metrics():
    line = format_epoch_line(1, {**VALUES, "train_accuracy": 0.1111, "val_accuracy": 0.9999})
    regex = next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == "val_accuracy")
    assert re.findall(regex, line) == ["0.9999"]


def test_parse_metric_log_reads_epoch_lines_among_other_output():
    log = "\n".join([
        "training resnet18 on 96 images",
        format_epoch_line(1, VALUES),
        "some warning with val_accuracy=0.1234 in it",
        "[rank0]: " + format_epoch_line(2, {**VALUES, "val_rmse": 0.5}),
        "done: best epoch 2",
    ])
    epochs = parse_metric_log(log)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[1]["val_rmse"] == 0.5
    assert epochs[0]["train_loss"] == pytest.approx(0.9123)
    assert set(epochs[0]) == {"epoch", *EPOCH_METRICS}


def test_non_finite_values_are_printed_and_parsed():
    line = format_epoch_line(1, {**VALUES, "val_rmse": float("nan"), "train_loss": float("inf")})
    assert "val_rmse=nan" in line
    parsed = parse_metric_log(line)[0]
    assert math.isnan(parsed["val_rmse"]) and parsed["train_loss"] == math.inf


def test_a_missing_metric_is_an_error_not_a_silent_gap():
    with pytest.raises(KeyError, match="val_mae"):
        format_epoch_line(1, {k: v for k, v in VALUES.items() if k != "val_mae"})
