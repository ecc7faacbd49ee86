"""Helpers shared by the SageMaker tests (the backend against moto, and the container contract tests).

Test modules wrap them in their own fixtures (a fixture imported into a module would shadow the module's names).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import boto3

from binaudit.config import load_settings
from binaudit.workspace import Workspace
from jobs import get_backend
from modeling.model import ModelSpec
from modeling.preprocessing import PreprocessConfig
from tests.aws_shims import install_moto_compat
from tests.conftest import s3_bucket_name

ROLE = "arn:aws:iam::123456789012:role/binaudit-sagemaker"
PREFIX = "binaudit-test"


def placeholder_model_dir(tmp_path: Path) -> Path:
    """A model folder as train.py lays it out, with placeholder weights: what is sent is under test, not the model
    (a real resnet18 is 45 MB, which moto would store and the SDK repack on every test)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pth").write_bytes(b"placeholder weights")
    config = {**ModelSpec("resnet18", 5, PreprocessConfig(32)).to_dict(),  # registration checks the config
              "final_metrics": {"val_accuracy": 0.4615, "val_rmse": 1.2}, "resolved_args": {"val": "/data/val"}}
    (folder / "model_config.json").write_text(json.dumps(config))
    return folder


def sagemaker_settings(tmp_path: Path, bucket: str, **overrides):
    values = dict(workspace=tmp_path / "ws", aws_region="us-east-1", sagemaker_role_arn=ROLE, s3_bucket=bucket,
                  s3_prefix=PREFIX)
    values.update(overrides)
    return load_settings(env={}, secrets_path=tmp_path / "no-secrets.toml", **values)


def moto_sagemaker(aws_env, monkeypatch, request, tmp_path) -> SimpleNamespace:
    """A bucket on moto, settings pointing at it, a workspace; `make()` builds the backend (after handlers)."""
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # the role check calls an IAM API moto lacks
    install_moto_compat()
    bucket = s3_bucket_name(request)
    boto3.client("s3").create_bucket(Bucket=bucket)
    settings = sagemaker_settings(tmp_path, bucket)
    workspace = Workspace.from_settings(settings)
    engine = workspace.open()

    def make(**overrides):
        s = sagemaker_settings(tmp_path, bucket, **overrides) if overrides else settings
        return get_backend("sagemaker", settings=s, workspace=workspace, engine=engine)

    return SimpleNamespace(server=aws_env, bucket=bucket, settings=settings, workspace=workspace, engine=engine,
                           make=make, s3=boto3.client("s3"), sagemaker=boto3.client("sagemaker"),
                           logs=boto3.client("logs"))
