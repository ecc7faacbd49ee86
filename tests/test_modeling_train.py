"""train.py end to end: the acceptance command, SageMaker's environment, file vs module runs, resume, seeds."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from jobs.params import trial_value
from modeling.metric_log import BEST_DEFINITIONS, EPOCH_METRICS, parse_metric_log
from modeling.train import main
from tests.modeling_fixtures import REPO, TINY_ARGS, run_python, subprocess_env, train_cli_args


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch=")]


@pytest.mark.slow
def test_acceptance_command_trains_two_epochs_and_writes_every_artifact(tiny_dataset, tmp_path):
    model_dir = tmp_path / "M"
    result = run_python(["-m", "modeling.train", "--train", str(tiny_dataset / "train"), "--val",
                         str(tiny_dataset / "val"), "--model-dir", str(model_dir), "--epochs", "2", "--arch",
                         "resnet18", "--image-size", "64"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    epochs = parse_metric_log(result.stdout)
    assert [e["epoch"] for e in epochs] == [1, 2] and len(_epoch_lines(result.stdout)) == 2
    assert all(set(e) == {"epoch", *EPOCH_METRICS} for e in epochs)
    # each epoch line ends with the kept model's figures: SageMaker's tuner reads their latest value, the local
    # tuner ranks by trial_value, and both are the best epoch's
    best_lines = _epoch_lines(result.stdout)
    assert all(" best_val_accuracy=" in line and " best_val_rmse=" in line for line in best_lines)
    latest = {d["Name"]: float(re.findall(d["Regex"], best_lines[-1])[0]) for d in BEST_DEFINITIONS}
    # the objective (--best-metric, val_accuracy by default) is trial_value's; the other figure is the same kept
    # epoch's, not its own best over the epochs
    assert latest["best_val_accuracy"] == pytest.approx(trial_value(epochs, "val_accuracy"), abs=1e-9)
    kept = [e for e in epochs if e["val_accuracy"] == pytest.approx(latest["best_val_accuracy"], abs=1e-9)]
    assert any(e["val_rmse"] == pytest.approx(latest["best_val_rmse"], abs=1e-9) for e in kept), (latest, epochs)

    state = torch.load(model_dir / "model.pth", weights_only=True)
    # tiny_dataset has bins above 5 in its "6+" folder: --top-class auto makes the model open, 0..5 and "6+"
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and state["fc.weight"].shape[0] == 7

    config = _json(model_dir / "model_config.json")
    assert config["arch"] == "resnet18" and config["num_classes"] == 7 and config["max_count"] == 5
    assert config["top_class"] == "open" and config["class_labels"] == ["0", "1", "2", "3", "4", "5", "6+"]
    assert config["class_to_count"] == [0, 1, 2, 3, 4, 5, 6] and config["image_size"] == 64
    assert config["resolved_args"]["top_class"] == "auto" and config["resolved_args"]["resolved_top_class"] == "open"
    assert config["resize_mode"] == "squash" and len(config["mean"]) == len(config["std"]) == 3
    assert config["resolved_args"]["epochs"] == 2 and config["resolved_args"]["arch"] == "resnet18"
    assert len(config["dataset_fingerprint"]) == 64 and len(config["manifest_sha256"]) == 64
    assert config["torch_version"] == torch.__version__ and config["created"]

    metrics = _json(model_dir / "metrics.json")
    n_val = sum(1 for _ in (tiny_dataset / "val").glob("*/*.jpg"))
    final = metrics["final"]
    best_row = metrics["history"][metrics["best_epoch"] - 1]
    assert len(metrics["history"]) == 2
    assert final["accuracy"] == best_row["val_accuracy"] == config["final_metrics"]["val_accuracy"]
    assert final["rmse"] == best_row["val_rmse"] == config["final_metrics"]["val_rmse"]
    assert {"mae", "within_one", "per_class", "confusion_matrix"} <= set(final)
    assert sum(map(sum, final["confusion_matrix"])) == n_val == final["n"]
    assert [row["count"] for row in final["per_class"]] == list(range(7)) and final["per_class"][6]["label"] == "6+"
    assert final["labels"][-1] == "6+" and metrics["top_class"] == "open"
    assert set(final["decodings"]) == {"argmax", "expected"}
    assert final["decodings"]["expected"]["rmse"] == best_row["val_rmse_expected"]

    with (model_dir / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["val_accuracy"]) == pytest.approx(epochs[1]["val_accuracy"], abs=5e-5)
    assert _json(model_dir / "args.json")["image_size"] == 64
    assert (tmp_path / "output" / "metrics.json").is_file()  # the local fallback of SM_OUTPUT_DATA_DIR


@pytest.mark.slow
def test_sagemaker_environment_alone_supplies_every_path(tiny_dataset, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = subprocess_env(
        SM_CHANNEL_TRAIN=str(tiny_dataset / "train"), SM_CHANNEL_VAL=str(tiny_dataset / "val"),
        SM_CHANNEL_TEST=str(tiny_dataset / "test"), SM_MODEL_DIR=str(tmp_path / "opt-ml-model"),
        SM_OUTPUT_DATA_DIR=str(tmp_path / "opt-ml-output"),
    )
    result = run_python(["-m", "modeling.train", *TINY_ARGS, "--sagemaker_submit_directory", "s3://b/p"],
                        cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    assert "ignoring unknown arguments: --sagemaker_submit_directory s3://b/p" in result.stdout
    assert (tmp_path / "opt-ml-model" / "model.pth").is_file()
    metrics = _json(tmp_path / "opt-ml-model" / "metrics.json")
    assert metrics["test"]["n"] == sum(1 for _ in (tiny_dataset / "test").glob("*/*.jpg"))
    assert (tmp_path / "opt-ml-output" / "summary.csv").is_file()
    assert list(cwd.iterdir()) == []  # nothing fell back to a local default


@pytest.mark.slow
def test_module_and_file_runs_behave_the_same_and_seeds_repeat(tiny_dataset, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = subprocess_env()
    del env["PYTHONPATH"]  # the file run must find its package by itself
    as_file = run_python([str(REPO / "modeling" / "train.py"), *train_cli_args(tiny_dataset, tmp_path / "a")],
                         cwd=outside, env=env)
    as_module = run_python(["-m", "modeling.train", *train_cli_args(tiny_dataset, tmp_path / "b")], cwd=outside)
    assert as_file.returncode == 0, as_file.stderr
    assert as_module.returncode == 0, as_module.stderr
    assert _epoch_lines(as_file.stdout) == _epoch_lines(as_module.stdout) != []
    assert torch.equal(torch.load(tmp_path / "a" / "model.pth", weights_only=True)["fc.weight"],
                       torch.load(tmp_path / "b" / "model.pth", weights_only=True)["fc.weight"])


def _history(model_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in _json(model_dir / "metrics.json")["history"]]


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(tiny_dataset, tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        main(train_cli_args(tiny_dataset, tmp_path / name, "--seed", seed))
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
    assert _history(tmp_path / "a")[0]["train_loss"] != _history(tmp_path / "c")[0]["train_loss"]


@pytest.mark.slow
def test_interrupted_run_resumes_at_the_next_epoch_and_matches_an_uninterrupted_one(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "checkpoints"
    main(train_cli_args(tiny_dataset, tmp_path / "m", "--checkpoint-dir", str(ckpt)))  # "killed" after epoch 1
    first = capsys.readouterr().out
    assert (ckpt / "checkpoint.pth").is_file() and _epoch_lines(first)[0].startswith("epoch=1 ")

    main(train_cli_args(tiny_dataset, tmp_path / "m", "--checkpoint-dir", str(ckpt), "--epochs", "2"))
    resumed = capsys.readouterr().out
    assert "resuming from" in resumed and "after epoch 1" in resumed
    assert [line.split()[0] for line in _epoch_lines(resumed)] == ["epoch=2"]
    assert [row["epoch"] for row in _history(tmp_path / "m")] == [1, 2]

    checkpoint = torch.load(ckpt / "checkpoint.pth", weights_only=True)
    assert checkpoint["epoch"] == 2 and {"model", "optimizer", "scheduler", "scaler", "rng", "best"} <= set(checkpoint)

    main(train_cli_args(tiny_dataset, tmp_path / "straight", "--epochs", "2"))
    straight = capsys.readouterr().out
    # epoch 1 has the same lr under a 1- and a 2-epoch cosine plan, and the resumed run re-plans for 2 epochs,
    # so with model, optimizer and RNG state restored its epoch 2 is the uninterrupted run's epoch 2
    assert "re-planned for 2 epochs" in resumed
    assert _epoch_lines(straight)[1] == _epoch_lines(resumed)[0]


def test_checkpoint_of_another_model_is_refused_clearly(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "checkpoints"
    main(train_cli_args(tiny_dataset, tmp_path / "m", "--checkpoint-dir", str(ckpt)))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(train_cli_args(tiny_dataset, tmp_path / "m", "--checkpoint-dir", str(ckpt), "--image-size", "48"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the checkpoint") and "image_size: checkpoint 32, now 48" in err


def test_bad_data_folders_are_one_line_errors(tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(train_cli_args(tmp_path / "missing", tmp_path / "m"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: data folder not found")

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dataset / "train", bad / "train")
    shutil.copytree(tiny_dataset / "val", bad / "val")
    (bad / "train" / "7").mkdir()
    with pytest.raises(SystemExit):
        main(train_cli_args(bad, tmp_path / "m"))
    assert "folder '7'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
