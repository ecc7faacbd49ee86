"""Scorers for `app.audit.scoring`: image paths in, (probabilities, error) out, in input order.

The local scorer runs the batched predictor a page at a time, so memory stays flat on 500k bins
and the decoding workers' start-up is paid once per page, not per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from app.audit.scoring import Scorer


def local_scorer(model_dir: Path, *, batch_size: int = 32, workers: int | None = None, page: int = 1024,
                 device: str = "cpu") -> Scorer:
    from modeling.predictor import Predictor

    predictor = Predictor.load(model_dir, device=device)

    def score(paths: Iterable[str]) -> Iterator[tuple[np.ndarray | None, str | None]]:
        it = iter(paths)
        while chunk := list(itertools.islice(it, page)):
            for result in predictor.predict_paths(chunk, batch_size=batch_size, workers=workers, progress=False):
                yield result.probs, result.error

    return score
