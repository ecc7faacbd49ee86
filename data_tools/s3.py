"""boto3 clients and S3 URIs for the data tools.

Credentials follow boto3's normal chain; `AWS_ENDPOINT_URL` (e.g. a moto server or MinIO) is
honoured by botocore itself. Retries are botocore's adaptive mode, which also rate-limits the
client when S3 answers SlowDown.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TypeVar

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from tqdm import tqdm

from data_tools.problems import DataToolsError, Problem


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""  # no leading or trailing slash

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))


def parse_s3_uri(uri: str) -> S3Location:
    if not uri.startswith("s3://"):
        raise DataToolsError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise DataToolsError(f"S3 URI has no bucket: {uri!r}")
    return S3Location(bucket, prefix.strip("/"))


def make_s3_client(*, unsigned: bool = False, region: str | None = None, max_pool: int = 32,
                   max_attempts: int = 8):
    """An S3 client sized for `max_pool` concurrent requests."""
    config = Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        max_pool_connections=max_pool,
        connect_timeout=10,
        read_timeout=60,
        signature_version=UNSIGNED if unsigned else None,
    )
    return boto3.session.Session().client("s3", region_name=region, config=config)


# Errors worth another try: S3 throttling and 5xx, dropped connections, short bodies.
_RETRYABLE_CODES = {"500", "502", "503", "504", "SlowDown", "RequestTimeout", "InternalError",
                    "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}


class ShortRead(IOError):
    """The body ended before Content-Length bytes arrived."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code")) in _RETRYABLE_CODES
    return isinstance(exc, (ShortRead, BotoConnectionError, IncompleteReadError, ReadTimeoutError,
                            ResponseStreamingError, ConnectionError, TimeoutError))


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '') or exc}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def fatal_reason(exc: BaseException) -> str | None:
    """A one-line reason when the error means no request can succeed (stop everything), else None."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ("no AWS credentials found: configure them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or ~/.aws/credentials), or pass --unsigned for a public bucket")
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach S3: {exc}"
    return None


T = TypeVar("T")


def with_retries(fn: Callable[[], T], *, attempts: int = 5, base_delay: float = 0.2, max_delay: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call fn() until it succeeds or fails in a way not worth retrying; exponential backoff with jitter."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified just below
            if attempt == attempts - 1 or not is_retryable(exc):
                raise
            sleep(min(max_delay, base_delay * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


@dataclass
class TransferReport:
    done: int = 0
    skipped: int = 0
    bytes: int = 0
    failed: list[Problem] = field(default_factory=list)


def run_pool(items: Sequence[T], fn: Callable[[T], int], *, name: Callable[[T], str], desc: str,
             workers: int = 16, progress: bool | None = None, report: TransferReport | None = None) -> TransferReport:
    """Run fn(item) -> bytes moved, concurrently. A failed item is reported and the rest go on;
    an error that no request can survive (no credentials, no endpoint) stops everything with its reason."""
    report = report or TransferReport()
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=None if progress is None else not progress)
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        try:
            for future in as_completed(futures):
                bar.update()
                try:
                    report.bytes += future.result()
                    report.done += 1
                except Exception as exc:  # noqa: BLE001 - classified: fatal, or reported per item
                    reason = fatal_reason(exc)
                    if reason:
                        raise DataToolsError(reason) from None
                    item_name = name(futures[future])
                    report.failed.append(Problem(item_name, describe_error(exc), item_name.rsplit("/", 1)[-1].split(".")[0]))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()
    return report
