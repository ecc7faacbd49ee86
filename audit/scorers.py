"""Scorers for `audit.scoring`: image paths in, (probabilities, error) out, in input order.

local:     the batched predictor, a page at a time, so memory stays flat on 500k bins and the decoding
           workers' start-up is paid once per page, not per batch. runtime and precision "auto" by
           default: the fastest scoring path (torch or ONNX Runtime; fp32, bf16 or int8) that passed the
           model's agreement check on this machine, torch fp32 where none did (modeling/scoring_paths.py).
sagemaker: one batch transform per page: the photos are uploaded under the configured bucket, the
           active model's container scores them (modeling/inference.py), and the JSON answers are read
           back. A photo without an answer is reported as such, never silently skipped.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from audit.scoring import Scorer
from modeling.registry import ModelVersion


def local_scorer(model_dir: Path, *, batch_size: int = 32, workers: int | None = None, page: int = 1024,
                 device: str = "cpu", precision: str = "auto", runtime: str = "auto",
                 say: Callable[[str], None] | None = None) -> Scorer:
    """say: told which scoring path runs and why."""
    from modeling.predictor import Predictor

    predictor = Predictor.load(model_dir, device=device, precision=precision, runtime=runtime)
    if say is not None:
        say(f"scoring with {predictor.path}")

    def score(paths: Iterable[str]) -> Iterator[tuple[np.ndarray | None, str | None]]:
        it = iter(paths)
        while chunk := list(itertools.islice(it, page)):
            for result in predictor.predict_paths(chunk, batch_size=batch_size, workers=workers, progress=False):
                yield result.probs, result.error

    return score


TRANSFER_THREADS = 16


def _answer(body: bytes) -> tuple[np.ndarray | None, str | None]:
    try:
        doc = json.loads(body)
        return np.asarray(doc["probabilities"], dtype=np.float64), None
    except (ValueError, KeyError, TypeError):
        return None, f"batch transform answered something that is not a prediction: {body[:120]!r}"


def sagemaker_scorer(backend, version: ModelVersion, *, actor: str = "audit", page: int = 5000,
                     poll_seconds: float = 30.0, timeout_seconds: float = 6 * 3600,
                     sleep: Callable[[float], None] = time.sleep) -> Scorer:
    """Score through SageMaker batch transform with `backend` (a jobs SageMaker backend)."""
    aws = backend.aws
    s3 = aws.client("s3")

    def fetch_answer(key: str, job_id: str) -> tuple[np.ndarray | None, str | None]:
        try:
            return _answer(s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None, f"batch transform {job_id} wrote no answer for this photo (s3://{aws.bucket}/{key})"

    def one_page(paths: list[str]) -> Iterator[tuple[np.ndarray | None, str | None]]:
        run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        names = [f"{i:06d}-{Path(p).name}" for i, p in enumerate(paths)]  # unique even when stems repeat
        readable = [Path(p).is_file() for p in paths]
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:  # boto3 clients are thread-safe
            list(pool.map(lambda pn: aws.upload_file(Path(pn[0]), aws.key("audit-scoring", run, "input", pn[1])),
                          [(p, n) for p, n, ok in zip(paths, names, readable, strict=True) if ok]))
        job = backend.start_transform(version.id, aws.uri("audit-scoring", run, "input"),
                                      aws.uri("audit-scoring", run, "output"), actor=actor)
        deadline = time.monotonic() + timeout_seconds
        while job.is_active and time.monotonic() < deadline:
            sleep(poll_seconds)
            job = backend.refresh(job.id)
        if job.status != "Completed":
            reason = job.failure_reason or f"batch transform {job.id} ended {job.status}"
            for ok in readable:
                yield (None, reason) if ok else (None, "photo not found")
            return
        keys = [aws.key("audit-scoring", run, "output", name + ".out") for name in names]
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            answers = pool.map(lambda k_ok: fetch_answer(k_ok[0], job.id) if k_ok[1] else (None, "photo not found"),
                               zip(keys, readable, strict=True))
            yield from answers

    def score(paths: Iterable[str]) -> Iterator[tuple[np.ndarray | None, str | None]]:
        it = iter(paths)
        while chunk := list(itertools.islice(it, page)):
            yield from one_page(chunk)

    return score


def scorer_for(backend_name: str, version: ModelVersion, *, settings, workspace, engine, batch_size: int = 32,
               workers: int | None = None, precision: str = "auto", runtime: str = "auto",
               say: Callable[[str], None] | None = None) -> Scorer:
    """The configured way to score: the local predictor, or SageMaker batch transform (its container: torch)."""
    if backend_name == "local":
        return local_scorer(version.model_dir, batch_size=batch_size, workers=workers, precision=precision,
                            runtime=runtime, say=say)
    from jobs import get_backend

    backend = get_backend(backend_name, settings=settings, workspace=workspace, engine=engine)
    return sagemaker_scorer(backend, version)
