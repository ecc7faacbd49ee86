"""argparse value types that say what was wrong ("must be a positive integer, got 0").

Stdlib only: train.py imports it, so it ships in the SageMaker source dir (see CONTAINER_MODULES).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _checked(cast: Callable[[str], float], ok: Callable[[float], bool], message: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{message}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{message}, got {text}")
        return value

    return parse


positive_int = _checked(int, lambda v: v > 0, "must be a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "must not be negative")
positive_float = _checked(float, lambda v: v > 0, "must be a positive number")
non_negative_float = _checked(float, lambda v: v >= 0, "must be a non-negative number")
unit_interval = _checked(float, lambda v: 0 <= v < 1, "must lie in [0, 1)")
share = _checked(float, lambda v: 0 < v <= 1, "must lie in (0, 1]")


def int_between(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An integer in [low, high]."""
    return _checked(int, lambda v: low <= v <= high, f"must be an integer from {low} to {high}{unit}")
