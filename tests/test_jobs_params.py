"""Job parameters, the shared search space and the SageMaker source package (no jobs run here)."""

from __future__ import annotations

import io
import math
import random
import subprocess
import sys
import tarfile

import pytest

import modeling
from jobs import JobError, SearchSpaceError, TrainingParams, TuningParams, trial_value
from jobs.params import HYPERPARAMETER_FIELDS, RESERVED_FLAGS, flag_name
from jobs.sagemaker.packaging import build_source_package
from jobs.search_space import (
    DEFAULT_SEARCH_SPACE,
    Categorical,
    Continuous,
    Integer,
    sample_near,
    sample_random,
    space_from_json,
    space_to_json,
)
from modeling.train import get_args_parser

# values different from every default, so a field that never reaches train.py cannot pass by accident
NON_DEFAULT = dict(arch="resnet34", epochs=7, batch_size=12, lr=0.0123, momentum=0.8, weight_decay=0.0005,
                   optimizer="adamw", lr_schedule="step", lr_step_size=2, lr_gamma=0.5, image_size=96,
                   loss="ordinal", ordinal_weight=2.5, label_smoothing=0.1, seed=42, pretrained="imagenet",
                   workers=3, max_count=4, top_class="closed", best_metric="val_rmse")


def test_every_hyperparameter_field_is_a_train_py_flag_and_arrives_unchanged():
    assert set(NON_DEFAULT) == set(HYPERPARAMETER_FIELDS)
    params = TrainingParams(**NON_DEFAULT)
    parser = get_args_parser()
    flags = parser._option_string_actions
    for name in HYPERPARAMETER_FIELDS:
        assert f"--{flag_name(name)}" in flags, f"{name} has no train.py flag"
    args, unknown = parser.parse_known_args(params.to_cli_args())
    assert unknown == []
    for name, value in NON_DEFAULT.items():
        assert getattr(args, name) == value, name
    assert params.to_hyperparameters()["batch-size"] == "12"


def test_training_params_defaults_are_train_py_defaults():
    args = get_args_parser().parse_args([])
    params = TrainingParams()
    for name in HYPERPARAMETER_FIELDS:
        if name != "workers":  # None: leave train.py's machine-dependent default
            assert getattr(params, name) == getattr(args, name), name
    assert "workers" not in params.to_hyperparameters()


def test_extra_flags_reach_train_py_and_reserved_ones_are_refused():
    params = TrainingParams(extra={"--device": "cpu", "weights-path": "w.pth"})
    assert params.to_cli_args()[-4:] == ["--device", "cpu", "--weights-path", "w.pth"]
    params.check()
    for flag in (*RESERVED_FLAGS, "batch-size", "lr-gamma"):
        with pytest.raises(JobError, match="extra may not hold"):
            TrainingParams(extra={flag: "x"})
    with pytest.raises(JobError, match="no flag"):
        TrainingParams(extra={"no-such-flag": "1"}).check()


def test_invalid_values_are_refused_with_the_allowed_ones():
    with pytest.raises(JobError, match="resnet18"):
        TrainingParams(arch="vgg").check()
    with pytest.raises(JobError, match="positive"):
        TrainingParams(epochs=0).check()
    with pytest.raises(JobError, match="--device: invalid choice 'gpu'"):
        TrainingParams(extra={"device": "gpu"}).check()


def test_checking_job_parameters_imports_neither_train_py_nor_torch():
    """The settings' own parsers decide, so the dashboard and the CLI validate a job without loading torch (and
    importing `jobs` brings neither boto3 nor the SageMaker SDK)."""
    code = ("import sys\nfrom jobs import JobError, TrainingParams, TuningParams\n"
            "TuningParams(base=TrainingParams(epochs=3)).check()\n"
            "try:\n    TrainingParams(lr=0).check()\nexcept JobError as exc:\n    print(exc)\n"
            "heavy = ('torch', 'boto3', 'sagemaker')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m == 'modeling.train'))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["invalid training parameters: --lr must be a positive number, got 0", "[]"]


def test_training_params_round_trip_through_json_dicts():
    params = TrainingParams(train="a", val="b", recounts="r", instance_count=2, extra={"device": "cpu"},
                            **NON_DEFAULT)
    assert TrainingParams.from_dict(params.to_dict()) == params
    with pytest.raises(JobError, match="unknown training parameter"):
        TrainingParams.from_dict({"learning_rate": 1})
    # a job recorded before recounts travelled as a folder still loads (to list, show or resume it)
    assert TrainingParams.from_dict({"epochs": 2, "include_recounts": True}) == TrainingParams(epochs=2)


def test_tuning_params_validate_and_round_trip():
    tp = TuningParams(base=TrainingParams(), objective="val_rmse", max_jobs=5, max_parallel_jobs=2,
                      strategy="random", early_stopping=True, seed=3)
    assert tp.objective_type == "Minimize"
    assert tp.base.best_metric == "val_rmse"  # the model train.py keeps is the one the objective ranks
    assert tp.objective_metric == "best_val_rmse"  # SageMaker ranks by the kept model's figure, as trial_value does
    assert TuningParams.from_dict(tp.to_dict()) == tp
    with pytest.raises(JobError, match="val_accuracy, val_rmse"):
        TuningParams(base=TrainingParams(), objective="loss")
    with pytest.raises(JobError, match="random, bayesian"):
        TuningParams(base=TrainingParams(), strategy="grid")
    with pytest.raises(JobError, match="tunable"):
        TuningParams(base=TrainingParams(), search_space={"train": Categorical(("x",))})


def test_trial_value_is_the_best_epoch_by_the_objective():
    metrics = [{"epoch": 1, "val_accuracy": 0.4, "val_rmse": 1.2}, {"epoch": 2, "val_accuracy": 0.6, "val_rmse": 1.4},
               {"epoch": 3, "val_accuracy": 0.5, "val_rmse": math.nan}]
    assert trial_value(metrics, "val_accuracy") == 0.6
    assert trial_value(metrics, "val_rmse") == 1.2
    assert trial_value([], "val_accuracy") is None


# ---------------------------------------------------------------- search space

def test_sampling_is_seeded_and_within_bounds():
    space = DEFAULT_SEARCH_SPACE
    first = [sample_random(space, random.Random(5)) for _ in range(3)]
    again = [sample_random(space, random.Random(5)) for _ in range(3)]
    assert first == again
    for draw in (sample_random(space, random.Random(i)) for i in range(50)):
        assert 1e-4 <= draw["lr"] <= 1e-1 and 1e-6 <= draw["weight_decay"] <= 1e-3
        assert 16 <= draw["batch_size"] <= 64 and isinstance(draw["batch_size"], int)
        assert draw["arch"] in ("resnet18", "resnet34", "resnet50") and draw["image_size"] in (160, 224)


def test_log_scale_draws_cover_every_decade_evenly():
    rng = random.Random(0)
    lrs = [Continuous(1e-4, 1e-1, log=True).sample(rng) for _ in range(3000)]
    per_decade = [sum(lo <= v < lo * 10 for v in lrs) for lo in (1e-4, 1e-3, 1e-2)]
    assert all(900 < n < 1100 for n in per_decade), per_decade


def test_draws_near_the_best_stay_close_and_in_bounds():
    space = {"lr": Continuous(1e-4, 1e-1, log=True), "batch_size": Integer(16, 64), "arch": Categorical(("a", "b"))}
    rng = random.Random(1)
    best = {"lr": 0.01, "batch_size": 32, "arch": "a"}
    draws = [sample_near(space, best, rng) for _ in range(200)]
    assert all(1e-4 <= d["lr"] <= 1e-1 and 16 <= d["batch_size"] <= 64 for d in draws)
    assert sum(1e-3 < d["lr"] < 1e-1 for d in draws) > 150  # mostly within a decade of the best
    assert sum(d["arch"] == "a" for d in draws) > 120


def test_search_space_json_round_trip_and_errors():
    assert space_from_json(space_to_json(DEFAULT_SEARCH_SPACE)) == DEFAULT_SEARCH_SPACE
    with pytest.raises(SearchSpaceError, match="continuous, integer, categorical"):
        space_from_json({"lr": {"type": "uniform"}})
    with pytest.raises(SearchSpaceError, match="lacks 'high'"):
        space_from_json({"lr": {"type": "continuous", "low": 1}})
    with pytest.raises(SearchSpaceError, match="low > 0"):
        Continuous(0.0, 1.0, log=True)


# ---------------------------------------------------------------- the SageMaker source package

def test_source_package_holds_exactly_the_container_modules_and_is_deterministic(tmp_path):
    one = build_source_package(tmp_path / "a")
    two = build_source_package(tmp_path / "b")
    expected = {"train.py", "inference.py", *(f"modeling/{name}" for name in modeling.CONTAINER_MODULES)}
    assert set(one.files) == expected
    assert one.digest == two.digest
    assert one.tarball.read_bytes() == two.tarball.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(one.tarball.read_bytes()), mode="r:gz") as tar:
        assert {m.name for m in tar.getmembers()} == expected


@pytest.mark.slow
def test_staged_shims_run_on_their_own(tmp_path):
    package = build_source_package(tmp_path)
    # what the containers do: import the handlers from inference.py, run train.py as a script (here: --help)
    code = ("import runpy, sys; import inference; print('handlers from', inference.model_fn.__module__); "
            "sys.argv = ['train.py', '--help']; runpy.run_path('train.py', run_name='__main__')")
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}  # no PYTHONPATH: only the staged folder is importable
    run = subprocess.run([sys.executable, "-c", code], cwd=package.folder, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "handlers from modeling.inference" in run.stdout and "--batch-size" in run.stdout
