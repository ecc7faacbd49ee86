"""The local tuner's decisions (strategy, early stopping, best trial) on hand-made trial records: no training."""

from __future__ import annotations

import datetime as dt
import random

from jobs import Categorical, Continuous, JobRecord, TrainingParams, TuningParams
from jobs.local.tuner import initial_random_trials, median_rule, next_values, summarize
from jobs.search_space import sample_near, sample_random

SPACE = {"lr": Continuous(1e-4, 1e-1, log=True), "arch": Categorical(("resnet18", "resnet34"))}


def _trial(number: int, values: dict, rmse: list[float], status: str = "Completed") -> JobRecord:
    metrics = [{"epoch": e + 1, "val_rmse": v, "val_accuracy": 1 - v / 3} for e, v in enumerate(rmse)]
    return JobRecord(id=f"train-{number}", kind="training", backend="local", status=status,
                     params={"trial": {"number": number, "values": values}}, created_at=dt.datetime(2026, 1, 1),
                     metrics=metrics, parent_id="tune-1", output={"model_version": f"v{number}",
                                                                 "model_version_id": number})


def _tuning(strategy: str = "bayesian", max_jobs: int = 6) -> TuningParams:
    return TuningParams(base=TrainingParams(), search_space=SPACE, objective="val_rmse", max_jobs=max_jobs,
                        strategy=strategy)


def test_bayesian_strategy_explores_first_then_draws_around_the_best():
    tp = _tuning(max_jobs=6)
    assert initial_random_trials(6) == 2 and initial_random_trials(12) == 4
    finished = [_trial(1, {"lr": 0.001, "arch": "resnet18"}, [1.5])]
    assert next_values(tp, random.Random(3), finished) == sample_random(SPACE, random.Random(3))
    finished.append(_trial(2, {"lr": 0.05, "arch": "resnet34"}, [1.9, 1.1]))  # best: its best epoch, 1.1
    finished.append(_trial(3, {"lr": 0.02, "arch": "resnet18"}, [1.3], status="Failed"))  # never counts
    assert next_values(tp, random.Random(3), finished) == sample_near(SPACE, {"lr": 0.05, "arch": "resnet34"},
                                                                      random.Random(3))
    assert next_values(_tuning("random"), random.Random(3), finished) == sample_random(SPACE, random.Random(3))


def test_median_rule_stops_a_trial_behind_the_finished_ones():
    tp = _tuning()
    finished = [_trial(1, {}, [1.0, 0.8]), _trial(2, {}, [1.2, 0.9])]
    rule = median_rule(tp, finished)
    assert rule([{"epoch": 1, "val_rmse": 1.05}]) is None  # better than the median 1.1 after epoch 1
    reason = rule([{"epoch": 1, "val_rmse": 1.3}])
    assert reason and reason.startswith("stopped early: val_rmse 1.3000 after epoch 1")
    assert median_rule(tp, finished[:1])([{"epoch": 1, "val_rmse": 9.0}]) is None  # too few to judge


def test_summary_names_the_best_trial_by_the_objective():
    trials = [_trial(1, {"lr": 0.01}, [1.4, 1.2]), _trial(2, {"lr": 0.02}, [0.9, 1.3]),
              _trial(3, {"lr": 0.03}, [0.5], status="Stopped")]
    out = summarize(_tuning(), trials)
    assert out["best_trial"]["job_id"] == "train-2" and out["best_trial"]["value"] == 0.9
    assert out["model_version_id"] == 2 and out["objective_type"] == "Minimize"
    assert [t["value"] for t in out["trials"]] == [1.2, 0.9, None]
