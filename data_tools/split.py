"""Seeded, stratified train/val/test assignment that never moves a bin once assigned.

For each class the target sizes come from the fractions by largest remainder, so a fresh build
hits them to within one image. Bins that an earlier manifest already placed keep their split;
new bins fill what each split still lacks, in an order fixed by a hash of (seed, bin id), so
reruns give the same answer and adding bins later only ever adds.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def parse_fractions(text: str) -> dict[str, float]:
    """"80/10/10" or "0.8,0.1,0.1" -> {"train": .8, "val": .1, "test": .1} (normalised)."""
    parts = [p for p in text.replace("/", ",").split(",") if p.strip()]
    if len(parts) != len(SPLITS):
        raise ValueError(f"split needs {len(SPLITS)} numbers (train/val/test), got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"split fractions must be numbers, got {text!r}") from None
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"split fractions must be non-negative and not all zero, got {text!r}")
    total = sum(values)
    return {name: v / total for name, v in zip(SPLITS, values, strict=True)}


def largest_remainder(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Share `total` integer units in proportion to `weights`; ties go in key order."""
    weight_sum = sum(weights.values())
    if total <= 0 or weight_sum <= 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    order = sorted(weights, key=lambda k: (-(exact[k] - counts[k]), list(weights).index(k)))
    for k in order[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def hash_order(bin_id: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{bin_id}".encode(), digest_size=8).digest()


def assign_splits(
    labelled: Iterable[tuple[str, int]],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    previous: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map bin id -> split for (bin id, class) pairs, keeping `previous` assignments."""
    previous = previous or {}
    by_class: dict[int, list[str]] = defaultdict(list)
    for bin_id, label in labelled:
        by_class[label].append(bin_id)

    out: dict[str, str] = {}
    for members in by_class.values():
        targets = largest_remainder(len(members), fractions)
        kept = [b for b in members if previous.get(b) in fractions]
        for b in kept:
            out[b] = previous[b]
        have = {s: 0 for s in fractions}
        for b in kept:
            have[previous[b]] += 1
        deficits = {s: max(0, targets[s] - have[s]) for s in fractions}
        new = sorted((b for b in members if b not in out), key=lambda b: hash_order(b, seed))
        shares = largest_remainder(len(new), deficits)
        start = 0
        for split in fractions:
            for b in new[start : start + shares[split]]:
                out[b] = split
            start += shares[split]
    return out
