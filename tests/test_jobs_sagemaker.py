"""The SageMaker backend against moto's server on 127.0.0.1: real boto3 and SageMaker SDK v3, nothing reaches AWS.

moto completes every job at once and writes no artifacts, so these tests assert what is SENT (captured with a
botocore provide-client-params handler, or read back from moto's S3), and how the backend reads what comes back.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import tarfile
import time
from pathlib import Path

import boto3
import pytest

import modeling
from binaudit.config import ConfigError
from binaudit.workspace import Workspace
from jobs import (
    DEFAULT_SEARCH_SPACE,
    Categorical,
    Continuous,
    JobError,
    TrainingParams,
    TuningParams,
    get_backend,
    list_jobs,
)
from jobs.sagemaker import aws
from jobs.sagemaker.backend import folder_digest
from modeling import registry
from modeling.metric_log import METRIC_DEFINITIONS, format_epoch_line, parse_metric_log
from tests.aws_shims import (
    on_request,
    override_response,
    queue_endpoint_results,
    record_requests,
    throttled,
)
from tests.modeling_fixtures import jpeg_bytes
from tests.sagemaker_fixtures import PREFIX, ROLE, moto_sagemaker, placeholder_model_dir, sagemaker_settings
from tests.test_jobs_support import refresh_while_another_registers

CONTAINER_FILES = {"train.py", "inference.py", *(f"modeling/{name}" for name in modeling.CONTAINER_MODULES)}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return placeholder_model_dir(tmp_path)


@pytest.fixture
def sm(aws_env, monkeypatch, request, tmp_path):
    return moto_sagemaker(aws_env, monkeypatch, request, tmp_path)


def _params(bucket: str, **changes) -> TrainingParams:
    base = TrainingParams(train=f"s3://{bucket}/dataset/train", val=f"s3://{bucket}/dataset/val",
                          test=f"s3://{bucket}/dataset/test", epochs=3, lr=0.02, image_size=64)
    return base.replace(**changes)


def _s3_object(s3, uri: str) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _tar_names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def _model_tarball(model_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in model_dir.iterdir():
            if path.is_file():
                tar.add(path, arcname=path.name)
    return buf.getvalue()


def _tags(request: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in request.get("Tags") or []}


def _channels(request: dict) -> dict[str, str]:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}


# ---------------------------------------------------------------- configuration errors (no SDK import)

@pytest.mark.parametrize(("missing", "named"), [
    ({"aws_region": ""}, "BINAUDIT_AWS_REGION"),
    ({"sagemaker_role_arn": ""}, "BINAUDIT_SAGEMAKER_ROLE_ARN"),
    ({"s3_bucket": ""}, "BINAUDIT_S3_BUCKET"),
])
def test_missing_settings_name_what_to_set(tmp_path, missing, named):
    settings = sagemaker_settings(tmp_path, "some-bucket", **missing)
    workspace = Workspace.from_settings(settings)
    with pytest.raises(ConfigError, match=named):
        get_backend("sagemaker", settings=settings, workspace=workspace, engine=workspace.open())


def test_no_credentials_names_what_to_set(aws_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    settings = sagemaker_settings(tmp_path, "some-bucket")
    workspace = Workspace.from_settings(settings)
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID") as err:
        get_backend("sagemaker", settings=settings, workspace=workspace, engine=workspace.open())
    assert "aws configure" in str(err.value)


def test_local_data_paths_are_refused_with_the_upload_command(sm):
    backend = sm.make()
    with pytest.raises(JobError, match="data_tools upload"):
        backend.start_training(TrainingParams(train="/data/train", val="/data/val"), actor="t")


# ---------------------------------------------------------------- training

def test_training_job_sends_image_code_channels_hyperparameters_metrics_compute(sm):
    from sagemaker.core import image_uris

    with record_requests() as sent:
        backend = sm.make(use_spot=True, training_instance_type="ml.g5.xlarge", training_volume_gb=100)
        params = _params(sm.bucket, instance_count=2)
        job = backend.start_training(params, actor="tester")
    request = sent.one("CreateTrainingJob")

    assert job.status == "InProgress" and job.backend == "sagemaker"
    assert job.external_id == request["TrainingJobName"] and job.external_id.startswith("binaudit-train")
    assert request["HyperParameters"] == params.to_hyperparameters()
    assert request["RoleArn"] == ROLE
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"] == image_uris.retrieve(
        framework="pytorch", region="us-east-1", version=sm.settings.pytorch_version,
        py_version=sm.settings.python_version, instance_type="ml.g5.xlarge", image_scope="training")
    assert spec["MetricDefinitions"] == METRIC_DEFINITIONS
    channels = _channels(request)
    for name in ("train", "val", "test"):
        assert channels[name] == f"s3://{sm.bucket}/dataset/{name}/"
    assert channels["code"] == job.output["source_code"]
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["ResourceConfig"]["VolumeSizeInGB"] == 100
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{sm.bucket}/{PREFIX}/jobs/{job.id}/output"
    # spot: managed spot, checkpoints synced to S3, a wait limit beyond the runtime limit
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{sm.bucket}/{PREFIX}/jobs/{job.id}/checkpoints",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": sm.settings.max_runtime_seconds,
                                            "MaxWaitTimeInSeconds": 2 * sm.settings.max_runtime_seconds}
    assert _tags(request) == {"project": "binaudit", "binaudit:job-id": job.id, "binaudit:started-by": "tester"}

    # the uploaded code: exactly the shims and the container modules
    assert _tar_names(_s3_object(sm.s3, job.output["source_code"])) == CONTAINER_FILES
    # two instances run torchrun (train.py then trains with DistributedDataParallel)
    drivers = channels["sm_drivers"][5:].split("/", 1)
    script = sm.s3.get_object(Bucket=drivers[0], Key=drivers[1].rstrip("/") + "/sm_train.sh")["Body"].read()
    assert b"torchrun_driver.py" in script
    assert b"tar -xzf sourcedir.tar.gz" in script


def test_single_instance_on_demand_training_has_no_spot_and_still_runs_torchrun(sm):
    """torchrun on one instance too: it starts one process per GPU (a multi-GPU instance trains on all of them)."""
    with record_requests() as sent:
        backend = sm.make()
        job = backend.start_training(TrainingParams(epochs=1), actor="tester")
    request = sent.one("CreateTrainingJob")
    channels = _channels(request)
    assert set(channels) == {"train", "val", "code", "sm_drivers"}
    # no channels given: where `python -m data_tools upload` puts the dataset by default
    assert channels["train"] == f"s3://{sm.bucket}/{PREFIX}/dataset/train/"
    assert channels["val"] == f"s3://{sm.bucket}/{PREFIX}/dataset/val/"
    assert request["ResourceConfig"]["InstanceType"] == sm.settings.training_instance_type
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]
    drivers = _channels(request)["sm_drivers"][5:].split("/", 1)
    script = sm.s3.get_object(Bucket=drivers[0], Key=drivers[1].rstrip("/") + "/sm_train.sh")["Body"].read()
    assert b"torchrun_driver.py" in script and b"basic_script_driver.py" not in script
    assert request["ResourceConfig"]["VolumeSizeInGB"] == sm.settings.training_volume_gb == 30
    assert job.is_active


def test_completed_job_without_artifact_fails_clearly_and_registers_nothing(sm):
    backend = sm.make()
    job = backend.start_training(_params(sm.bucket), actor="tester")
    job = backend.refresh(job.id)  # moto: Completed at once, no model.tar.gz written
    assert job.status == "Failed"
    assert "could not be registered" in job.failure_reason and "model.tar.gz" in job.failure_reason
    assert registry.list_versions(sm.engine) == []


def _training_job_with_artifact(sm, model_dir):
    """A training job moto completed, with the model.tar.gz a real job would have written (moto writes none)."""
    backend = sm.make()
    job = backend.start_training(_params(sm.bucket), actor="tester")
    artifact = sm.sagemaker.describe_training_job(TrainingJobName=job.external_id)["ModelArtifacts"][
        "S3ModelArtifacts"]
    bucket, key = artifact[5:].split("/", 1)
    sm.s3.put_object(Bucket=bucket, Key=key, Body=_model_tarball(model_dir))
    return backend, job, artifact


def test_completed_job_artifact_is_downloaded_and_registered(sm, model_dir):
    backend, job, artifact = _training_job_with_artifact(sm, model_dir)

    job = backend.refresh(job.id)
    assert job.status == "Completed", job.failure_reason
    version = registry.get_version(sm.engine, job.model_version_id)
    assert version.job_id == job.id
    assert version.config["sagemaker"]["model_data"] == artifact
    assert (version.model_dir / "model.pth").read_bytes() == b"placeholder weights"
    assert (version.val_accuracy, version.val_rmse) == (0.4615, 1.2)
    assert job.output["model_version"] == version.name and job.output["model_data"] == artifact


def test_two_refreshers_of_a_completed_job_register_one_version(sm, model_dir, monkeypatch):
    backend, job, artifact = _training_job_with_artifact(sm, model_dir)
    # the dashboard's fragment and a CLI watching, each with its own backend
    first, second = refresh_while_another_registers(monkeypatch, lambda: sm.make().refresh(job.id),
                                                    lambda: sm.make().refresh(job.id))
    versions = [v for v in registry.list_versions(sm.engine) if v.job_id == job.id]
    assert len(versions) == 1
    assert (first.status, second.status) == ("Completed", "InProgress")  # the second saw it being registered
    assert backend.refresh(job.id).status == "Completed" and backend.refresh(job.id).model_version_id == versions[0].id


def test_failed_training_job_reason_is_surfaced(sm):
    backend = sm.make()
    job = backend.start_training(_params(sm.bucket), actor="tester")
    reason = "AlgorithmError: error: data folder not found: /opt/ml/input/data/train"
    with override_response("DescribeTrainingJob", TrainingJobStatus="Failed", FailureReason=reason):
        job = sm.make().refresh(job.id)
    assert job.status == "Failed"
    assert job.failure_reason == reason
    assert job.model_version_id is None and registry.list_versions(sm.engine) == []


def test_running_job_metrics_come_from_its_cloudwatch_log_with_the_same_regexes(sm):
    backend = sm.make()
    job = backend.start_training(_params(sm.bucket), actor="tester")
    lines = [format_epoch_line(e, {"train_loss": 1.0 / e, "train_accuracy": 0.3 * e, "val_loss": 1.1,
                                   "val_accuracy": 0.25 * e, "val_rmse": 2.0 / e, "val_mae": 0.5})
             for e in (1, 2)]
    now_ms = int(time.time() * 1000)  # CloudWatch drops events older than 14 days
    _log_stream(sm, "/aws/sagemaker/TrainingJobs", f"{job.external_id}/algo-1-1700000000", ["starting", *lines],
                now_ms)
    with override_response("DescribeTrainingJob", TrainingJobStatus="InProgress"):
        job = sm.make().refresh(job.id)
    assert job.status == "InProgress"
    assert job.metrics == parse_metric_log("\n".join(lines)) and [m["epoch"] for m in job.metrics] == [1, 2]
    assert job.output["sagemaker_status"] == "InProgress"
    assert backend.log_tail(job.id, lines=2).splitlines() == lines


@pytest.mark.slow
def test_throttled_calls_are_retried(sm):
    with throttled("CreateTrainingJob", 1) as create, throttled("DescribeTrainingJob", 2) as describe:
        backend = sm.make()
        job = backend.start_training(_params(sm.bucket), actor="tester")
        job = backend.refresh(job.id)
    assert create.hits == 1 and describe.hits == 2
    assert job.external_id and job.status == "Failed"  # moto: completed, no artifact; the point is it got there


@contextlib.contextmanager
def _stop_pressed_during(sm, operation: str):
    """A backend whose job another user stops while the SDK sends `operation` (the job has no AWS name yet)."""
    made = {}

    def press_stop() -> None:
        (job,) = list_jobs(sm.engine, active_only=True)
        assert made["backend"].stop(job.id, actor="bo").status == "Stopped"

    with on_request(operation, press_stop):
        made["backend"] = sm.make()
        yield made["backend"]


def test_a_job_stopped_while_being_submitted_is_stopped_on_sagemaker_too(sm, monkeypatch):
    # moto has no StopTrainingJob: it answers 500, which must be reported (not retried for a minute)
    monkeypatch.setattr(aws, "RETRIES", {"mode": "standard", "max_attempts": 1})
    with (record_requests() as sent, _stop_pressed_during(sm, "CreateTrainingJob") as backend,
          pytest.raises(JobError, match="stopped while being submitted") as err):
        backend.start_training(_params(sm.bucket), actor="tester")
    name = sent.one("CreateTrainingJob")["TrainingJobName"]
    assert sent.one("StopTrainingJob") == {"TrainingJobName": name}
    assert f"stopping {name}: AWS refused (500)" in str(err.value)
    (job,) = list_jobs(sm.engine)
    assert job.status == "Stopped" and job.external_id == name
    assert "stop it in the SageMaker console" in job.failure_reason


@pytest.mark.slow
def test_recounts_travel_as_their_own_channel(sm, tmp_path):
    """The audit core writes the recounts folder (as the Retrain page does); the backend uploads it as a channel."""
    from audit import imports, reviews
    from audit.export import build_recount_dataset
    from tests.modeling_fixtures import jpeg_bytes

    empty = tmp_path / "no-recounts"
    build_recount_dataset(sm.engine, sm.workspace, empty)
    with record_requests() as sent:  # no recounts yet: no channel (SageMaker refuses an empty prefix)
        backend = sm.make()
        backend.start_training(_params(sm.bucket, recounts=str(empty)), actor="tester")
    assert "recounts" not in {c["ChannelName"] for c in sent.one("CreateTrainingJob")["InputDataConfig"]}

    row = imports.import_upload(sm.engine, sm.workspace, "00042.jpg", jpeg_bytes(), actor="ana", expected_count=4)
    reviews.decide(sm.engine, reviews.Decision(row["id"], reviews.CONFIRM, "ana", 1, recounted_count=2))
    folder = tmp_path / "recounts"
    build_recount_dataset(sm.engine, sm.workspace, folder)
    with record_requests() as sent:
        backend = sm.make()
        job = backend.start_training(_params(sm.bucket, recounts=str(folder)), actor="tester")
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in sent.one("CreateTrainingJob")["InputDataConfig"]}
    assert channels["recounts"].rstrip("/") == f"s3://{sm.bucket}/{PREFIX}/jobs/{job.id}/recounts"
    listed = sm.s3.list_objects_v2(Bucket=sm.bucket, Prefix=f"{PREFIX}/jobs/{job.id}/recounts/")
    assert [o["Key"].split("/recounts/")[1] for o in listed["Contents"]] == ["2/00042.jpg"]


# ---------------------------------------------------------------- tuning

def test_tuning_job_sends_ranges_objective_limits_and_the_same_code(sm):
    space = dict(DEFAULT_SEARCH_SPACE)
    with record_requests() as sent:
        backend = sm.make()
        params = TuningParams(base=_params(sm.bucket), search_space=space, objective="val_rmse", max_jobs=8,
                              max_parallel_jobs=3, strategy="bayesian", early_stopping=True)
        job = backend.start_tuning(params, actor="tester")
    request = sent.one("CreateHyperParameterTuningJob")
    config = request["HyperParameterTuningJobConfig"]

    assert job.external_id == request["HyperParameterTuningJobName"] == job.id
    # the kept model's RMSE, printed after every epoch: SageMaker's latest value is the best epoch's
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "best_val_rmse"}
    assert config["Strategy"] == "Bayesian"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 3,
                                        "MaxRuntimeInSeconds": sm.settings.max_tuning_runtime_seconds}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = config["ParameterRanges"]
    continuous = {r["Name"]: r for r in ranges["ContinuousParameterRanges"]}
    assert continuous["lr"] == {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    assert continuous["weight-decay"]["ScalingType"] == "Logarithmic"
    assert {r["Name"]: (r["MinValue"], r["MaxValue"]) for r in ranges["IntegerParameterRanges"]} == {
        "batch-size": ("16", "64")}
    assert {r["Name"]: r["Values"] for r in ranges["CategoricalParameterRanges"]} == {
        "arch": ["resnet18", "resnet34", "resnet50"], "image-size": ["160", "224"], "loss": ["ce", "ordinal"]}

    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert "best_val_rmse" in {d["Name"] for d in METRIC_DEFINITIONS}  # the objective has a definition
    static = definition["StaticHyperParameters"]
    tuned = {"lr", "weight-decay", "batch-size", "arch", "image-size", "loss"}
    assert tuned.isdisjoint(static)
    assert static["best-metric"] == "val_rmse"  # the kept model is the one the objective picks
    assert static["epochs"] == "3"
    assert static["sagemaker_program"] == "train.py"
    assert _tar_names(_s3_object(sm.s3, static["sagemaker_submit_directory"])) == CONTAINER_FILES
    assert {c["ChannelName"] for c in definition["InputDataConfig"]} >= {"train", "val", "test"}


def test_tuning_random_strategy_and_no_early_stopping(sm):
    with record_requests() as sent:
        backend = sm.make()
        params = TuningParams(base=_params(sm.bucket), strategy="random", max_jobs=2,
                              search_space={"lr": Continuous(0.001, 0.01), "arch": Categorical(("resnet18",))})
        backend.start_tuning(params, actor="tester")
    config = sent.one("CreateHyperParameterTuningJob")["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Random" and config["TrainingJobEarlyStoppingType"] == "Off"
    assert config["HyperParameterTuningJobObjective"]["Type"] == "Maximize"
    assert config["ParameterRanges"]["ContinuousParameterRanges"][0]["ScalingType"] == "Linear"


def test_tuning_completion_without_a_usable_best_job_fails_with_reason(sm):
    backend = sm.make()
    job = backend.start_tuning(TuningParams(base=_params(sm.bucket), max_jobs=2), actor="tester")
    job = backend.refresh(job.id)  # moto names a fake best training job that cannot be described
    assert job.status == "Failed"
    assert "best training job" in job.failure_reason
    assert job.output["best_trial"]["training_job_name"]


# ---------------------------------------------------------------- endpoints and batch transform

@pytest.fixture
def version(sm, model_dir):
    return registry.register_model(sm.engine, model_dir, sm.workspace.models_dir, actor="tester")


@pytest.mark.slow
def test_deploy_invoke_list_and_delete_endpoint(sm, version):
    from sagemaker.core import image_uris

    with record_requests() as sent, record_requests("sagemaker-runtime") as runtime:
        backend = sm.make()
        job = backend.deploy(version.id, actor="tester")
        model_request = sent.one("CreateModel")
        config_request = sent.one("CreateEndpointConfig")
        endpoint_request = sent.one("CreateEndpoint")

        container = model_request["PrimaryContainer"]
        assert container["Image"] == image_uris.retrieve(
            framework="pytorch", region="us-east-1", version=sm.settings.pytorch_version,
            py_version=sm.settings.python_version, instance_type=sm.settings.inference_instance_type,
            image_scope="inference")
        assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
        assert model_request["ExecutionRoleArn"] == ROLE
        variant = config_request["ProductionVariants"][0]
        assert variant["InstanceType"] == sm.settings.inference_instance_type
        assert variant["InitialInstanceCount"] == 1
        assert variant["ModelName"] == model_request["ModelName"] == job.output["model_name"]
        assert endpoint_request["EndpointName"] == job.external_id == job.output["endpoint_name"]
        assert job.is_active

        # the served archive: the model files plus the same code, inference.py as the handler module
        names = _tar_names(_s3_object(sm.s3, container["ModelDataUrl"]))
        assert {"model.pth", "model_config.json"} <= names
        assert {f"code/{name}" for name in CONTAINER_FILES} <= names
        # the original model tarball was uploaded once under the prefix, keyed by its content
        assert job.output["model_data"] == (f"s3://{sm.bucket}/{PREFIX}/models/{version.name}/"
                                            f"{folder_digest(version.model_dir)[:16]}/model.tar.gz")
        for request in (model_request, config_request, endpoint_request):
            assert _tags(request) == {"project": "binaudit", "binaudit:job-id": job.id,
                                      "binaudit:started-by": "tester"}

        listed = {e["name"]: e for e in backend.list_endpoints()}
        assert listed[job.external_id]["job_id"] == job.id
        assert listed[job.external_id]["model_version"] == version.name

        answer = {"predicted_count": 3, "probabilities": [0, 0, 0, 1, 0, 0], "counts": [0, 1, 2, 3, 4, 5]}
        queue_endpoint_results(sm.server, [answer])
        # JSON, not raw JPEG: moto's server decodes request bodies as UTF-8 (the local tests send JPEG bytes)
        body = json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), "expected_count": 3}).encode()
        assert backend.invoke(job.id, body, "application/json") == answer
        invoke = runtime.one("InvokeEndpoint")
        assert invoke["EndpointName"] == job.external_id and invoke["ContentType"] == "application/json"
        assert invoke["Accept"] == "application/json" and invoke["Body"] == body

        deleted = backend.delete_endpoint(job.id, actor="tester")
    assert deleted.status == "Stopped" and deleted.output["endpoint_status"] == "Deleted"
    assert job.external_id not in {e["EndpointName"] for e in sm.sagemaker.list_endpoints()["Endpoints"]}
    assert job.external_id not in {c["EndpointConfigName"] for c in
                                   sm.sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    assert job.output["model_name"] not in {m["ModelName"] for m in sm.sagemaker.list_models()["Models"]}
    assert backend.list_endpoints() == [] or job.external_id not in {e["name"] for e in backend.list_endpoints()}


@pytest.mark.slow
def test_a_deployment_stopped_while_being_submitted_leaves_no_endpoint(sm, version):
    with record_requests() as sent, _stop_pressed_during(sm, "CreateModel") as backend:
        job = backend.deploy(version.id, actor="tester")
    name = sent.one("CreateEndpoint")["EndpointName"]
    assert sent.one("DeleteEndpoint") == {"EndpointName": name}
    assert job.status == "Stopped" and job.external_id == name and job.output["endpoint_status"] == "Deleted"
    assert name not in {e["EndpointName"] for e in sm.sagemaker.list_endpoints()["Endpoints"]}
    assert job.output["model_name"] not in {m["ModelName"] for m in sm.sagemaker.list_models()["Models"]}


def test_endpoints_created_outside_binaudit_are_listed(sm):
    sm.sagemaker.create_model(ModelName="stray-model", ExecutionRoleArn=ROLE,
                              PrimaryContainer={"Image": "123.dkr.ecr.us-east-1.amazonaws.com/x:1"})
    sm.sagemaker.create_endpoint_config(EndpointConfigName="stray", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "stray-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.sagemaker.create_endpoint(EndpointName="stray", EndpointConfigName="stray")
    backend = sm.make()
    stray = {e["name"]: e for e in backend.list_endpoints()}["stray"]
    assert stray["job_id"] is None
    assert backend.delete_endpoint("stray", actor="tester") is None
    assert "stray" not in {e["name"] for e in backend.list_endpoints()}


@pytest.mark.slow
def test_batch_transform_request(sm, version):
    """Only the photos under the prefix are sent (a manifest names them): a .DS_Store or a CSV would fail the job."""
    for key in ("photos/a.jpg", "photos/sub/b.PNG", "photos/.DS_Store", "photos/manifest.csv", "photos/c.jpeg"):
        sm.s3.put_object(Bucket=sm.bucket, Key=key, Body=b"x")
    with record_requests() as sent:
        backend = sm.make()
        job = backend.start_transform(version.id, f"s3://{sm.bucket}/photos", None, actor="tester")
    request = sent.one("CreateTransformJob")
    assert request["TransformJobName"] == job.external_id
    assert request["ModelName"] == job.output["model_name"]
    source = request["TransformInput"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile" and source["S3Uri"] == job.output["manifest"]
    assert json.loads(_s3_object(sm.s3, source["S3Uri"])) == [{"prefix": f"s3://{sm.bucket}/photos/"}, "a.jpg",
                                                              "c.jpeg", "sub/b.PNG"]
    assert request["TransformInput"]["ContentType"] == "application/x-image"
    # one photo per request, up to 20 MB (SageMaker's default is 6 MB); TorchServe is told the same limit
    assert request["MaxPayloadInMB"] == 20 and request["MaxPayloadInMB"] * request["MaxConcurrentTransforms"] <= 100
    environment = sent.one("CreateModel")["PrimaryContainer"]["Environment"]
    assert environment["TS_MAX_REQUEST_SIZE"] == str(20 * 1024 * 1024)
    assert _tags(request)["binaudit:job-id"] == job.id
    assert request["TransformOutput"] == {"S3OutputPath": f"s3://{sm.bucket}/{PREFIX}/jobs/{job.id}/transform",
                                          "Accept": "application/json"}
    assert request["TransformResources"] == {"InstanceType": sm.settings.transform_instance_type,
                                             "InstanceCount": 1}
    assert backend.refresh(job.id).status == "Completed"


def test_a_transform_over_a_prefix_without_photos_is_refused(sm, version):
    sm.s3.put_object(Bucket=sm.bucket, Key="empty/.DS_Store", Body=b"x")
    with pytest.raises(JobError, match="no photos"):
        sm.make().start_transform(version.id, f"s3://{sm.bucket}/empty/", None, actor="tester")


# ---------------------------------------------------------------- what moto accepts and AWS would not

def test_two_trainings_started_in_the_same_second_get_different_names(sm, monkeypatch):
    import sagemaker.train.model_trainer as model_trainer

    # the SDK appends a timestamp to the second to the base name: freeze it
    monkeypatch.setattr(model_trainer, "_get_unique_name", lambda base, max_length=63: f"{base}-20260101000000")
    with record_requests() as sent:
        backend = sm.make()
        backend.start_training(_params(sm.bucket), actor="tester")
        backend.start_training(_params(sm.bucket), actor="tester")
    names = [r["TrainingJobName"] for r in sent.all("CreateTrainingJob")]
    assert len(names) == 2 and names[0] != names[1]
    assert all(len(n) <= 63 for n in names)


def test_spot_tuning_limits_the_whole_job_and_tags_it(sm):
    with record_requests() as sent:
        backend = sm.make(use_spot=True, max_tuning_runtime_seconds=7200, training_instance_type="ml.g5.12xlarge")
        job = backend.start_tuning(TuningParams(base=_params(sm.bucket), max_jobs=2), actor="tester")
    request = sent.one("CreateHyperParameterTuningJob")
    assert request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxRuntimeInSeconds"] == 7200
    assert _tags(request) == {"project": "binaudit", "binaudit:job-id": job.id, "binaudit:started-by": "tester"}
    definition = request["TrainingJobDefinition"]
    # one prefix for every trial (the API has one definition); train.py keeps each trial in its own folder there
    assert definition["CheckpointConfig"]["S3Uri"] == f"s3://{sm.bucket}/{PREFIX}/jobs/{job.id}/checkpoints"
    # a 4-GPU instance: the image's launcher runs torchrun with one process per GPU
    assert definition["StaticHyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


def test_deploying_from_a_workspace_under_a_path_the_sdk_refuses(sm, version, monkeypatch):
    """A clone run as root lives under /root, which the SDK refuses for the repacked code: its scratch goes
    elsewhere (the workspace here stands for /root)."""
    from sagemaker.core import common_utils

    monkeypatch.setattr(common_utils, "_SENSITIVE_SYSTEM_PATHS",
                        [*common_utils._SENSITIVE_SYSTEM_PATHS, str(sm.workspace.root.resolve())])
    with record_requests() as sent:
        job = sm.make().deploy(version.id, actor="tester")
    assert job.is_active and sent.one("CreateEndpoint")["EndpointName"] == job.external_id


def test_a_model_tarball_is_reused_only_for_the_same_weights(sm, version, tmp_path):
    """Another workspace on the same bucket (or a reset database) has its own v1: it must not serve this one's."""
    first = sm.make().model_data_uri(version)
    other = tmp_path / "other-model"
    other.mkdir()
    for path in version.model_dir.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    (other / "model.pth").write_bytes(b"other weights")
    other_ws = Workspace(tmp_path / "other-ws", f"sqlite:///{tmp_path / 'other.db'}")
    other_version = registry.register_model(other_ws.open(), other, other_ws.models_dir, actor="tester")
    assert other_version.name == version.name
    second = sm.make().model_data_uri(other_version)
    assert second != first
    with tarfile.open(fileobj=io.BytesIO(_s3_object(sm.s3, second)), mode="r:gz") as tar:
        assert tar.extractfile("model.pth").read() == b"other weights"
    assert sm.make().model_data_uri(version) == first  # the same weights: uploaded once


def _log_stream(sm, group: str, stream: str, lines: list[str], start_ms: int) -> None:
    with contextlib.suppress(sm.logs.exceptions.ResourceAlreadyExistsException):
        sm.logs.create_log_group(logGroupName=group)
    sm.logs.create_log_stream(logGroupName=group, logStreamName=stream)
    sm.logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": start_ms + i, "message": line} for i, line in enumerate(lines)])


def test_endpoint_logs_come_from_the_endpoints_own_group(sm, version):
    job = sm.make().deploy(version.id, actor="tester")
    now_ms = int(time.time() * 1000)
    _log_stream(sm, f"/aws/sagemaker/Endpoints/{job.external_id}", "AllTraffic/i-0abc", ["model loaded"], now_ms)
    assert sm.make().log_tail(job.id, 5) == "model loaded\n"


def test_tuning_logs_are_its_trials_logs(sm):
    job = sm.make().start_tuning(TuningParams(base=_params(sm.bucket), max_jobs=2), actor="tester")
    now_ms = int(time.time() * 1000)
    group = "/aws/sagemaker/TrainingJobs"
    _log_stream(sm, group, f"{job.external_id}-001-1a2b3c4d/algo-1-1700000000", ["trial one"], now_ms - 5000)
    _log_stream(sm, group, f"{job.external_id}-002-5e6f7a8b/algo-1-1700000100", ["trial two"], now_ms)
    _log_stream(sm, group, "someone-elses-job/algo-1-1700000000", ["not ours"], now_ms + 10)
    backend = sm.make()
    assert backend.log_tail(job.id, 5) == "trial two\n"  # the newest trial's stream
    text = backend.log_follower(job.id)()
    assert f"[{job.external_id}-001-1a2b3c4d] trial one" in text and "trial two" in text and "not ours" not in text


def test_after_a_spot_restart_the_tail_reads_the_new_stream_and_metrics_span_both(sm):
    backend = sm.make()
    job = backend.start_training(_params(sm.bucket), actor="tester")
    row = {"train_loss": 1.0, "train_accuracy": 0.3, "val_loss": 1.1, "val_accuracy": 0.25, "val_rmse": 2.0,
           "val_mae": 0.5}
    now_ms = int(time.time() * 1000)
    group, name = "/aws/sagemaker/TrainingJobs", job.external_id
    _log_stream(sm, group, f"{name}/algo-1-1700000000", [format_epoch_line(1, row), "spot interruption"],
                now_ms - 60_000)
    _log_stream(sm, group, f"{name}/algo-1-1700009999",
                ["resuming after epoch 1", format_epoch_line(2, {**row, "val_accuracy": 0.5})], now_ms)
    with override_response("DescribeTrainingJob", TrainingJobStatus="InProgress"):
        job = sm.make().refresh(job.id)
    assert [m["epoch"] for m in job.metrics] == [1, 2] and job.metrics[1]["val_accuracy"] == 0.5
    assert sm.make().log_tail(job.id, 1).startswith("epoch=2 ")


def test_endpoints_are_listed_with_instance_type_age_last_invocation_and_idleness(sm, version):
    import datetime as dt

    backend = sm.make(endpoint_idle_hours=1)
    busy = backend.deploy(version.id, actor="tester")
    quiet = backend.deploy(version.id, actor="tester")
    boto3.client("cloudwatch").put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
        "MetricName": "Invocations", "Value": 3.0, "Timestamp": dt.datetime.now(dt.timezone.utc),
        "Dimensions": [{"Name": "EndpointName", "Value": busy.external_id},
                       {"Name": "VariantName", "Value": "AllTraffic"}]}])
    with override_response("ListEndpoints", Endpoints=[
            {"EndpointName": j.external_id, "EndpointStatus": "InService", "EndpointArn": "arn:x",
             "CreationTime": dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3),
             "LastModifiedTime": dt.datetime.now(dt.timezone.utc)} for j in (busy, quiet)]):
        listed = {e["name"]: e for e in sm.make(endpoint_idle_hours=1).list_endpoints()}
    assert listed[busy.external_id]["instance_type"] == sm.settings.inference_instance_type
    assert listed[busy.external_id]["last_invocation"] is not None and not listed[busy.external_id]["idle"]
    assert listed[quiet.external_id]["last_invocation"] is None and listed[quiet.external_id]["idle"]
