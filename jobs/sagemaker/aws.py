"""AWS plumbing for the SageMaker backend: settings checks, boto3 clients with adaptive retries, S3 helpers.

Region, role ARN, bucket and prefix come only from `binaudit.config.Settings`; credentials from boto3's normal
chain. Anything missing raises ConfigError naming what to set. boto3 is imported here, the SageMaker SDK is not.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from binaudit.config import ConfigError, Settings
from jobs.records import JobError
from modeling.registry import LOCAL_SCORING_FILES

# adaptive: standard retries (throttling, 5xx, dropped connections) plus client-side rate limiting once throttled
RETRIES = {"mode": "adaptive", "max_attempts": 8}
CREDENTIALS_HELP = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN "
                    "for temporary ones), or AWS_PROFILE, or run `aws configure` / `aws sso login`")


def _required(value: str, message: str) -> str:
    if not value:
        raise ConfigError(message)
    return value


@dataclass
class AwsContext:
    """Where BinAudit works on AWS: region, execution role, bucket and prefix, and a boto3 session."""

    region: str
    role_arn: str
    bucket: str
    prefix: str
    session: boto3.Session
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, boto_session: boto3.Session | None = None) -> AwsContext:
        region = _required(settings.aws_region, "no AWS region configured: set BINAUDIT_AWS_REGION or aws_region "
                                                "under [binaudit] in .streamlit/secrets.toml (e.g. us-east-1)")
        role = _required(settings.sagemaker_role_arn,
                         "no SageMaker execution role configured: set BINAUDIT_SAGEMAKER_ROLE_ARN or "
                         "sagemaker_role_arn under [binaudit] in .streamlit/secrets.toml (an IAM role SageMaker can "
                         "assume, with read/write access to the bucket; see docs/aws.md)")
        bucket = _required(settings.s3_bucket, "no S3 bucket configured: set BINAUDIT_S3_BUCKET or s3_bucket under "
                                               "[binaudit] in .streamlit/secrets.toml")
        session = boto_session or boto3.Session(region_name=region)
        if session.get_credentials() is None:
            raise ConfigError(CREDENTIALS_HELP)
        return cls(region, role, bucket, settings.s3_prefix.strip("/"), session)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            config = Config(retries=dict(RETRIES), connect_timeout=10, read_timeout=120)
            self._clients[service] = self.session.client(service, region_name=self.region, config=config)
        return self._clients[service]

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def uri(self, *parts: str) -> str:
        """s3://bucket/prefix/parts..."""
        return f"s3://{self.bucket}/{self.key(*parts)}"

    # ---------------------------------------------------------------- S3

    def object_exists(self, bucket: str, key: str) -> bool:
        try:
            self.client("s3").head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def upload_file(self, path: Path, key: str) -> str:
        self.client("s3").upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{key}"

    def upload_folder(self, folder: Path, key_prefix: str) -> str:
        """Upload the files under `folder`; hidden ones (local bookkeeping such as markers) stay here."""
        for path in sorted(p for p in folder.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(folder).parts)):
            self.upload_file(path, f"{key_prefix}/{path.relative_to(folder).as_posix()}")
        return f"s3://{self.bucket}/{key_prefix}"

    def download(self, uri: str, dest: Path) -> Path:
        bucket, key = split_s3_uri(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client("s3").download_file(bucket, key, str(dest))
        return dest


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise JobError(f"not an S3 object URI (s3://bucket/key): {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def extract_model_tarball(tarball: Path, dest: Path) -> Path:
    """Unpack model.tar.gz (member paths checked: nothing may land outside dest)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def pack_model_folder(model_dir: Path, tarball: Path) -> Path:
    """model.tar.gz with the model folder's files at its root, as SageMaker's endpoints expect (less the ONNX
    copies and their check: the container scores with torch)."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(p for p in model_dir.iterdir() if p.is_file() and p.name not in LOCAL_SCORING_FILES):
            tar.add(path, arcname=path.name)
    return tarball


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Credentials and region problems as ConfigError (what to set); AWS refusals as JobError (what AWS said)."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise ConfigError(CREDENTIALS_HELP) from None
    except NoRegionError:
        raise ConfigError("no AWS region configured: set BINAUDIT_AWS_REGION") from None
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise JobError(f"{action}: AWS refused ({error_code(exc)}): {message}") from None
    except BotoCoreError as exc:
        raise JobError(f"{action}: {exc}") from None
