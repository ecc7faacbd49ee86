"""The SageMaker backend (SDK v3, imported on first use): training, tuning, endpoints and batch transform on AWS.

Training runs train.py from the source package (packaging.py) under torchrun; tuning runs the shared search space
through SageMaker's tuner; endpoints and batch transform serve inference.py. Every resource is tagged with the job
(resource_tags). A completed training job (or a tuning job's best trial) is downloaded and registered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from binaudit.config import ConfigError
from jobs import store
from jobs.backend import Backend
from jobs.jobdirs import job_dir
from jobs.params import TrainingParams, TuningParams, flag_name
from jobs.records import FINAL_STATUSES, EndpointError, JobError, JobRecord
from jobs.sagemaker.aws import (
    AwsContext,
    aws_errors,
    error_code,
    extract_model_tarball,
    pack_model_folder,
)
from jobs.sagemaker.cloudwatch import LogFollower, first_host_text, last_invocation, log_source, tail
from jobs.sagemaker.packaging import ENTRY_SCRIPT, INFERENCE_SCRIPT, TARBALL_NAME, SourcePackage, build_source_package
from jobs.sagemaker.prices import gpu_count
from jobs.search_space import to_sagemaker_range
from modeling import registry
from modeling.metric_log import METRIC_DEFINITIONS, parse_metric_log

log = logging.getLogger(__name__)

ENDPOINT_PREFIX = "binaudit-"
ENDPOINT_POLL_SECONDS = 30  # deploy(wait=True); the SDK's own wait sleeps 30 s before its first look too
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # train.py resumes from <this>/<training job name> when it exists
TRANSFORM_MAX_PAYLOAD_MB = 20  # one photo per request; x TRANSFORM_CONCURRENCY must stay within SageMaker's 100 MB
TRANSFORM_CONCURRENCY = 4
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TAG_VALUE_UNSAFE = re.compile(r"[^\w .:/=+\-@]")  # what a tag value may not hold
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
STRATEGY_NAMES = {"bayesian": "Bayesian", "random": "Random"}
# boto3 names each kind's calls describe_<snake>/stop_<snake>, with <Camel>Name and <Camel>Status
AWS_JOBS = {"training": ("training_job", "TrainingJob"), "transform": ("transform_job", "TransformJob"),
            "tuning": ("hyper_parameter_tuning_job", "HyperParameterTuningJob")}


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder outside the paths the SDK refuses for code (/root, /etc, /var/lib, ~/.config, ...): a
    clone run as root under /root must still deploy. Removed when the object is cleaned up."""
    from sagemaker.core.common_utils import _SENSITIVE_SYSTEM_PATHS

    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        real = os.path.realpath(base)
        if os.path.isdir(real) and os.access(real, os.W_OK) and not any(
                real.startswith(p) for p in _SENSITIVE_SYSTEM_PATHS):
            return tempfile.TemporaryDirectory(prefix="binaudit-sdk-", dir=real)
    raise ConfigError("no writable temporary folder outside the paths the SageMaker SDK refuses; set TMPDIR")


def resource_tags(job: JobRecord) -> list[dict[str, str]]:
    """What every resource a job creates is tagged with (cost allocation, clean-up)."""
    actor = job.output.get("requested_by") or "unknown"
    return [{"Key": "project", "Value": "binaudit"}, {"Key": "binaudit:job-id", "Value": job.id},
            {"Key": "binaudit:started-by", "Value": TAG_VALUE_UNSAFE.sub("_", actor)[:256]}]


def folder_digest(folder: Path) -> str:
    """sha256 over a model folder's file names and contents: which weights a model.tar.gz holds."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _newest_version_at_most(requested: str, available: list[str]) -> str | None:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".") if p.isdigit())

    fitting = [v for v in available if key(v) <= key(requested) + (99,)]
    return max(fitting, key=key) if fitting else None


class SageMakerBackend(Backend):
    name = "sagemaker"

    def __init__(self, *, settings, workspace, engine, boto_session=None) -> None:
        super().__init__(settings=settings, workspace=workspace, engine=engine)
        self.aws = AwsContext.from_settings(settings, boto_session)
        self._sdk_session = None
        self._source_dir: tempfile.TemporaryDirectory | None = None
        self._package: SourcePackage | None = None

    # ---------------------------------------------------------------- SDK plumbing

    def sdk_session(self):
        """sagemaker.core Session over our boto3 session and adaptive-retry clients, bucket and prefix set."""
        if self._sdk_session is None:
            os.environ.setdefault("AWS_DEFAULT_REGION", self.aws.region)  # sagemaker.serve reads it at import
            from sagemaker.core.helper.session_helper import Session

            logging.getLogger("sagemaker").setLevel(logging.WARNING)  # the SDK logs every call at INFO
            self._sdk_session = Session(
                boto_session=self.aws.session, sagemaker_client=self.aws.client("sagemaker"),
                sagemaker_runtime_client=self.aws.client("sagemaker-runtime"), default_bucket=self.aws.bucket,
                default_bucket_prefix=self.aws.prefix or None, sagemaker_config=SDK_CONFIG,
            )
        return self._sdk_session

    def source_package(self) -> SourcePackage:
        if self._package is None:
            self._source_dir = scratch_dir()
            self._package = build_source_package(Path(self._source_dir.name))
        return self._package

    def source_tarball_uri(self) -> str:
        """The source package in S3 (content-addressed: uploaded once per distinct source tree)."""
        package = self.source_package()
        key = self.aws.key("code", package.digest[:16], TARBALL_NAME)
        with aws_errors("uploading the source code"):
            if not self.aws.object_exists(self.aws.bucket, key):
                self.aws.upload_file(package.tarball, key)
        return f"s3://{self.aws.bucket}/{key}"

    def image(self, scope: str, instance_type: str) -> str:
        """The PyTorch "training" or "inference" image for the configured versions."""
        from sagemaker.core import image_uris

        def retrieve(version: str) -> str:
            return image_uris.retrieve(framework="pytorch", region=self.aws.region, version=version,
                                       py_version=self.settings.python_version, instance_type=instance_type,
                                       image_scope=scope)

        wanted = self.settings.pytorch_version
        versions = [wanted]
        if scope == "inference":  # the SDK's list stops at 2.6: a newer version serves with the newest listed
            listed = list(image_uris.config_for_framework("pytorch")["inference"]["versions"])
            versions += [v for v in [_newest_version_at_most(wanted, listed)] if v]
        for version in versions:
            try:
                uri = retrieve(version)
            except ValueError as exc:
                error = exc
                continue
            if version != wanted:
                log.warning("no PyTorch %s inference image; serving with %s", wanted, version)
            return uri
        raise ConfigError(f"no SageMaker PyTorch {scope} image for BINAUDIT_PYTORCH_VERSION={wanted}"
                          + (f" (nor {versions[1]})" if len(versions) > 1 else "")
                          + f", BINAUDIT_PYTHON_VERSION={self.settings.python_version}: {error}") from None

    # ---------------------------------------------------------------- training

    def _channels(self, params: TrainingParams) -> dict[str, str]:
        """S3 channels; train and val default to where `python -m data_tools upload` puts them (<prefix>/dataset).
        A local recounts folder is uploaded when the job is submitted (_recount_channel)."""
        params.check()
        channels = {"train": self.aws.uri("dataset", "train"), "val": self.aws.uri("dataset", "val"),
                    **params.channels()}
        local = [f"{k}={v}" for k, v in channels.items() if not v.startswith("s3://") and k != "recounts"]
        if local:
            raise JobError(f"the SageMaker backend reads S3 prefixes, got {', '.join(local)}; upload the dataset "
                           f"first: python -m data_tools upload --dataset DATASET (it prints the channels)")
        return channels

    def _compute(self, params: TrainingParams) -> tuple[str, int]:
        return (params.instance_type or self.settings.training_instance_type,
                params.instance_count or self.settings.training_instance_count)

    def model_trainer(self, params: TrainingParams, job: JobRecord):
        """The ModelTrainer for one training job (or a tuning job's trials)."""
        from sagemaker.core.shapes import MetricDefinition, Tag
        from sagemaker.core.training.configs import (
            CheckpointConfig,
            Compute,
            OutputDataConfig,
            SourceCode,
            StoppingCondition,
        )
        from sagemaker.train import ModelTrainer
        from sagemaker.train.distributed import Torchrun

        instance_type, instance_count = self._compute(params)
        spot = self.settings.use_spot
        max_runtime = self.settings.max_runtime_seconds
        trainer = ModelTrainer(
            sagemaker_session=self.sdk_session(),
            role=self.aws.role_arn,
            base_job_name=f"binaudit-{job.id}",  # the SDK adds only a timestamp to the second: the job id keeps it unique
            training_image=self.image("training", instance_type),
            source_code=SourceCode(source_dir=self.source_tarball_uri(), entry_script=ENTRY_SCRIPT),
            # torchrun starts one process per GPU on every instance (one on a CPU instance); train.py runs
            # DistributedDataParallel when there are several (WORLD_SIZE > 1)
            distributed=Torchrun(),
            compute=Compute(instance_type=instance_type, instance_count=instance_count,
                            volume_size_in_gb=self.settings.training_volume_gb,
                            enable_managed_spot_training=True if spot else None),
            hyperparameters=params.to_hyperparameters(),
            output_data_config=OutputDataConfig(s3_output_path=self.aws.uri("jobs", job.id, "output")),
            stopping_condition=StoppingCondition(max_runtime_in_seconds=max_runtime,
                                                 max_wait_time_in_seconds=2 * max_runtime if spot else None),
            # spot instances can be reclaimed: train.py checkpoints every epoch and resumes from the synced folder
            checkpoint_config=CheckpointConfig(s3_uri=self.aws.uri("jobs", job.id, "checkpoints"),
                                               local_path=CHECKPOINT_LOCAL_PATH) if spot else None,
            environment={"PYTHONUNBUFFERED": "1"},
            tags=[Tag(key=t["Key"], value=t["Value"]) for t in resource_tags(job)],
        )
        return trainer.with_metric_definitions(
            [MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in METRIC_DEFINITIONS])

    def _recount_channel(self, job_id: str, recounts: str) -> str | None:
        """The "recounts" channel (train.py's --recounts): an s3:// prefix as given, a local folder (the audit
        core's export) uploaded under the job's prefix; None for a folder without photos, since SageMaker refuses a
        channel whose S3 prefix holds no objects."""
        if recounts.startswith("s3://"):
            return recounts
        folder = Path(recounts)
        if not folder.is_dir():
            raise JobError(f"recounts folder not found: {folder}")
        if not any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*")):
            return None
        with aws_errors("uploading the recounts"):
            return self.aws.upload_folder(folder, self.aws.key("jobs", job_id, "recounts"))

    def _inputs(self, channels: dict[str, str]) -> list:
        from sagemaker.core.training.configs import InputData

        return [InputData(channel_name=name, data_source=uri if uri.endswith("/") else uri + "/")
                for name, uri in channels.items()]

    def _submit(self, job: JobRecord, what: str, submit) -> JobRecord:
        """Run the SDK call that creates the AWS job; on failure the BinAudit job ends Failed with the reason."""
        try:
            with aws_errors(f"starting the {what}"):
                external_id, output = submit()
        except (JobError, ConfigError) as exc:
            store.finish_job(self.engine, job.id, "Failed", failure_reason=str(exc))
            raise
        except ValueError as exc:  # the SDK's own validation
            store.finish_job(self.engine, job.id, "Failed", failure_reason=f"starting the {what}: {exc}")
            raise JobError(f"starting the {what}: {exc}") from None
        store.merge_output(self.engine, job.id, **output)
        job = store.mark_started(self.engine, job.id, external_id=external_id)
        if not job.is_active or job.stop_requested:
            # stopped while being submitted: the stop found nothing on AWS to stop, and what the submission made
            # would run (and bill) with nobody watching it
            self._stop_submitted(job)
            job = store.get_job(self.engine, job.id)
        return job

    def _stop_submitted(self, job: JobRecord) -> None:
        """Stop the AWS job (delete the endpoint) of a job stopped during its submission; a failure is recorded."""
        try:
            if job.kind == "deployment":
                self.delete_endpoint(job.id, actor="system")
            else:
                self._stop_aws_job(job)
        except (ConfigError, JobError) as exc:
            reason = (f"stopped while being submitted, but stopping {job.external_id} on SageMaker failed ({exc}); "
                      f"it may still run and bill: stop it in the SageMaker console")
            store.update_job(self.engine, job.id, failure_reason=reason)
            raise JobError(f"{job.id}: {reason}") from None

    def start_training(self, params: TrainingParams, *, actor: str) -> JobRecord:
        channels = self._channels(params)
        job = self._create("training", {"training": params.to_dict()}, actor)

        def submit() -> tuple[str, dict[str, Any]]:
            if "recounts" in channels:
                recounts = self._recount_channel(job.id, channels.pop("recounts"))
                channels.update({"recounts": recounts} if recounts else {})
            trainer = self.model_trainer(params, job)
            trainer.train(input_data_config=self._inputs(channels), wait=False, logs=False)
            name = trainer._latest_training_job.training_job_name
            return name, {"training_job_name": name, "output_path": self.aws.uri("jobs", job.id, "output"),
                          "source_code": self.source_tarball_uri(), "channels": channels}

        return self._submit(job, "training job", submit)

    def start_tuning(self, params: TuningParams, *, actor: str) -> JobRecord:
        channels = self._channels(params.base)
        if params.base.recounts:
            raise JobError("recounts are not supported for SageMaker tuning yet; tune on the base dataset")
        params.check()
        job = self._create("tuning", {"tuning": params.to_dict()}, actor)

        def submit() -> tuple[str, dict[str, Any]]:
            from sagemaker.train.tuner import HyperparameterTuner

            trainer = self.model_trainer(params.base, job)
            instance_type, instance_count = self._compute(params.base)
            if instance_count > 1 or gpu_count(instance_type) > 1:  # trials run the image's launcher, not torchrun
                trainer.hyperparameters["sagemaker_torch_distributed_enabled"] = "true"
            tuner = HyperparameterTuner(
                model_trainer=trainer, objective_metric_name=params.objective_metric,
                objective_type=params.objective_type,
                hyperparameter_ranges={flag_name(k): to_sagemaker_range(p) for k, p in params.search_space.items()},
                metric_definitions=[dict(d) for d in METRIC_DEFINITIONS], strategy=STRATEGY_NAMES[params.strategy],
                max_jobs=params.max_jobs, max_parallel_jobs=params.max_parallel_jobs,
                early_stopping_type="Auto" if params.early_stopping else "Off",
                random_seed=params.seed or None, base_tuning_job_name="binaudit-tune",
                max_runtime_in_seconds=self.settings.max_tuning_runtime_seconds, tags=resource_tags(job),
            )
            tuner.tune(inputs=self._inputs(channels), job_name=job.id, wait=False)
            name = tuner.latest_tuning_job.hyper_parameter_tuning_job_name
            return name, {"tuning_job_name": name, "output_path": self.aws.uri("jobs", job.id, "output"),
                          "channels": channels}

        return self._submit(job, "tuning job", submit)

    # ---------------------------------------------------------------- models on S3

    def model_data_uri(self, version: registry.ModelVersion) -> str:
        """The version's model.tar.gz in S3: the training job's own artifact, else the local folder uploaded once
        under a key named by its content's digest (a reset database or another workspace on the same bucket may
        have another "v3": the digest, not the name, says which weights a key holds)."""
        known = (version.config.get("sagemaker") or {}).get("model_data")
        if known:
            return known
        key = self.aws.key("models", version.name, folder_digest(version.model_dir)[:16], "model.tar.gz")
        with aws_errors(f"uploading model {version.name}"):
            if not self.aws.object_exists(self.aws.bucket, key):
                with tempfile.TemporaryDirectory() as tmp:
                    self.aws.upload_file(pack_model_folder(version.model_dir, Path(tmp) / "model.tar.gz"), key)
        return f"s3://{self.aws.bucket}/{key}"

    @contextlib.contextmanager
    def built_model(self, version: registry.ModelVersion, instance_type: str, job: JobRecord) -> Iterator[tuple]:
        """(ModelBuilder, the SageMaker model it built) serving the version with inference.py; the SDK's scratch
        folder is removed afterwards."""
        from sagemaker.core.training.configs import SourceCode
        from sagemaker.serve.model_builder import ModelBuilder

        request_bytes = str(TRANSFORM_MAX_PAYLOAD_MB * 1024 * 1024)
        with scratch_dir() as scratch:
            builder = ModelBuilder(
                model_path=scratch,  # the SDK repacks model.tar.gz here: never under a path it refuses
                s3_model_data_url=self.model_data_uri(version), image_uri=self.image("inference", instance_type),
                role_arn=self.aws.role_arn, instance_type=instance_type, sagemaker_session=self.sdk_session(),
                source_code=SourceCode(source_dir=str(self.source_package().folder), entry_script=INFERENCE_SCRIPT),
                # TorchServe refuses requests over 6.5 MB unless told otherwise (a large photo in a batch transform)
                env_vars={"TS_MAX_REQUEST_SIZE": request_bytes, "TS_MAX_RESPONSE_SIZE": request_bytes},
            )
            yield builder, builder.build(model_name=f"{ENDPOINT_PREFIX}{version.name}-{job.id.split('-', 1)[1]}",
                                         tags=resource_tags(job))

    def _finish_with_model(self, job: JobRecord, training_job_name: str, description: dict[str, Any],
                           info: dict[str, Any]) -> JobRecord:
        """Download, unpack and register a completed training job's model; a missing artifact fails the job."""
        artifact_uri = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if not artifact_uri:
            return store.finish_job(self.engine, job.id, "Failed", output=info, failure_reason=(
                f"{training_job_name} completed on SageMaker but reported no model artifact"))[0]

        def register() -> registry.ModelVersion:
            folder = job_dir(self.workspace, job.id)
            with aws_errors(f"downloading {artifact_uri}"):
                tarball = self.aws.download(artifact_uri, folder / "model.tar.gz")
            return registry.register_model(
                self.engine, extract_model_tarball(tarball, folder / "model"), self.workspace.models_dir,
                job_id=job.id, actor=job.output.get("requested_by", "system"),
                extra_config={"job": {"id": job.id, "backend": self.name},
                              "sagemaker": {"model_data": artifact_uri, "training_job_name": training_job_name}})

        return store.finish_with_model(
            self.engine, job.id, register, output={**info, "model_data": artifact_uri},
            errors=(JobError, ConfigError, registry.RegistryError, OSError, ValueError),
            failure=f"{training_job_name} completed on SageMaker, but its model artifact {artifact_uri} could not be "
                    f"registered")

    # ---------------------------------------------------------------- endpoints

    def deploy(self, model_version_id: int | str, *, actor: str, wait: bool = False,
               timeout_seconds: float = 3600.0, on_progress: Callable[[JobRecord], None] | None = None) -> JobRecord:
        version = registry.get_version(self.engine, model_version_id)
        instance_type = self.settings.inference_instance_type
        job = self._create("deployment", {"model_version_id": version.id, "model_version": version.name},
                           actor, model_version_id=version.id, model_version=version.name,
                           instance_type=instance_type, endpoint_status="Creating")
        endpoint_name = f"{ENDPOINT_PREFIX}{job.id}"

        def submit() -> tuple[str, dict[str, Any]]:
            with self.built_model(version, instance_type, job) as (builder, model):
                endpoint = builder.deploy(endpoint_name=endpoint_name, initial_instance_count=1, wait=False,
                                          tags=resource_tags(job))
            return endpoint.endpoint_name, {"endpoint_name": endpoint.endpoint_name, "model_name": model.model_name,
                                            "model_data": builder.s3_model_data_url}

        job = self._submit(job, "endpoint", submit)
        if not wait:
            return job
        deadline = time.monotonic() + timeout_seconds
        while job.is_active and job.output.get("endpoint_status") != "InService" and time.monotonic() < deadline:
            if on_progress is not None:
                on_progress(job)
            time.sleep(ENDPOINT_POLL_SECONDS)
            job = self.refresh(job.id)
        return job

    def _deployment(self, job_or_endpoint: str) -> tuple[str | None, JobRecord | None]:
        """(endpoint name, deployment job) for a job id or an endpoint name; the name is None while the job is
        being submitted, the job None for an endpoint BinAudit did not record (still invokable and deletable)."""
        try:
            job = store.get_job(self.engine, job_or_endpoint)
        except JobError:
            known = [j for j in store.list_jobs(self.engine, kind="deployment", backend=self.name, limit=None)
                     if j.external_id == job_or_endpoint]
            return job_or_endpoint, (known[0] if known else None)
        if job.backend != self.name or job.kind != "deployment" or not (job.external_id or job.is_active):
            raise JobError(f"job {job.id} is not a SageMaker deployment")
        return job.external_id, job

    def invoke(self, job_or_endpoint: str, body: bytes, content_type: str,
               accept: str = "application/json") -> dict[str, Any]:
        name, job = self._deployment(job_or_endpoint)
        if name is None:
            raise JobError(f"endpoint {job.id} is still being created; try again in a few minutes")
        try:
            response = self.aws.client("sagemaker-runtime").invoke_endpoint(
                EndpointName=name, Body=body, ContentType=content_type, Accept=accept)
        except ClientError as exc:
            status = int(exc.response.get("OriginalStatusCode") or
                         exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            message = exc.response.get("OriginalMessage") or exc.response.get("Error", {}).get("Message", str(exc))
            raise EndpointError(f"endpoint {name} answered {status}: {message}", status) from None
        payload = response["Body"].read()
        try:
            return json.loads(payload)
        except ValueError:
            raise JobError(f"endpoint {name} did not answer JSON: {payload[:200]!r}") from None

    def _delete_quietly(self, call, **kwargs: str) -> None:
        try:
            call(**kwargs)
        except ClientError as exc:
            if error_code(exc) not in ("ValidationException", "ResourceNotFound"):
                raise

    def delete_endpoint(self, job_or_endpoint: str, *, actor: str) -> JobRecord | None:
        """Delete the endpoint, its endpoint config and its model(s): nothing is left to bill or to clutter. A
        deployment still being submitted is marked Stopped now; _submit deletes what it created once it is named."""
        name, job = self._deployment(job_or_endpoint)
        if name is None:
            store.request_stop(self.engine, job.id, actor=actor)
            return store.finish_job(self.engine, job.id, "Stopped", actor=actor,
                                    failure_reason="stopped while its endpoint was being created")[0]
        sm = self.aws.client("sagemaker")
        with aws_errors(f"deleting endpoint {name}"):
            config_name, models = None, []
            try:
                config = self._endpoint_config(name)
                config_name = config["EndpointConfigName"]
                models = [v["ModelName"] for v in config["ProductionVariants"] if v.get("ModelName")]
            except ClientError as exc:
                if error_code(exc) != "ValidationException":  # already gone: delete what the job recorded
                    raise
            if job is not None:
                config_name = config_name or job.output.get("endpoint_name")
                models = models or [m for m in [job.output.get("model_name")] if m]
            self._delete_quietly(sm.delete_endpoint, EndpointName=name)
            if config_name:
                self._delete_quietly(sm.delete_endpoint_config, EndpointConfigName=config_name)
            for model in models:
                self._delete_quietly(sm.delete_model, ModelName=model)
        if job is None:
            return None
        store.request_stop(self.engine, job.id, actor=actor)
        deleted = {"endpoint_status": "Deleted",
                   "deleted": {"endpoint": name, "endpoint_config": config_name, "models": models}}
        if not store.finish_job(self.engine, job.id, "Stopped", actor=actor, output=deleted)[1]:
            store.merge_output(self.engine, job.id, **deleted)  # it ended earlier (stopped during submission)
        return store.get_job(self.engine, job.id)

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint in the region (BinAudit's and others'; each bills until it is deleted): instance type,
        age, last invocation (CloudWatch's Invocations metric, by the hour) and whether it is idle (no invocation
        for settings.endpoint_idle_hours, and older than that)."""
        sm = self.aws.client("sagemaker")
        known = {j.external_id: j for j in store.list_jobs(self.engine, kind="deployment", backend=self.name,
                                                            limit=None) if j.external_id}
        now = dt.datetime.now(dt.timezone.utc)
        idle_after = dt.timedelta(hours=self.settings.endpoint_idle_hours)
        out = []
        with aws_errors("listing endpoints"):
            for page in sm.get_paginator("list_endpoints").paginate():
                for ep in page.get("Endpoints", []):
                    name, job = ep["EndpointName"], known.get(ep["EndpointName"])
                    created, last = ep.get("CreationTime"), last_invocation(self.aws.client("cloudwatch"), name, now)
                    seen = max(t for t in (created, last) if t) if created or last else None
                    out.append({"backend": self.name, "name": name, "status": ep.get("EndpointStatus"),
                                "created_at": created, "job_id": job.id if job else None,
                                "model_version": job.output.get("model_version") if job else None,
                                "instance_type": self._endpoint_instance_type(name), "last_invocation": last,
                                "idle": seen is not None and now - seen > idle_after})
        return out

    def _endpoint_config(self, name: str) -> dict[str, Any]:
        sm = self.aws.client("sagemaker")
        config_name = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        return sm.describe_endpoint_config(EndpointConfigName=config_name)

    def _endpoint_instance_type(self, name: str) -> str | None:
        try:
            config = self._endpoint_config(name)
        except ClientError:
            return None  # deleted meanwhile
        return ", ".join(sorted({v.get("InstanceType") or "serverless" for v in config["ProductionVariants"]}))

    # ---------------------------------------------------------------- batch transform

    def start_transform(self, model_version_id: int | str, input: str, output: str | None, *, actor: str
                        ) -> JobRecord:
        if not str(input).startswith("s3://"):
            raise JobError(f"a SageMaker batch transform reads an S3 prefix of photos, got {input}")
        if output and not str(output).startswith("s3://"):
            raise JobError(f"a SageMaker batch transform writes to an S3 prefix, got {output}")
        version = registry.get_version(self.engine, model_version_id)
        instance_type = self.settings.transform_instance_type
        job = self._create("transform", {"transform": {"model_version_id": version.id, "input": input,
                                                       "output": output}}, actor,
                           model_version_id=version.id, model_version=version.name)
        output_path = output or self.aws.uri("jobs", job.id, "transform")

        def submit() -> tuple[str, dict[str, Any]]:
            manifest = self._image_manifest(input, job.id)
            with self.built_model(version, instance_type, job) as (builder, model):
                transformer = builder.transformer(
                    instance_count=1, instance_type=instance_type, output_path=output_path, accept="application/json",
                    max_payload=TRANSFORM_MAX_PAYLOAD_MB, max_concurrent_transforms=TRANSFORM_CONCURRENCY,
                    tags=resource_tags(job))
                transformer.transform(manifest, data_type="ManifestFile", content_type="application/x-image",
                                      job_name=f"{ENDPOINT_PREFIX}{job.id}", wait=False, logs=False)
            name = transformer.latest_transform_job.transform_job_name
            return name, {"transform_job_name": name, "model_name": model.model_name, "output_path": output_path,
                          "manifest": manifest}

        return self._submit(job, "batch transform", submit)

    def _image_manifest(self, input: str, job_id: str) -> str:
        """A manifest of exactly the photos under the input prefix (by suffix), uploaded under the job's prefix:
        batch transform sends every object it is given, and a .DS_Store or a CSV would fail the whole job. Answers
        keep the photos' names: <output>/<path below the prefix>.out."""
        bucket, prefix = input[5:].split("/", 1) if "/" in input[5:] else (input[5:], "")
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        keys = []
        for page in self.aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"][len(prefix):] for o in page.get("Contents", [])
                     if o["Key"].lower().endswith(IMAGE_SUFFIXES) and not o["Key"].rsplit("/", 1)[-1].startswith(".")]
        if not keys:
            raise JobError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) under {input}")
        manifest = [{"prefix": f"s3://{bucket}/{prefix}"}, *sorted(keys)]
        key = self.aws.key("jobs", job_id, "transform-input.manifest")
        self.aws.client("s3").put_object(Bucket=self.aws.bucket, Key=key, Body=json.dumps(manifest).encode())
        return f"s3://{self.aws.bucket}/{key}"

    # ---------------------------------------------------------------- watching

    def _refresh(self, job: JobRecord) -> JobRecord:
        if not job.external_id:  # still being submitted
            return job
        with aws_errors(f"refreshing {job.id}"):
            if job.kind == "deployment":
                return self._refresh_endpoint(job)
            d = self._aws_job_call(job, "describe")
            aws_status = d[f"{AWS_JOBS[job.kind][1]}Status"]
            status = aws_status if aws_status in FINAL_STATUSES else "InProgress"  # AWS spells the ends as we do
            info: dict[str, Any] = {"sagemaker_status": aws_status}
            if job.kind == "training":
                info.update(secondary_status=d.get("SecondaryStatus"), billable_seconds=d.get("BillableTimeInSeconds"))
                job = store.update_job(self.engine, job.id, metrics=self._training_metrics(job.external_id, d))
            elif job.kind == "tuning":
                info.update(self._tuning_info(job, d))
            if status == "InProgress":
                return store.merge_output(self.engine, job.id, **info)
            if status != "Completed" or job.kind == "transform":  # the end of a job that registers nothing
                reason = None if status == "Completed" else d.get("FailureReason") or (
                    "stopped on request" if status == "Stopped" else "no reason given")
                return store.finish_job(self.engine, job.id, status, failure_reason=reason, output=info)[0]
            if job.kind == "training":
                return self._finish_with_model(job, job.external_id, d, info)
            return self._finish_best_trial(job, info)

    def _aws_job_call(self, job: JobRecord, verb: str) -> dict[str, Any]:
        """describe_* or stop_* of the job's AWS training, tuning or transform job."""
        snake, camel = AWS_JOBS[job.kind]
        return getattr(self.aws.client("sagemaker"), f"{verb}_{snake}")(**{f"{camel}Name": job.external_id})

    def _stop_aws_job(self, job: JobRecord) -> None:
        with aws_errors(f"stopping {job.external_id}"):
            self._aws_job_call(job, "stop")

    def _training_metrics(self, name: str, description: dict[str, Any]) -> list[dict[str, Any]]:
        """Per-epoch metrics parsed from the CloudWatch log with the same regexes (a restarted run's epochs replace
        those it repeats); else the final values."""
        text = first_host_text(self.aws.client("logs"), log_source("training", name))
        metrics = list({int(row["epoch"]): row for row in parse_metric_log(text)}.values())
        if metrics:
            return metrics
        final = {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList") or []}
        return [final] if final else []

    def _tuning_info(self, job: JobRecord, d: dict[str, Any]) -> dict[str, Any]:
        info = {"objective": job.params["tuning"]["objective"], "trial_counts": d.get("TrainingJobStatusCounters")}
        best = d.get("BestTrainingJob")
        if best:
            objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
            info["best_trial"] = {"training_job_name": best.get("TrainingJobName"), "value": objective.get("Value"),
                                  "values": best.get("TunedHyperParameters")}
        return info

    def _finish_best_trial(self, job: JobRecord, info: dict[str, Any]) -> JobRecord:
        """Register a completed tuning job's best trial's model."""
        best = (info.get("best_trial") or {}).get("training_job_name")
        if not best:
            return store.finish_job(self.engine, job.id, "Failed", output=info,
                                    failure_reason="the tuning job completed without a best training job")[0]
        try:
            best_job = self.aws.client("sagemaker").describe_training_job(TrainingJobName=best)
        except ClientError as exc:
            return store.finish_job(self.engine, job.id, "Failed", output=info, failure_reason=(
                f"the tuning job completed, but its best training job {best} cannot be "
                f"described: {exc.response.get('Error', {}).get('Message', exc)}"))[0]
        return self._finish_with_model(job, best, best_job, info)

    def _refresh_endpoint(self, job: JobRecord) -> JobRecord:
        try:
            d = self.aws.client("sagemaker").describe_endpoint(EndpointName=job.external_id)
        except ClientError as exc:
            if error_code(exc) != "ValidationException":
                raise
            status = "Stopped" if job.stop_requested else "Failed"
            return store.finish_job(self.engine, job.id, status, output={"endpoint_status": "Deleted"},
                                    failure_reason=None if job.stop_requested else
                                    f"endpoint {job.external_id} no longer exists (deleted outside BinAudit?)")[0]
        if d["EndpointStatus"] == "Failed":
            return store.finish_job(self.engine, job.id, "Failed", output={"endpoint_status": "Failed"},
                                    failure_reason=d.get("FailureReason") or "endpoint creation failed")[0]
        return store.merge_output(self.engine, job.id, endpoint_status=d["EndpointStatus"])

    # ---------------------------------------------------------------- stopping and logs

    def _stop_running(self, job: JobRecord, *, actor: str) -> JobRecord:
        job = store.get_job(self.engine, job.id)  # read after the stop request: the submission may have named it since
        if not job.external_id:  # still being submitted: _submit sees the stop request and stops the AWS job
            return store.finish_job(self.engine, job.id, "Stopped", actor=actor, failure_reason="stopped on request")[0]
        self._stop_aws_job(job)
        return store.get_job(self.engine, job.id)

    def log_tail(self, job_id: str, lines: int = 50) -> str:
        job = self._own_job(job_id)
        if not job.external_id:
            return ""
        with aws_errors(f"reading the log of {job.id}"):
            return tail(self.aws.client("logs"), log_source(job.kind, job.external_id), lines)

    def log_follower(self, job_id: str) -> Callable[[], str]:
        """A function that returns the job's new CloudWatch log lines on each call (jobs log --follow)."""
        job = self._own_job(job_id)
        follower: LogFollower | None = None

        def new_text() -> str:
            nonlocal job, follower
            if follower is None:
                job = store.get_job(self.engine, job.id)  # a job being submitted gets its AWS name later
                if not job.external_id:
                    return ""
                follower = LogFollower(self.aws.client("logs"), log_source(job.kind, job.external_id))
            with aws_errors(f"reading the log of {job.id}"):
                return follower.new_text()

        return new_text
