"""Contract: the training job the SDK submits runs in the PyTorch training container as SageMaker runs it.

From the CreateTrainingJob request moto received (hyperparameters, channels, environment, entrypoint) and the objects
the SDK uploaded (the source package, the SDK's driver scripts and its generated sm_train.sh), /opt/ml is laid out as
the container sees it and the request's own entrypoint runs, under .venv-container: torch, torchvision, pillow, numpy
and AWS's `sagemaker-training` toolkit (which brings boto3, scipy, gevent, ... as in the real image), and none of the
project's other requirements (sagemaker, pandas, streamlit, sqlalchemy, ... are checked absent). What this cannot show:
AWS's own S3 sync, spot capacity, GPUs (CUDA is hidden), and several hosts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jobs import TrainingParams, TuningParams
from jobs.search_space import Categorical
from tests.aws_shims import record_requests
from tests.sagemaker_container import (
    container_env,
    container_python,
    host_path,
    lay_out_training,
    opt_ml,
    request_entrypoint,
    run_container,
)
from tests.sagemaker_fixtures import moto_sagemaker

pytestmark = pytest.mark.slow

HYPERPARAMETERS = dict(arch="resnet18", image_size=32, epochs=2, batch_size=16, workers=0, lr=0.02)
NOT_IN_THE_CONTAINER = ("sagemaker", "pandas", "streamlit", "sqlalchemy", "plotly", "orjson", "tqdm", "moto",
                        "playwright", "psycopg", "modeling", "jobs", "audit", "app", "binaudit", "data_tools")


@pytest.fixture
def sm(aws_env, monkeypatch, request, tmp_path, tiny_dataset):
    """moto with the tiny dataset uploaded as the train and val channels."""
    env = moto_sagemaker(aws_env, monkeypatch, request, tmp_path)
    for split in ("train", "val"):
        for path in sorted((tiny_dataset / split).rglob("*.jpg")):
            env.s3.upload_file(str(path), env.bucket, f"dataset/{split}/{path.relative_to(tiny_dataset / split)}")
    env.params = TrainingParams(train=f"s3://{env.bucket}/dataset/train", val=f"s3://{env.bucket}/dataset/val",
                                **HYPERPARAMETERS)
    return env


def _submitted(sm, **settings) -> tuple[dict, object]:
    with record_requests() as sent:
        job = sm.make(**settings).start_training(sm.params, actor="tester")
    return sent.one("CreateTrainingJob"), job


def _run_training_job(sm, ml: Path, request: dict, **kwargs):
    lay_out_training(ml, request, sm.s3)
    env = container_env(request["TrainingJobName"], request.get("Environment"), sm.server)
    return run_container(ml, request_entrypoint(request), env, **kwargs)


def test_the_container_environment_has_the_images_packages_and_not_the_projects():
    """The stand-in for the image: torch & co and AWS's toolkit import; the project's other requirements do not.
    (boto3 is there: AWS's sagemaker-training toolkit brings it, as in the real image.)"""
    code = ("import importlib.util as u, json, torch, torchvision, PIL, numpy, sagemaker_training, boto3\n"
            f"print(json.dumps([m for m in {list(NOT_IN_THE_CONTAINER)!r} if u.find_spec(m)]))")
    out = subprocess.run([str(container_python()), "-c", code], capture_output=True, text=True, cwd="/",
                         env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_training_job_runs_the_sdks_entry_script_and_a_spot_restart_resumes(sm, tmp_path):
    request, job = _submitted(sm, use_spot=True)
    with opt_ml(tmp_path) as ml:
        checkpoints = host_path(ml, request["CheckpointConfig"]["LocalPath"])

        def epoch_one_saved() -> bool:
            return any(json.loads(p.read_text()).get("epoch") == 1 for p in checkpoints.rglob("checkpoint.json"))

        # the instance is reclaimed after the first epoch's checkpoint
        first = _run_training_job(sm, ml, request, stop_when=epoch_one_saved)
        assert first.matches(request["AlgorithmSpecification"]["MetricDefinitions"])["epoch"] == [1.0], first.output
        assert not (ml / "model" / "model.pth").exists()

        # SageMaker restarts the job on a new instance: empty model and output, the checkpoints synced back from S3
        for folder in ("model", "output", "input"):
            subprocess.run(["rm", "-rf", str(ml / folder)], check=True)
        second = _run_training_job(sm, ml, request)
        assert second.returncode == 0, second.output[-4000:]

        assert "resuming from" in second.output and "after epoch 1" in second.output, second.output[-4000:]
        found = second.matches(request["AlgorithmSpecification"]["MetricDefinitions"])
        assert found["epoch"] == [2.0]  # only the epoch the interruption lost
        for name in ("train_loss", "val_accuracy", "val_rmse", "best_val_accuracy", "best_val_rmse"):
            assert len(found[name]) == 1, (name, second.output[-3000:])
        assert "ignoring unknown arguments" not in second.output  # every hyperparameter is a train.py flag
        model = ml / "model"
        assert {"model.pth", "model_config.json", "metrics.json", "summary.csv", "args.json"} <= {
            p.name for p in model.iterdir()}
        resolved = json.loads((model / "args.json").read_text())
        assert {k: resolved[k] for k in HYPERPARAMETERS} == HYPERPARAMETERS  # each hyperparameter reached train.py
        assert resolved["train"] == "/opt/ml/input/data/train" and resolved["val"] == "/opt/ml/input/data/val"
        config = json.loads((model / "model_config.json").read_text())
        assert config["arch"] == "resnet18" and config["top_class"] == "open"  # the tiny set has a 6+ folder
        assert config["class_to_count"] == [0, 1, 2, 3, 4, 5, 6]  # 6+ counts as 6 in the metrics
        assert not (ml / "output" / "failure").exists()


def test_a_failed_training_job_reports_train_pys_error_line(sm, tmp_path):
    """SageMaker's FailureReason is /opt/ml/output/failure: train.py's `error: ...` line, not a driver traceback."""
    sm.params = sm.params.replace(val=f"s3://{sm.bucket}/dataset/train/0")  # photos without count folders
    request, _ = _submitted(sm)
    with opt_ml(tmp_path) as ml:
        run = _run_training_job(sm, ml, request)
        assert run.returncode != 0
        failure = (ml / "output" / "failure").read_text()
    assert failure.startswith("error: ") and "/opt/ml/input/data/val" in failure, failure[:500]
    assert "Traceback" not in failure


def test_two_tuning_trials_share_no_checkpoint(sm, tmp_path):
    """Two trials of one spot tuning job run in turn on the same checkpoint prefix (the definition has one): the
    second starts from scratch, and each trial's checkpoint is its own."""
    params = TuningParams(base=sm.params.replace(epochs=1), max_jobs=2,
                          search_space={"lr": Categorical(("0.02", "0.05"))})
    with record_requests() as sent:
        sm.make(use_spot=True).start_tuning(params, actor="tester")
    definition = sent.one("CreateHyperParameterTuningJob")["TrainingJobDefinition"]
    with opt_ml(tmp_path) as ml:
        outputs = []
        for trial, lr in (("trial-001", "0.02"), ("trial-002", "0.05")):
            hyper = {**definition["StaticHyperParameters"], "lr": lr}
            lay_out_training(ml, definition, sm.s3, hyperparameters=hyper)
            # what the PyTorch training image runs when no entrypoint is given: the toolkit's `train`, which downloads
            # sagemaker_submit_directory and starts sagemaker_program (its DNS wait for the host is skipped here)
            env = container_env(trial, definition.get("Environment"), sm.server,
                                SAGEMAKER_TRAINING_MODULE="sagemaker_pytorch_container.training:main",
                                SM_STUDIO_LOCAL_MODE="true")
            run = run_container(ml, ["train"], env)
            assert run.returncode == 0, run.output[-4000:]
            outputs.append(run.output)
            subprocess.run(["rm", "-rf", str(ml / "model"), str(ml / "input"), str(ml / "output")], check=True)
        assert "resuming from" not in outputs[1], outputs[1][-3000:]
        assert "epoch=1 " in outputs[1]
        checkpoints = host_path(ml, definition["CheckpointConfig"]["LocalPath"])
        saved = sorted(p.parent.relative_to(checkpoints).as_posix() for p in checkpoints.rglob("checkpoint.pth"))
        assert saved == ["trial-001", "trial-002"]
