"""`python -m jobs train|tune|list|show|log|resume|models ...` as a user runs them (subprocesses, tiny data, local
backend)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from binaudit.workspace import Workspace
from jobs import get_job, list_jobs, trial_value
from modeling import registry
from tests.modeling_fixtures import REPO, subprocess_env
from tests.test_jobs_support import JOB_TIMEOUT_SECONDS, wait_for

TINY = ["--arch", "resnet18", "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "0"]


def _run(args: list[str], workspace, timeout: int = 300, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(BINAUDIT_WORKSPACE=str(workspace), BINAUDIT_SECRETS=str(workspace / "no-secrets.toml"),
                         BINAUDIT_BACKEND="local", **env_extra)
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _data(dataset) -> list[str]:
    return ["--train", str(dataset / "train"), "--val", str(dataset / "val")]


@pytest.mark.slow
def test_train_then_models_lists_the_version_with_its_metrics(tiny_dataset, tmp_path):
    ws = tmp_path / "ws"
    train = _run(["train", *_data(tiny_dataset), *TINY], ws)
    assert train.returncode == 0, train.stderr
    assert re.search(r"^epoch=1 .*val_accuracy=", train.stdout, re.M)  # progress streamed from the log
    registered = re.search(r"registered model version (v\d+) \(val accuracy ([\d.]+), val RMSE ([\d.]+)\) "
                           r"from job (train-\S+)", train.stdout)
    assert registered, train.stdout
    name, accuracy, rmse, job_id = registered.groups()

    models = _run(["models"], ws)
    assert models.returncode == 0, models.stderr
    row = next(line for line in models.stdout.splitlines() if name in line.split())
    # image size, classes (tiny_dataset's "6+" folder makes the model open), val accuracy, val RMSE, job
    assert row.split()[-5:] == ["32", "0-5,6+", accuracy, rmse, job_id]
    assert "resnet18" in row

    jobs = _run(["list", "--refresh"], ws)
    assert job_id in jobs.stdout and "Completed" in jobs.stdout
    show = _run(["show", job_id], ws)
    assert "training on local: Completed" in show.stdout and "epoch 1" in show.stdout
    log = _run(["log", job_id, "--lines", "3"], ws)
    assert "done: best epoch 1" in log.stdout

    promoted = _run(["models", "promote", name], ws)
    assert promoted.returncode == 0 and f"{name}: active" in promoted.stdout
    assert f"* {name}" in _run(["models"], ws).stdout


@pytest.mark.slow
def test_tune_runs_three_trials_and_reports_the_best(tiny_dataset, tmp_path):
    ws = tmp_path / "ws"
    space = json.dumps({"lr": {"type": "continuous", "low": 0.001, "high": 0.2, "log": True},
                        "batch_size": {"type": "integer", "low": 8, "high": 24}})
    tune = _run(["tune", *_data(tiny_dataset), *TINY, "--max-jobs", "3", "--max-parallel-jobs", "2",
                 "--search-space", space, "--objective", "val_rmse", "--strategy", "bayesian"], ws)
    assert tune.returncode == 0, tune.stderr
    best = re.search(r"^best trial: (train-\S+) val_rmse=([\d.]+) (\{.*\}) -> model version (v\d+)$", tune.stdout,
                     re.M)
    assert best, tune.stdout
    tuning_id = re.search(r"^started tuning job (tune-\S+) on local$", tune.stdout, re.M).group(1)

    # the jobs behind it: three completed trials of the tuning job, each with its parsed metrics and a version
    engine = Workspace(ws, f"sqlite:///{ws / 'binaudit.db'}").open()
    job = get_job(engine, tuning_id)
    trials = list_jobs(engine, parent_id=tuning_id)
    assert job.status == "Completed" and len(trials) == 3
    assert all(t.status == "Completed" and t.kind == "training" and t.model_version_id for t in trials)
    values = {t.id: trial_value(t.metrics, "val_rmse") for t in trials}
    assert job.output["best_trial"]["value"] == min(values.values()) == values[best.group(1)]
    assert float(best.group(2)) == pytest.approx(min(values.values()), abs=5e-5)
    assert job.model_version_id == get_job(engine, best.group(1)).model_version_id
    assert registry.get_version(engine, best.group(4)).id == job.model_version_id
    for t in trials:
        assert not (ws / "jobs" / t.id / "checkpoints").exists()  # trials are never resumed: no checkpoints
        hp = t.params["training"]
        assert hp["best_metric"] == "val_rmse" and 0.001 <= hp["lr"] <= 0.2 and 8 <= hp["batch_size"] <= 24
        assert json.loads(best.group(3)).keys() == {"lr", "batch_size"}


@pytest.mark.slow
def test_a_training_job_killed_half_way_is_resumed_with_jobs_resume(tiny_dataset, tmp_path):
    ws = tmp_path / "ws"
    # train.py waits after epoch 1's checkpoint for a file nobody writes (modeling.train.hold_for_test)
    held = {"BINAUDIT_TEST_PAUSE_AFTER_EPOCH": "1", "BINAUDIT_TEST_BARRIER": str(tmp_path / "never-released")}
    started = _run(["train", *_data(tiny_dataset), *TINY, "--epochs", "3", "--no-wait"], ws, **held)  # last wins
    assert started.returncode == 0, started.stderr
    job_id = re.search(r"^started training job (train-\S+) on local$", started.stdout, re.M).group(1)
    info = ws / "jobs" / job_id / "checkpoints" / "checkpoint.json"
    wait_for(info.is_file, timeout=JOB_TIMEOUT_SECONDS, what="train.py held after epoch 1's checkpoint")
    engine = Workspace(ws, f"sqlite:///{ws / 'binaudit.db'}").open()
    os.killpg(get_job(engine, job_id).pid, signal.SIGKILL)  # the machine goes down: nobody records anything
    epoch = json.loads(info.read_text())["epoch"]
    assert epoch == 1

    resumed = _run(["resume", job_id], ws)
    assert resumed.returncode == 0, resumed.stderr
    new_id = re.search(rf"^resuming {job_id} after epoch {epoch} as (train-\S+)$", resumed.stdout, re.M).group(1)
    epochs = [int(e) for e in re.findall(r"^epoch=(\d+) ", resumed.stdout, re.M)]  # the new job's log, streamed
    assert epochs == [2, 3]
    assert re.search(rf"registered model version v1 .* from job {new_id}$", resumed.stdout, re.M)
    assert get_job(engine, job_id).status == "Failed" and get_job(engine, new_id).params["resumed_from"] == job_id

    again = _run(["resume", new_id], ws)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"error: job {new_id} completed (model version v1); there is nothing to resume")


def test_errors_are_one_line_and_exit_2(tiny_dataset, tmp_path, monkeypatch, capsys):
    """In-process (the same parser and error handling as a subprocess, without a torch import per case)."""
    from jobs.cli import main

    monkeypatch.setenv("BINAUDIT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("BINAUDIT_SECRETS", str(tmp_path / "no-secrets.toml"))
    for name in ("BINAUDIT_BACKEND", "BINAUDIT_AWS_REGION", "BINAUDIT_SAGEMAKER_ROLE_ARN", "BINAUDIT_S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    for args, message in ((["train", *_data(tiny_dataset), "--arch", "vgg"], "invalid choice: 'vgg'"),
                          (["train", "--val", "v"], "a training job needs a train folder"),
                          (["models", "promote", "v9"], "no model version 'v9'"),
                          (["stop", "train-nope"], "no job 'train-nope'"),
                          (["resume"], "the following arguments are required: job_id"),
                          (["train", *_data(tiny_dataset), "--epochs", "0"], "--epochs: must be a positive integer"),
                          (["tune", *_data(tiny_dataset), "--search-space", "{bad"], "not valid JSON"),
                          (["tune", *_data(tiny_dataset), "--max-parallel-jobs", "3"], "1 or 2 trials"),
                          (["train", *_data(tiny_dataset), "--backend", "sagemaker"], "BINAUDIT_AWS_REGION")):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (args, err)
