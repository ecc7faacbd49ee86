"""The Retrain page and what SageMaker costs: the price before Start, idle endpoints named (AppTest, moto)."""

from __future__ import annotations

import pytest

from jobs import get_backend
from modeling import registry
from tests.sagemaker_fixtures import moto_sagemaker, placeholder_model_dir
from tests.test_app_pages import open_page, seeded_copy


@pytest.fixture
def ws_env(seeded_workspace, tmp_path, monkeypatch):
    return seeded_copy(seeded_workspace, tmp_path, monkeypatch).root


def test_the_form_prices_sagemaker_training_before_start(ws_env):
    at = open_page("retrain", reviewer="ana")
    captions = " ".join(c.value for c in at.caption)
    assert "ml.g4dn.xlarge, about $0.74/h (on-demand us-east-1, price table of" in captions


def test_idle_sagemaker_endpoints_are_named_on_the_page(ws_env, aws_env, monkeypatch, request, tmp_path):
    sm = moto_sagemaker(aws_env, monkeypatch, request, tmp_path)
    for name, value in {"BACKEND": "sagemaker", "AWS_REGION": "us-east-1", "SAGEMAKER_ROLE_ARN":
                        sm.settings.sagemaker_role_arn, "S3_BUCKET": sm.bucket, "ENDPOINT_IDLE_HOURS": "0"}.items():
        monkeypatch.setenv(f"BINAUDIT_{name}", value)
    version = registry.register_model(sm.engine, placeholder_model_dir(tmp_path), sm.workspace.models_dir,
                                      actor="tester")
    job = get_backend("sagemaker", settings=sm.settings, workspace=sm.workspace, engine=sm.engine).deploy(
        version.id, actor="tester")
    at = open_page("retrain", reviewer="ana")
    warnings = [w.value for w in at.warning]
    assert any(job.external_id in w and "bills every hour" in w and "never invoked" in w for w in warnings), warnings
