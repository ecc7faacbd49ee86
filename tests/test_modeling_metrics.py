"""Counting metrics on hand-made arrays: every expected value below is worked out by hand in the comment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modeling.counts import CountClasses
from modeling.metrics import (
    accuracy,
    confusion_matrix,
    decode_argmax,
    decode_expected,
    evaluation_summary,
    format_per_class_table,
    mae,
    mismatch_probability,
    rmse,
    summarize_confusion,
    to_counts,
    within_one,
)

TRUE = np.array([0, 1, 2, 3, 5, 5])
PRED = np.array([0, 2, 2, 5, 4, 1])
# errors: 0, 1, 0, 2, -1, -4 -> squared 0+1+0+4+1+16 = 22, absolute 8


def test_accuracy_rmse_mae_within_one_by_hand():
    assert accuracy(TRUE, PRED) == pytest.approx(2 / 6)
    assert rmse(TRUE, PRED) == pytest.approx(math.sqrt(22 / 6))
    assert mae(TRUE, PRED) == pytest.approx(8 / 6)
    assert within_one(TRUE, PRED) == pytest.approx(4 / 6)  # errors 0, 1, 0, -1


def test_rmse_is_over_counts_not_class_indices():
    # a head whose classes stand for the counts 0, 2, 4: index 2 means four items
    class_to_count = (0, 2, 4)
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    pred = decode_argmax(probs, class_to_count)
    assert pred.tolist() == [4, 0]
    true = to_counts(np.array([1, 1]), class_to_count)  # both bins hold 2 items
    assert rmse(true, pred) == pytest.approx(2.0)  # errors +2, -2 in items (indices would give +1, -1)


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix(TRUE, PRED, 6)
    assert cm.shape == (6, 6) and cm.sum() == 6
    assert cm[3, 5] == 1 and cm[5, 4] == 1 and cm[5, 1] == 1 and cm[0, 0] == 1
    with pytest.raises(ValueError, match="0..5"):
        confusion_matrix(np.array([6]), np.array([0]), 6)


def test_per_class_accuracy_and_rmse_table():
    summary = summarize_confusion(confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 3]), 4))
    by_count = {row["count"]: row for row in summary["per_class"]}
    assert by_count[0]["n"] == 2 and by_count[0]["accuracy"] == 0.5
    assert by_count[0]["rmse"] == pytest.approx(math.sqrt(1 / 2))  # errors 0, +1
    assert by_count[1]["accuracy"] == 0.5 and by_count[1]["rmse"] == pytest.approx(math.sqrt(4 / 2))  # 0, +2
    assert by_count[2]["n"] == 0 and math.isnan(by_count[2]["accuracy"])
    table = format_per_class_table(summary)
    assert table.splitlines()[1].split()[:3] == ["0", "2", "0.5000"]


def test_confusion_summary_agrees_with_array_functions():
    rng = np.random.default_rng(5)
    true, pred = rng.integers(0, 6, 500), rng.integers(0, 6, 500)
    summary = summarize_confusion(confusion_matrix(true, pred, 6))
    assert summary["n"] == 500
    assert summary["accuracy"] == pytest.approx(accuracy(true, pred))
    assert summary["rmse"] == pytest.approx(rmse(true, pred))
    assert summary["mae"] == pytest.approx(mae(true, pred))
    assert summary["within_one"] == pytest.approx(within_one(true, pred))


def test_expected_decoding_minimises_squared_error_where_argmax_does_not():
    counts = range(6)
    probs = np.array([
        [0.4, 0.0, 0.0, 0.0, 0.0, 0.6],  # mean 3.0: argmax says 5, the squared-error optimum is 3
        [0.5, 0.5, 0.0, 0.0, 0.0, 0.0],  # mean 0.5: halves round up
        [0.0, 0.0, 0.0, 0.0, 0.1, 0.9],  # mean 4.9
    ])
    assert decode_argmax(probs, counts).tolist() == [5, 0, 5]
    assert decode_expected(probs, counts).tolist() == [3, 1, 5]
    # expected squared error of answering k for row 0: 0.4 k^2 + 0.6 (5 - k)^2, smallest at k = 3
    costs = [0.4 * k**2 + 0.6 * (5 - k) ** 2 for k in counts]
    assert int(np.argmin(costs)) == 3


def test_expected_decoding_is_clipped_to_the_count_range():
    assert decode_expected(np.array([[0.0, 0.0, 1.0]]), (0, 2, 4)).tolist() == [4]
    assert decode_expected(np.array([[1.0, 0.0, 0.0]]), (0, 2, 4)).tolist() == [0]


def test_evaluation_summary_reports_both_decodings():
    probs = np.array([[0.4, 0.0, 0.0, 0.0, 0.0, 0.6], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    summary = evaluation_summary(np.array([3, 3]), probs, range(6))
    assert summary["argmax"]["accuracy"] == 0.5 and summary["argmax"]["rmse"] == pytest.approx(math.sqrt(2))
    assert summary["expected"]["accuracy"] == 1.0 and summary["expected"]["rmse"] == 0.0


def test_mismatch_probability_in_range_and_above_range():
    p = np.array([0.1, 0.2, 0.3, 0.2, 0.1, 0.1])
    assert mismatch_probability(p, 2) == pytest.approx(0.7)  # 1 - p[2]
    assert mismatch_probability(p, 0) == pytest.approx(0.9)
    # above a closed model's range: no probability (p(count <= 5) would be 1 whatever the photo)
    assert math.isnan(mismatch_probability(p, 6)) and math.isnan(mismatch_probability(p * 0.9, 9))
    # float32 softmax output can sum to slightly more than 1: the result stays a probability
    rounded = np.array([0.1, 0.2, 0.3, 0.2, 0.1, 0.1 + 4e-7])
    assert 0.0 <= mismatch_probability(rounded, 5) <= 1.0
    assert mismatch_probability(np.array([0.0, 0, 0, 0, 0, 1 + 4e-7]), 5) == 0.0


def test_mismatch_probability_of_an_open_model_above_n_is_one_minus_p_open():
    p = np.array([0.05, 0.05, 0.1, 0.1, 0.1, 0.2, 0.4])  # the last class is "6+"
    assert mismatch_probability(p, 6, open_top=True) == pytest.approx(0.6)
    assert mismatch_probability(p, 13, open_top=True) == pytest.approx(0.6)  # 13 and 6 are both "6+"
    assert mismatch_probability(p, 5, open_top=True) == pytest.approx(0.8)
    other_photo = np.array([0.0, 0, 0, 0, 0, 0.05, 0.95])
    assert mismatch_probability(other_photo, 13, open_top=True) == pytest.approx(0.05)  # the photo matters


def test_mismatch_probability_is_vectorised():
    probs = np.array([[0.7, 0.3, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 0.2, 0.8]])
    out = mismatch_probability(probs, np.array([0, 3, 7]))
    assert isinstance(out, np.ndarray)
    assert out[:2].tolist() == pytest.approx([0.3, 0.5]) and math.isnan(out[2])
    assert mismatch_probability(probs, 1).tolist() == pytest.approx([0.7, 1.0, 1.0])
    with pytest.raises(ValueError, match="negative"):
        mismatch_probability(probs, np.array([0, -1, 2]))


def test_open_class_metrics_are_over_counts_truncated_at_n_plus_one():
    classes = CountClasses(5, open_top=True)
    true = np.array([classes.truncate(c) for c in (9, 6, 2, 12)])  # 6, 6, 2, 6
    probs = np.zeros((4, 7))
    probs[0, 6] = probs[1, 4] = probs[2, 2] = probs[3, 5] = 1.0  # predicted 6+, 4, 2, 5
    summary = evaluation_summary(true, probs, classes.class_to_count, classes.labels)["argmax"]
    assert summary["accuracy"] == pytest.approx(2 / 4)  # 9 -> 6+ is a hit
    assert summary["rmse"] == pytest.approx(math.sqrt((0 + 4 + 0 + 1) / 4))  # errors 0, -2, 0, -1 (12 counts as 6)
    assert summary["labels"][-1] == "6+" and len(summary["confusion_matrix"]) == 7
    assert summary["per_class"][6]["label"] == "6+" and summary["per_class"][6]["n"] == 3
    assert format_per_class_table(summary).splitlines()[-2].split()[:2] == ["6+", "3"]
    # the expected decoding rounds the mean of the truncated count, and may decode to the open class
    assert decode_expected(np.array([[0, 0, 0, 0, 0, 0.4, 0.6]]), classes.class_to_count).tolist() == [6]
