"""`python -m jobs` on the SageMaker backend against moto: what it asks before paid work, endpoint listing and
clean-up, following a job's CloudWatch log. In-process (the CLI's own parser and error handling)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time

import boto3
import pytest

from jobs import TrainingParams, follow, get_backend, list_jobs
from jobs.cli import main
from modeling import registry
from tests.aws_shims import _handler, override_response, record_requests
from tests.sagemaker_fixtures import moto_sagemaker, placeholder_model_dir


@pytest.fixture
def sm(aws_env, monkeypatch, request, tmp_path):
    env = moto_sagemaker(aws_env, monkeypatch, request, tmp_path)
    for name, value in {"WORKSPACE": env.settings.workspace, "SECRETS": tmp_path / "no-secrets.toml",
                        "BACKEND": "sagemaker", "AWS_REGION": "us-east-1", "SAGEMAKER_ROLE_ARN": env.settings.
                        sagemaker_role_arn, "S3_BUCKET": env.bucket, "S3_PREFIX": env.settings.s3_prefix}.items():
        monkeypatch.setenv(f"BINAUDIT_{name}", str(value))
    env.version = registry.register_model(env.engine, placeholder_model_dir(tmp_path), env.workspace.models_dir,
                                          actor="tester")
    return env


TRAIN = ["train", "--train", "s3://b/dataset/train", "--val", "s3://b/dataset/val", "--epochs", "1"]


def test_paid_work_is_priced_and_not_started_without_yes_when_nobody_can_answer(sm, capsys):
    with record_requests() as sent:
        assert main(TRAIN) == 2
    out, err = capsys.readouterr()
    assert "SageMaker training on ml.g4dn.xlarge, about $0.74/h (on-demand us-east-1, price table of" in out
    assert err.strip().endswith("pass --yes to start paid work without asking")
    assert sent.all("CreateTrainingJob") == [] and list_jobs(sm.engine) == []

    with record_requests() as sent:
        assert main([*TRAIN, "--yes"]) == 0
    assert len(sent.all("CreateTrainingJob")) == 1


@pytest.mark.parametrize(("answer", "started"), [("n", False), ("", False), ("y", True)])
def test_paid_work_asks_in_a_terminal(sm, monkeypatch, capsys, answer, started):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: answer)
    assert main(["deploy", sm.version.name]) == (0 if started else 2)
    out, _ = capsys.readouterr()
    assert "a SageMaker endpoint on ml.m5.large, about $0.12/h" in out and "until it is deleted" in out
    jobs = list_jobs(sm.engine, kind="deployment")
    assert len(jobs) == (1 if started else 0)
    live = {e["EndpointName"] for e in sm.sagemaker.list_endpoints()["Endpoints"]}  # moto's: every test's
    assert all(j.external_id in live for j in jobs)


def test_deploy_wait_reports_progress(sm, monkeypatch, capsys):
    monkeypatch.setattr("jobs.sagemaker.backend.ENDPOINT_POLL_SECONDS", 0)
    assert main(["deploy", sm.version.name, "--wait", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "endpoint Creating" in out and out.strip().splitlines()[-2].endswith("(InService)")


def test_deploy_list_flags_idle_endpoints_and_delete_idle_removes_binauditS_only(sm, capsys):
    backend = get_backend("sagemaker", settings=sm.settings, workspace=sm.workspace, engine=sm.engine)
    used, idle = (backend.deploy(sm.version.id, actor="tester") for _ in range(2))
    sm.sagemaker.create_model(ModelName="stray-model", ExecutionRoleArn=sm.settings.sagemaker_role_arn,
                              PrimaryContainer={"Image": "123.dkr.ecr.us-east-1.amazonaws.com/x:1"})
    sm.sagemaker.create_endpoint_config(EndpointConfigName="stray", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "stray-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.c5.xlarge"}])
    sm.sagemaker.create_endpoint(EndpointName="stray", EndpointConfigName="stray")
    now = dt.datetime.now(dt.timezone.utc)
    boto3.client("cloudwatch").put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
        "MetricName": "Invocations", "Value": 1.0, "Timestamp": now, "Dimensions": [
            {"Name": "EndpointName", "Value": used.external_id}, {"Name": "VariantName", "Value": "AllTraffic"}]}])
    listed = sm.sagemaker.list_endpoints()["Endpoints"]
    two_days_old = [{**e, "CreationTime": now - dt.timedelta(days=2)} for e in listed]
    with override_response("ListEndpoints", Endpoints=two_days_old):
        assert main(["deploy", "--list"]) == 0
        out, err = capsys.readouterr()
        rows = {line.split()[0]: line for line in out.splitlines()[1:]}
        assert "(idle)" not in rows[used.external_id] and "ml.m5.large" in rows[used.external_id]
        assert rows[idle.external_id].split()[1] == "(idle)" and "2.0 d" in rows[idle.external_id]
        assert "ml.c5.xlarge" in rows["stray"] and "(not BinAudit's)" in rows["stray"]
        assert f"{now:%Y-%m-%d}" in rows[used.external_id]  # the last invocation
        warning = next(line for line in err.splitlines() if line.startswith("warning: "))
        assert "had no invocation for 24 h" in warning and idle.external_id in warning  # moto's endpoints are
        assert used.external_id not in warning  # shared by every test: count only this test's

        assert main(["deploy", "--delete", "--idle"]) == 0
    remaining = {e["EndpointName"] for e in sm.sagemaker.list_endpoints()["Endpoints"]}
    assert idle.external_id not in remaining
    assert {used.external_id, "stray"} <= remaining  # another's endpoint is listed, never deleted wholesale
    assert main(["deploy", "--delete"]) == 2


def _put_log(group: str, stream: str, lines: list[str]) -> None:
    logs = boto3.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now_ms = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": now_ms + i, "message": line} for i, line in enumerate(lines)])


def test_follow_streams_a_training_jobs_cloudwatch_log_as_it_arrives(sm):
    backend = get_backend("sagemaker", settings=sm.settings, workspace=sm.workspace, engine=sm.engine)
    job = backend.start_training(TrainingParams(train="s3://b/t", val="s3://b/v", epochs=2), actor="tester")
    group, stream = "/aws/sagemaker/TrainingJobs", f"{job.external_id}/algo-1-1700000000"
    _put_log(group, stream, ["epoch 1 of 2"])
    statuses = iter(["InProgress", "InProgress", "Failed"])
    printed: list[str] = []

    def describe(parsed, **_):
        parsed.update(TrainingJobStatus=next(statuses), FailureReason="AlgorithmError: error: out of memory")

    def meanwhile(_seconds: float) -> None:  # while the CLI waits, the job logs on
        _put_log(group, stream, [f"line {len(printed)}"])

    with _handler("after-call.sagemaker.DescribeTrainingJob", describe):
        backend = get_backend("sagemaker", settings=sm.settings, workspace=sm.workspace, engine=sm.engine)
        final = follow(backend, job, on_log=printed.append, sleep=meanwhile)
    assert final.status == "Failed" and final.failure_reason == "AlgorithmError: error: out of memory"
    assert printed == ["epoch 1 of 2\n", "line 1\n", "line 2\n"]


def test_jobs_log_follow_prints_the_log_until_the_job_ends(sm, capsys):
    backend = get_backend("sagemaker", settings=sm.settings, workspace=sm.workspace, engine=sm.engine)
    job = backend.start_transform(sm.version.id, _photos(sm), None, actor="tester")
    _put_log("/aws/sagemaker/TransformJobs", f"{job.external_id}/i-0abc", ["scored 2 photos"])
    assert main(["log", job.id, "--follow", "--poll", "0"]) == 0  # moto completes the transform at once
    assert capsys.readouterr().out == "scored 2 photos\n"


def _photos(sm) -> str:
    sm.s3.put_object(Bucket=sm.bucket, Key="photos/a.jpg", Body=b"x")
    return f"s3://{sm.bucket}/photos/"
