"""Mismatch scoring and queue rules: pure functions on hand-made distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.mismatch import average_precision, precision_recall_at, queue_rules, score_distributions
from modeling.counts import CountClasses

P = np.array([
    [0.05, 0.10, 0.60, 0.20, 0.05, 0.00],  # confident 2
    [0.00, 0.05, 0.40, 0.35, 0.20, 0.00],  # unsure between 2 and 3
    [0.00, 0.00, 0.00, 0.00, 0.10, 0.90],  # confident 5
])


def test_mismatch_probability_is_one_minus_p_of_the_expected_count():
    table = score_distributions(P, [2, 2, 3])
    assert table["mismatch_probability"].tolist() == pytest.approx([0.40, 0.60, 1.00])
    assert table["p_expected"].tolist() == pytest.approx([0.60, 0.40, 0.00])
    assert table["predicted_count"].tolist() == [2, 2, 5]
    # the argmax rule sees no difference between bin 0 and bin 1; the posterior ranks bin 1 higher
    assert table["argmax_differs"].tolist() == [False, False, True]


def test_a_record_beyond_a_closed_models_range_gets_no_probability_and_no_flag():
    table = score_distributions(P, [7, 6, 5])
    # p(count <= 5) is 1 for every photo: a number here would be fixed by construction, so there is none
    assert table["mismatch_probability"].isna().tolist() == [True, True, False]
    assert table["mismatch_probability"][2] == pytest.approx(0.10)
    assert table["p_expected"].isna().tolist() == [True, True, False]
    assert table["argmax_differs"].isna().tolist() == [True, True, False]
    assert table["beyond_range"].tolist() == [True, True, False]
    assert table["expected_count"].tolist() == [7, 6, 5]


OPEN = CountClasses(5, open_top=True)
P_OPEN = np.array([
    [0.00, 0.00, 0.00, 0.05, 0.15, 0.30, 0.50],  # probably 6+
    [0.00, 0.00, 0.00, 0.00, 0.02, 0.08, 0.90],  # confident 6+
    [0.05, 0.10, 0.60, 0.20, 0.05, 0.00, 0.00],  # confident 2
])


def test_an_open_model_checks_a_record_above_n_against_its_open_class():
    table = score_distributions(P_OPEN, [9, 6, 12], classes=OPEN)
    # 1 - p(6+): depends on the photo, never 1.0 by construction
    assert table["mismatch_probability"].tolist() == pytest.approx([0.50, 0.10, 1.0])
    assert table["beyond_range"].tolist() == [False, False, False]
    assert table["predicted_count"].tolist() == [6, 6, 2]  # 6 is the open class: shown as "6+"
    assert table["argmax_differs"].tolist() == [False, False, True]
    exact = score_distributions(P_OPEN, [5, 2, 2], classes=OPEN)
    assert exact["mismatch_probability"].tolist() == pytest.approx([0.70, 1.0, 0.40])
    assert exact["argmax_differs"].tolist() == [True, True, False]


def test_the_open_class_reads_n_plus_one_plus_and_counts_as_n_plus_one():
    assert OPEN.labels == ("0", "1", "2", "3", "4", "5", "6+") and OPEN.num_classes == 7
    assert [OPEN.label(c) for c in (5, 6, 11)] == ["5", "6+", "6+"]
    assert [OPEN.truncate(c) for c in (5, 6, 11)] == [5, 6, 6]
    closed = CountClasses(5)
    assert closed.labels[-1] == "5" and closed.beyond_range(6) and not OPEN.beyond_range(60)
    with pytest.raises(ValueError, match="beyond"):
        closed.truncate(6)
    # a probability row of the wrong width for the model is refused, not misread
    with pytest.raises(ValueError, match="7 classes"):
        score_distributions(P, [1, 2, 3], classes=OPEN)


def test_unknown_expected_count_gives_no_mismatch_probability():
    table = score_distributions(P, [None, 3, None])
    assert table["mismatch_probability"].isna().tolist() == [True, False, True]
    assert table["argmax_differs"].isna().tolist() == [True, False, True]
    assert table["expected_count"].isna().tolist() == [True, False, True]


def test_decoded_count_minimises_expected_squared_error():
    table = score_distributions(np.array([[0.5, 0.0, 0.0, 0.0, 0.0, 0.5]]), [0])
    # argmax ties to 0; the mean is 2.5, rounded up to 3: a middle guess has the lower expected squared error
    assert table["predicted_count"].tolist() == [0] and table["decoded_count"].tolist() == [3]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        score_distributions(np.array([[0.5, 0.1, 0, 0, 0, 0]]), [1])
    with pytest.raises(ValueError, match="2 expected counts"):
        score_distributions(P, [1, 2])
    with pytest.raises(ValueError, match="negative"):
        score_distributions(P, [1, -1, 2])


def _candidates() -> pd.DataFrame:
    t = pd.Timestamp("2026-11-20 10:00")
    return pd.DataFrame({
        "bin_id": ["a", "b", "c", "d", "e", "f"],
        "mismatch_probability": [0.9, 0.7, 0.3, 0.95, 0.8, np.nan],
        "predicted_at": [t] * 6,
        "decided_at": [pd.NaT, pd.NaT, pd.NaT, t - pd.Timedelta("1h"), t + pd.Timedelta("1h"), pd.NaT],
        "queued": [False, False, True, False, False, False],
    })


def test_queue_rules_threshold_decisions_and_hand_queued():
    queue = queue_rules(_candidates(), threshold=0.5)
    # d was decided before its newer prediction: back in; e was decided after: out; c was queued by hand;
    # f has no probability (no record, or beyond the model's range): never in on its own, even at threshold 0
    assert queue["bin_id"].tolist() == ["d", "a", "b", "c"]
    assert "f" not in queue_rules(_candidates(), threshold=0.0)["bin_id"].tolist()
    by_hand = _candidates().assign(queued=[False] * 5 + [True])
    assert queue_rules(by_hand, threshold=0.5)["bin_id"].tolist() == ["d", "a", "b", "f"]


def test_queue_rules_budget_counts_todays_decisions():
    assert queue_rules(_candidates(), threshold=0.5, budget=3)["bin_id"].tolist() == ["d", "a", "b"]
    assert queue_rules(_candidates(), threshold=0.5, budget=3, decided_today=2)["bin_id"].tolist() == ["d"]
    assert queue_rules(_candidates(), threshold=0.5, budget=3, decided_today=5).empty


def test_precision_recall_and_average_precision():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    truth = np.array([True, False, True, False, True])
    assert precision_recall_at(scores, truth, 2) == pytest.approx((0.5, 1 / 3))
    assert average_precision(scores, truth) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert average_precision(scores, ~np.zeros(5, dtype=bool)) == pytest.approx(1.0)
    perfect = average_precision(np.array([3.0, 2.0, 1.0]), np.array([True, True, False]))
    assert perfect == pytest.approx(1.0)
