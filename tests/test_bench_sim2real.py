"""The sim-to-real benchmark's plumbing, and the demo recipe's stored real-photo figure where the README shows it.

The figure itself comes from training the full recipe (minutes), so no test recomputes it: these check that the
benchmark reads real photos and scores them the way docs/benchmarks.md describes, and that what README and the
dashboard say is the stored measurement.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from app.demo_recipe import REAL_PHOTO_CHECK, DemoPlan, trained_by_demo_recipe
from bench.bench_sim2real import bootstrap_interval, real_photos, score
from modeling.metrics import accuracy
from tests.modeling_fixtures import tiny_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory) -> Path:
    return tiny_model(tiny_dataset, tmp_path_factory)


def test_abid_sample_splits_into_66_bins_within_range_and_34_above(abid_sample, tmp_path, tiny_model_dir):
    within, over = real_photos(abid_sample, tmp_path)
    assert len(within) == 66 and len(over) == 34
    assert all(0 <= c <= 5 and Path(p).is_file() and str(p).startswith(str(tmp_path)) for p, c in within)
    assert all(c > 5 and Path(p).is_file() for p, c in over)
    report = score(tiny_model_dir, within[::6], over[::6])  # a few photos: the scoring path, not the figure
    n = len(within[::6])
    assert report["n"] == n and sum(report["true_histogram"]) == n
    for name in ("argmax", "expected"):
        r = report[name]
        assert np.sum(r["confusion"]) == n
        assert r["accuracy"] == pytest.approx(np.trace(r["confusion"]) / n)
        assert r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
    assert report["over"]["n"] == len(over[::6]) == sum(report["over"]["predicted_histogram"])
    true = np.array([c for _, c in within])  # README's always-3 baseline on these bins
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"always answering 3 scores {np.mean(true == 3):.1%} and RMSE {np.sqrt(np.mean((true - 3) ** 2)):.2f}" in readme


def test_count_folders_are_read_as_real_photos(tmp_path, tiny_dataset):
    within, over = real_photos(tiny_dataset / "val", tmp_path)
    assert within and not over
    assert all(Path(p).parent.name == str(c) for p, c in within)
    with pytest.raises(SystemExit, match="no photos"):
        real_photos(tmp_path, tmp_path)


def test_bootstrap_interval_is_wide_for_66_bins_and_narrow_for_many():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 6, 66)
    pred = np.where(rng.random(66) < 0.45, true, (true + 1) % 6)
    low, high = bootstrap_interval(true, pred, accuracy, rounds=500)
    assert low < accuracy(true, pred) < high and 0.15 < high - low < 0.3  # about +-12 points on 66 bins
    big_true = np.tile(true, 50)
    big_pred = np.tile(pred, 50)
    low, high = bootstrap_interval(big_true, big_pred, accuracy, rounds=200)
    assert high - low < 0.05


def test_the_real_photo_figure_is_only_claimed_for_the_demo_recipe():
    full = {**DemoPlan().training_args(), "train": "/home/u/binaudit/workspace/demo/dataset/train"}
    assert trained_by_demo_recipe(full)
    assert not trained_by_demo_recipe({**full, "epochs": full["epochs"] + 1})
    assert not trained_by_demo_recipe({**full, "train": "/data/abid/dataset/train"})
    assert not trained_by_demo_recipe({**DemoPlan.tiny().training_args(), "train": full["train"]})


def test_readme_states_the_stored_real_photo_figure_beside_the_synthetic_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_run = readme[readme.index("**First run of `make run`**"):readme.index("## The dashboard")]
    assert f"{REAL_PHOTO_CHECK.accuracy:.1%}" in first_run and f"RMSE {REAL_PHOTO_CHECK.rmse:.2f}" in first_run
    assert f"{REAL_PHOTO_CHECK.photos} real ABID photos" in first_run and REAL_PHOTO_CHECK.command in first_run
    assert re.search(r"\d+% validation accuracy on synthetic bins", first_run)
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert f"real_accuracy={REAL_PHOTO_CHECK.accuracy:.3f} real_rmse={REAL_PHOTO_CHECK.rmse:.3f}" in benchmarks
