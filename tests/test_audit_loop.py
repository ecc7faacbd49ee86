"""The loop's figures (issue 13): queue precision per model version and decisions per analyst per day, as pure
functions of the decisions export; and the vocabulary every page and CSV uses."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from audit.overview import decisions_per_analyst_per_day, queue_precision
from audit.vocabulary import COLUMNS, count_text, decision_label, flag_text, legend_frame, screen_frame
from modeling.counts import CountClasses

T = dt.datetime(2026, 3, 2, 9, 0)


def _decisions(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame([{"review_id": i, "bin_id": b, "decision": d, "reviewer": r, "model_version_id": v,
                          "created_at": T + dt.timedelta(hours=h), "undone_at": T if undone else pd.NaT}
                         for i, (b, d, r, v, h, undone) in enumerate(rows, 1)])


def test_queue_precision_counts_each_bins_latest_standing_decision_per_model_version():
    decisions = _decisions([
        ("a", "dismiss", "ana", 1, 0, False),
        ("a", "confirm_mismatch", "ben", 1, 1, False),  # replaces ana's: a counts once, as confirmed
        ("b", "dismiss", "ana", 1, 2, False),
        ("c", "confirm_mismatch", "ana", 1, 3, True),  # undone: not counted
        ("a", "dismiss", "ana", 2, 30, False),  # a newer model's queue brought bin a back
        ("d", "unsure", "ben", 2, 31, False),
        ("e", "confirm_mismatch", "ben", None, 32, False),  # decided from the shell, no queue: not counted
    ])
    table = queue_precision(decisions, {1: "v1", 2: "v2"}).set_index("model")
    assert table.loc["v1", ["decided", "confirmed", "dismissed", "unsure"]].tolist() == [2, 1, 1, 0]
    assert table.loc["v1", "precision"] == 0.5
    assert table.loc["v2", ["decided", "confirmed", "dismissed", "unsure"]].tolist() == [2, 0, 1, 1]
    assert table.loc["v2", "precision"] == 0.0
    assert queue_precision(decisions.iloc[:0]).empty


def test_decisions_per_analyst_per_day_leave_out_undone_ones():
    decisions = _decisions([
        ("a", "dismiss", "ana", 1, 0, False), ("b", "confirm_mismatch", "ana", 1, 1, False),
        ("c", "confirm_mismatch", "ana", 1, 2, True), ("d", "unsure", "ben", 1, 3, False),
        ("e", "confirm_mismatch", "ben", 1, 26, False),
    ])
    table = decisions_per_analyst_per_day(decisions)
    assert [tuple(r) for r in table.itertuples(index=False)] == [
        (dt.date(2026, 3, 3), "ben", 1, 1), (dt.date(2026, 3, 2), "ana", 2, 1), (dt.date(2026, 3, 2), "ben", 1, 0)]


def test_the_vocabulary_shows_words_not_codes_and_never_none():
    classes = CountClasses(5, open_top=True)
    assert decision_label("confirm_mismatch") == "Confirmed mismatch" and decision_label(None) == "Undecided"
    assert count_text(None) == "–" and count_text(4.0) == "4" and count_text(9, classes) == "6+"
    frame = pd.DataFrame({"bin_id": ["x", "y"], "decision": [None, "dismiss"], "recounted_count": [None, 4.0],
                          "predicted_count": [6, 2], "predicted_count_differs": [pd.NA, True],
                          "note": [None, "ok"], "decided_at": [pd.NaT, T]})
    shown = screen_frame(frame, classes)
    text = shown.astype(str).to_string()
    assert "None" not in text and "nan" not in text.lower() and "NaT" not in text and "4.0" not in text
    assert list(shown.columns) == [COLUMNS[c].label for c in frame.columns]
    assert shown["Decision"].tolist() == ["Undecided", "Dismissed: record is right"]
    assert shown["Predicted"].tolist() == ["6+", "2"] and shown["Recount"].tolist() == ["–", "4"]
    # a flag carries its three numbers, so it cannot seem to contradict them
    assert flag_text(3, "3", 0.62, 0.5) == ("record 3 · predicted 3 · mismatch probability 62% (at or above the "
                                            "queue threshold 50%)")
    legend = legend_frame(["queued", "predicted_count_differs"])
    assert legend["meaning"].str.len().gt(20).all()


def test_a_running_training_job_shows_epoch_k_of_n_elapsed_and_time_left():
    from jobs import JobRecord

    started = T
    job = JobRecord(id="train-1", kind="training", backend="local", status="InProgress",
                    params={"training": {"epochs": 10}}, created_at=started, started_at=started,
                    metrics=[{"epoch": 1}, {"epoch": 2}])
    progress = job.progress(now=started + dt.timedelta(seconds=120))
    assert (progress.epoch, progress.epochs, progress.elapsed_s, progress.left_s) == (2, 10, 120.0, 480.0)
    assert progress.describe() == "epoch 2 of 10 · 2 min 00 s elapsed · about 8 min 00 s left"
    # resumed after epoch 6: only this job's epochs count towards the estimate
    resumed = JobRecord(id="train-2", kind="training", backend="local", status="InProgress",
                        params={"training": {"epochs": 10}}, created_at=started, started_at=started,
                        metrics=[{"epoch": 8}], output={"resumed_after_epoch": 6})
    assert resumed.progress(now=started + dt.timedelta(seconds=60)).left_s == 60.0
    before_first = JobRecord(id="train-3", kind="training", backend="local", status="InProgress",
                             params={"training": {"epochs": 3}}, created_at=started, started_at=started)
    assert before_first.progress(now=started + dt.timedelta(seconds=5)).describe() == "epoch 0 of 3 · 5 s elapsed"
    assert JobRecord(id="t", kind="tuning", backend="local", status="InProgress", params={}, created_at=started,
                     started_at=started).progress() is None
