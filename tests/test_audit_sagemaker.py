"""Scoring the workspace through SageMaker batch transform, against moto's server.

moto completes a transform job at once and writes nothing. One test plays the container: when the
CreateTransformJob request goes out, it answers every uploaded photo with modeling/inference.py's own
four handlers (the code SageMaker would run) and writes the `.out` objects where SageMaker would. The
other leaves the outputs missing and checks that every bin is reported with that reason.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import boto3
import numpy as np
import pytest
import sqlalchemy as sa
from botocore.handlers import BUILTIN_HANDLERS

from audit.imports import import_dataset
from audit.scorers import sagemaker_scorer
from audit.scoring import score_bins
from binaudit import db
from binaudit.config import load_settings
from binaudit.workspace import Workspace
from jobs import get_backend
from modeling.registry import activate, register_model
from tests.aws_shims import install_moto_compat, record_requests
from tests.conftest import s3_bucket_name
from tests.modeling_fixtures import tiny_model

PREFIX = "binaudit-audit"


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory) -> Path:
    return tiny_model(tiny_dataset, tmp_path_factory)


@pytest.fixture
def sm(aws_env, monkeypatch, request, tmp_path, tiny_dataset, tiny_model_dir):
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # the role check calls an IAM API moto lacks
    install_moto_compat()
    bucket = s3_bucket_name(request)
    boto3.client("s3").create_bucket(Bucket=bucket)
    settings = load_settings(env={}, secrets_path=tmp_path / "none.toml", workspace=tmp_path / "ws",
                             aws_region="us-east-1", sagemaker_role_arn="arn:aws:iam::123456789012:role/test",
                             s3_bucket=bucket, s3_prefix=PREFIX, backend="sagemaker")
    ws = Workspace.from_settings(settings)
    engine = ws.open()
    import_dataset(engine, tiny_dataset, actor="t")
    with db.write_tx(engine) as conn:  # a few dozen bins say as much as a hundred, in less time
        keep = sa.select(db.bins.c.id).order_by(db.bins.c.id).limit(24)
        conn.execute(db.bins.delete().where(db.bins.c.id.not_in(keep)))
    version = activate(engine, register_model(engine, tiny_model_dir, ws.models_dir).id)
    with engine.connect() as conn:
        n_bins = conn.execute(sa.select(sa.func.count()).select_from(db.bins)).scalar_one()
    assert n_bins == 24

    def make_backend():  # after the test's handlers: botocore gives them only to clients created later
        return get_backend("sagemaker", settings=settings, workspace=ws, engine=engine)

    return make_backend, version, ws, engine, bucket, n_bins


def bucket_of(uri: str) -> str:
    return uri[5:].split("/", 1)[0]


@contextlib.contextmanager
def playing_the_container(model_dir: Path):
    """While active, a CreateTransformJob request makes the photos its manifest names be scored by
    modeling/inference.py's four handlers and the answers written to `<output>/<name>.out`, as SageMaker would."""
    from modeling import inference

    model = inference.model_fn(str(model_dir))
    s3 = boto3.client("s3")

    def transform(params, model: object = None, **_):
        if getattr(model, "name", "") != "CreateTransformJob":
            return
        source = params["TransformInput"]["DataSource"]["S3DataSource"]
        assert source["S3DataType"] == "ManifestFile"
        manifest = json.loads(s3.get_object(Bucket=bucket_of(source["S3Uri"]), Key=source["S3Uri"][5:].split("/", 1)[1])
                              ["Body"].read())
        bucket, prefix = manifest[0]["prefix"][5:].split("/", 1)
        out_prefix = params["TransformOutput"]["S3OutputPath"][5:].split("/", 1)[1].rstrip("/")
        for name in manifest[1:]:
            photo = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
            request = inference.input_fn(photo, params["TransformInput"]["ContentType"])
            body, _content_type = inference.output_fn(inference.predict_fn(request, model_), "application/json")
            s3.put_object(Bucket=bucket, Key=f"{out_prefix}/{name}.out", Body=body.encode())

    model_ = model
    entry = ("provide-client-params.sagemaker", transform)
    BUILTIN_HANDLERS.append(entry)
    try:
        yield
    finally:
        BUILTIN_HANDLERS.remove(entry)


@pytest.mark.slow
def test_scoring_through_batch_transform(sm, tiny_model_dir):
    make_backend, version, ws, engine, bucket, n_bins = sm
    s3 = boto3.client("s3")
    with playing_the_container(tiny_model_dir), record_requests() as sent:
        backend = make_backend()
        report = score_bins(engine, ws, version, sagemaker_scorer(backend, version, poll_seconds=0), progress=False)
    request = sent.one("CreateTransformJob")
    manifest = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    source = json.loads(s3.get_object(Bucket=bucket, Key=manifest[5:].split("/", 1)[1])["Body"].read())[0]["prefix"]
    source = source.rstrip("/")
    assert source.startswith(f"s3://{bucket}/{PREFIX}/audit-scoring/") and source.endswith("/input")
    assert request["TransformInput"]["ContentType"] == "application/x-image"
    uploaded = s3.list_objects_v2(Bucket=bucket, Prefix=source[len(f"s3://{bucket}/"):] + "/")["KeyCount"]
    assert uploaded == n_bins
    assert (report.scored, report.failed) == (n_bins, 0)

    from modeling.predictor import Predictor

    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.predictions.c.bin_id, db.predictions.c.probabilities, db.bins.c.image_uri)
                            .join(db.bins, db.bins.c.id == db.predictions.c.bin_id).limit(5)).all()
    local = Predictor.load(version.model_dir, precision="fp32")
    for row in rows:  # the transform's answers are the model's own probabilities
        expected = next(iter(local.predict_paths([row.image_uri], workers=0))).probs
        assert np.allclose(row.probabilities, expected, atol=1e-3)


@pytest.mark.slow
def test_missing_transform_outputs_are_reported_per_bin(sm):
    make_backend, version, ws, engine, bucket, n_bins = sm
    backend = make_backend()
    report = score_bins(engine, ws, version, sagemaker_scorer(backend, version, poll_seconds=0), progress=False)
    assert (report.scored, report.failed) == (0, n_bins)
    with engine.connect() as conn:
        reasons = conn.execute(sa.select(db.problems.c.reason).where(db.problems.c.stage == "score")).scalars().all()
    assert len(reasons) == n_bins and all("wrote no answer for this photo" in r for r in reasons)
