"""Benchmarks: each module prints its figures and the ratios measured in the same run.

Run one with `.venv/bin/python -m bench.<module>`; `python -m bench` lists them. Results and
the commands that produced them are recorded in docs/benchmarks.md. Outputs go to bench/out/
(git-ignored) or /tmp, never into the tree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of `repeats` wall-clock timings of fn(), in seconds (the least disturbed run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
