"""The epoch line and its best_* figures are an interface: SageMaker's regexes and the local log parser must read what is
printed."""

from __future__ import annotations

import math
import re

import pytest

from modeling.metric_log import (
    BEST_DEFINITIONS,
    BEST_LINE_METRICS,
    EPOCH_DEFINITIONS,
    EPOCH_METRICS,
    METRIC_DEFINITIONS,
    format_best_line,
    format_epoch_line,
    objective_metric_name,
    parse_metric_log,
)

VALUES = {"train_loss": 0.91234, "train_accuracy": 0.61, "val_loss": 1.02, "val_accuracy": 0.55667,
          "val_rmse": 0.93, "val_mae": 0.6104, "lr": 0.01}


def test_format_matches_the_documented_shape():
    line = format_epoch_line(3, VALUES)
    assert line == ("epoch=3 train_loss=0.9123 train_accuracy=0.6100 val_loss=1.0200 val_accuracy=0.5567 "
                    "val_rmse=0.9300 val_mae=0.6104")


def test_every_metric_definition_matches_the_printed_line_and_recovers_its_value():
    line = format_epoch_line(12, VALUES)
    assert [*EPOCH_DEFINITIONS, *BEST_DEFINITIONS] == METRIC_DEFINITIONS
    assert {d["Name"] for d in EPOCH_DEFINITIONS} == {"epoch", *EPOCH_METRICS}
    for definition in EPOCH_DEFINITIONS:
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


def test_best_line_matches_the_documented_shape_and_its_definitions():
    line = format_best_line({"val_accuracy": 0.55667, "val_rmse": 0.93, "val_loss": 1.0})
    assert line == "best_val_accuracy=0.5567 best_val_rmse=0.9300"
    assert {d["Name"] for d in BEST_DEFINITIONS} == {objective_metric_name(m) for m in BEST_LINE_METRICS}
    expected = {"best_val_accuracy": 0.5567, "best_val_rmse": 0.93}
    for definition in BEST_DEFINITIONS:  # launchers may prefix the line
        found = re.findall(definition["Regex"], "[rank0]: " + line)
        assert [float(v) for v in found] == [expected[definition["Name"]]]


def test_epoch_and_best_regexes_never_read_each_others_line():
    epoch_line = format_epoch_line(2, VALUES)
    best_line = format_best_line({"val_accuracy": 0.1, "val_rmse": 2.0})
    assert not any(re.search(d["Regex"], best_line) for d in EPOCH_DEFINITIONS)
    assert not any(re.search(d["Regex"], epoch_line) for d in BEST_DEFINITIONS)
    parsed = parse_metric_log(f"{epoch_line} {best_line}")  # train.py prints them as one line
    assert len(parsed) == 1 and parsed[0]["val_accuracy"] == pytest.approx(0.5567)
    assert parsed[0]["val_rmse"] == pytest.approx(VALUES["val_rmse"])  # not best_val_rmse's 2.0
    for definition in BEST_DEFINITIONS:
        assert len(re.findall(definition["Regex"], f"{epoch_line} {best_line}")) == 1


def test_objective_metric_names_the_best_line_metric():
    assert objective_metric_name("val_accuracy") == "best_val_accuracy"
    assert objective_metric_name("val_rmse") == "best_val_rmse"
    with pytest.raises(ValueError, match="val_mae"):
        objective_metric_name("val_mae")
    with pytest.raises(KeyError, match="val_rmse"):
        format_best_line({"val_accuracy": 0.5})
