"""Run what SageMaker's PyTorch containers run, on this machine, from the requests the SDK sent (moto received).

    with opt_ml(tmp_path) as ml:                     # a folder that the container sees as /opt/ml
        lay_out_training(ml, request, s3)            # input/config/*.json and input/data/<channel>/ from
                                                     # CreateTrainingJob (or a tuning trial's definition)
        run = run_container(ml, request_entrypoint(request), container_env(...))

The drivers the SDK uploads and AWS's toolkits hard-code /opt/ml, so each run gets a private mount namespace
(`unshare --mount`) with an empty /opt in which the folder is bind-mounted at /opt/ml: nothing else on the machine
sees it (another test's train.py must not find /opt/ml/checkpoints), nothing is created or written in this machine's
/opt (a real /opt/ml is left alone), and two runs never collide.
That needs root (CI runs as root); elsewhere the tests skip, saying so. TorchServe's toolkit also writes
/etc/sagemaker-ts.properties: see `ts_config`. The Python is .venv-container (tests/container_env.py): torch,
torchvision, pillow, numpy and AWS's toolkits, none of the project's requirements, and the project's code only as
the uploaded source package.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.container_env import build

OPT_ML = "/opt/ml"
TS_CONFIG = Path("/etc/sagemaker-ts.properties")
HOST = "algo-1"
# in a private mount namespace: an empty /opt (nothing is created on this machine's own /opt), the folder at /opt/ml,
# then become the container's command
NAMESPACE = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs binaudit-opt /opt && mkdir /opt/ml && mount --bind "$0" /opt/ml && exec "$@"']


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run([*NAMESPACE, "/", "true"], capture_output=True, timeout=30).returncode == 0


@contextlib.contextmanager
def opt_ml(tmp_path: Path) -> Iterator[Path]:
    """A folder that container runs see as /opt/ml; skips where a private mount namespace cannot be had."""
    if not _can_unshare():
        pytest.skip("AWS's container drivers hard-code /opt/ml; mounting a folder there privately needs root "
                    "and unshare (CI has both)")
    ml = tmp_path / "opt-ml"
    ml.mkdir()
    yield ml


def host_path(ml: Path, container_path: str) -> Path:
    """Where a container path under /opt/ml lies on this machine."""
    assert container_path.startswith(OPT_ML), container_path
    return ml / container_path[len(OPT_ML):].lstrip("/")


@contextlib.contextmanager
def ts_config() -> Iterator[None]:
    """TorchServe's toolkit writes /etc/sagemaker-ts.properties: one server at a time, removed afterwards; a file
    that this suite did not write is left alone (the test skips)."""
    with open("/tmp/binaudit-sagemaker-ts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if TS_CONFIG.exists() and "inference_address=http://0.0.0.0:" not in TS_CONFIG.read_text(errors="replace"):
            pytest.skip(f"{TS_CONFIG} exists and is not this test suite's: left alone")
        try:
            yield
        finally:
            TS_CONFIG.unlink(missing_ok=True)


def container_python() -> Path:
    return build()


def _download_prefix(s3, uri: str, dest: Path) -> int:
    """An S3Prefix channel as SageMaker lays it out: every object under the prefix, at its path below it."""
    bucket, prefix = uri[5:].split("/", 1)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/") or obj["Key"].rsplit("/", 1)[-1]
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(dest / rel))
            n += 1
    return n


def lay_out_training(ml: Path, request: dict[str, Any], s3, hyperparameters: dict[str, str] | None = None) -> None:
    """/opt/ml/input as SageMaker prepares it for one training job (or tuning trial): config files and channels.
    The checkpoint folder is kept (SageMaker syncs it back from S3 on a restart)."""
    config = ml / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    resources = request["ResourceConfig"]
    hyper = request.get("HyperParameters") if hyperparameters is None else hyperparameters
    (config / "hyperparameters.json").write_text(json.dumps(hyper))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": HOST, "current_instance_type": resources["InstanceType"],
        "current_group_name": "homogeneousCluster", "hosts": [HOST], "network_interface_name": "eth0",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": resources["InstanceType"],
                             "hosts": [HOST]}]}))
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels}))
    if request.get("CheckpointConfig"):
        (config / "checkpointconfig.json").write_text(json.dumps(request["CheckpointConfig"]))
        host_path(ml, request["CheckpointConfig"].get("LocalPath") or "/opt/ml/checkpoints").mkdir(
            parents=True, exist_ok=True)
    for name, channel in channels.items():
        dest = ml / "input" / "data" / name
        dest.mkdir(parents=True, exist_ok=True)
        assert _download_prefix(s3, channel["DataSource"]["S3DataSource"]["S3Uri"], dest), f"channel {name} is empty"
    for folder in ("model", "output/data", "code"):
        (ml / folder).mkdir(parents=True, exist_ok=True)


def container_env(job_name: str, environment: dict[str, str] | None, aws_endpoint: str, **extra: str
                  ) -> dict[str, str]:
    """The container's environment: its Python first on PATH, the job's Environment, what SageMaker sets, and
    the moto endpoint in place of AWS (the toolkit downloads a tuning trial's code from S3 with boto3)."""
    python = container_python()
    env = {"PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin", "HOME": OPT_ML, "LANG": "C.UTF-8",
           "TRAINING_JOB_NAME": job_name, "AWS_ENDPOINT_URL": aws_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": os.environ.get(
               "CONTRACT_CUDA_VISIBLE_DEVICES", "")}
    env.update(environment or {})
    env.update(extra)
    return env


@dataclass
class ContainerRun:
    returncode: int
    output: str

    def matches(self, definitions: list[dict[str, str]]) -> dict[str, list[float]]:
        """What SageMaker's metric definitions (the job's own regexes) read from this output."""
        found: dict[str, list[float]] = {}
        for d in definitions:
            found[d["Name"]] = [float(m.group(1)) for m in re.finditer(d["Regex"], self.output)]
        return found


def start_container(ml: Path, command: list[str], env: dict[str, str], cwd: Path | str = "/") -> subprocess.Popen:
    """`command` in its own session and mount namespace, with `ml` at /opt/ml, output collected by `_Reader`."""
    return subprocess.Popen([*NAMESPACE, str(ml), *command], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Signal the container's whole process group and wait; SIGKILL if it will not end."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def run_container(ml: Path, command: list[str], env: dict[str, str], timeout: float = 300,
                  stop_when: Callable[[], bool] | None = None) -> ContainerRun:
    """Run to the end, or until `stop_when()` is true, when the container gets SIGTERM (as a reclaimed spot
    instance does) and is waited for."""
    proc = start_container(ml, command, env)
    reader = _Reader(proc)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the container run timed out:\n" + reader.text()[-6000:])
            if stop_when is not None and stop_when():
                stop(proc)
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            stop(proc, signal.SIGKILL)
        reader.join()
    return ContainerRun(proc.returncode, reader.text())


class _Reader:
    """Collects a process's output on a thread (the pipe must be drained while it runs)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        self._thread.start()

    def text(self) -> str:
        return "".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=30)


def request_entrypoint(request: dict[str, Any]) -> list[str]:
    """The command SageMaker starts the container with: the job's ContainerEntrypoint + ContainerArguments."""
    spec = request["AlgorithmSpecification"]
    assert spec.get("ContainerEntrypoint"), "the request sets no container entrypoint (the SDK's drivers do)"
    return [*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", [])]
