"""Test-only shims for running the SageMaker SDK v3 against moto's server. Never imported by product code.

- `install_moto_compat()`: moto answers `"VpcConfig": {}` / `"DataCaptureConfig": {}`, which the SDK's pydantic
  models reject; a botocore after-call handler drops those empty blocks from SageMaker responses.
- `record_requests()`: captures the parameters of every SageMaker (or other service) call, as sent.
- `throttled(operation, times)`: the first calls of an operation get a ThrottlingException response (HTTP 400),
  produced by a before-send handler, so the client's retry mode is exercised against the real server.
- `override_response(operation, **fields)`: edits a parsed response (a failed training job's status and reason,
  which moto cannot produce).
- `queue_endpoint_results(server, results)`: what moto's invoke_endpoint answers next.
- `on_request(operation, action)`: runs `action()` just before an operation is sent (something another user does
  meanwhile, e.g. pressing Stop while a job is being submitted); the call then goes to moto unchanged.

Handlers go into botocore.handlers.BUILTIN_HANDLERS, which every botocore session reads when it is created: install
them before the backend (and its boto3 session) is built.
"""

from __future__ import annotations

import contextlib
import copy
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.handlers import BUILTIN_HANDLERS

EMPTY_BLOCKS = ("VpcConfig", "DataCaptureConfig")


def _drop_empty_blocks(parsed: Any, **_: Any) -> None:
    if isinstance(parsed, dict):
        for name in EMPTY_BLOCKS:
            if name in parsed and not parsed[name]:
                del parsed[name]
        for value in parsed.values():
            _drop_empty_blocks(value)
    elif isinstance(parsed, list):
        for value in parsed:
            _drop_empty_blocks(value)


def install_moto_compat() -> None:
    entry = ("after-call.sagemaker", _drop_empty_blocks)
    if entry not in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.append(entry)


@contextlib.contextmanager
def _handler(event: str, handler: Any) -> Iterator[None]:
    entry = (event, handler)
    BUILTIN_HANDLERS.append(entry)
    try:
        yield
    finally:
        BUILTIN_HANDLERS.remove(entry)


@dataclass
class Recorder:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, copy.deepcopy(params)))

    def all(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]

    def one(self, operation: str) -> dict[str, Any]:
        found = self.all(operation)
        assert len(found) == 1, f"expected one {operation} call, got {len(found)}: {[n for n, _ in self.calls]}"
        return found[0]


@contextlib.contextmanager
def record_requests(service: str = "sagemaker") -> Iterator[Recorder]:
    recorder = Recorder()
    with _handler(f"provide-client-params.{service}", recorder):
        yield recorder


@contextlib.contextmanager
def on_request(operation: str, action: Any, service: str = "sagemaker") -> Iterator[None]:
    def run(**_: Any) -> None:
        action()

    with _handler(f"before-call.{service}.{operation}", run):
        yield


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


@dataclass
class Throttle:
    left: int
    hits: int = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        if self.left <= 0:
            return None
        self.left -= 1
        self.hits += 1
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1",
                                              "x-amzn-ErrorType": "ThrottlingException"}, _Body(body))


@contextlib.contextmanager
def throttled(operation: str, times: int, service: str = "sagemaker") -> Iterator[Throttle]:
    throttle = Throttle(times)
    with _handler(f"before-send.{service}.{operation}", throttle):
        yield throttle


@contextlib.contextmanager
def override_response(operation: str, service: str = "sagemaker", **fields: Any) -> Iterator[None]:
    def edit(parsed: dict[str, Any], **_: Any) -> None:
        parsed.update(copy.deepcopy(fields))

    with _handler(f"after-call.{service}.{operation}", edit):
        yield


def queue_endpoint_results(server: str, results: list[dict[str, Any]]) -> None:
    body = json.dumps({"results": [{"Body": json.dumps(r), "ContentType": "application/json"} for r in results]})
    request = urllib.request.Request(f"{server}/moto-api/static/sagemaker/endpoint-results", data=body.encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201 or response.status == 200
