"""Seeded, stratified, stable split assignment."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from data_tools.split import DEFAULT_FRACTIONS, assign_splits, largest_remainder, parse_fractions


def _bins(n: int, classes: int = 6, seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(f"{i:05d}", rng.randrange(classes)) for i in range(1, n + 1)]


def test_largest_remainder_sums_exactly_and_stays_within_one():
    for total in range(0, 60):
        shares = largest_remainder(total, DEFAULT_FRACTIONS)
        assert sum(shares.values()) == total
        for name, frac in DEFAULT_FRACTIONS.items():
            assert abs(shares[name] - total * frac) < 1


def test_each_class_is_split_to_within_one_image_of_the_fractions():
    bins = _bins(1000)
    splits = assign_splits(bins, DEFAULT_FRACTIONS, seed=3)
    per_class = Counter(label for _, label in bins)
    got = Counter((label, splits[b]) for b, label in bins)
    for label, n in per_class.items():
        for split, frac in DEFAULT_FRACTIONS.items():
            assert abs(got[label, split] - n * frac) <= 1, (label, split, got[label, split], n * frac)


def test_same_seed_same_split_and_input_order_does_not_matter():
    bins = _bins(300)
    first = assign_splits(bins, seed=11)
    shuffled = bins[:]
    random.Random(5).shuffle(shuffled)
    assert assign_splits(shuffled, seed=11) == first
    assert assign_splits(bins, seed=12) != first


def test_adding_bins_later_never_moves_assigned_ones():
    old = _bins(400, seed=1)
    before = assign_splits(old, seed=0)
    added = [(f"9{i:05d}", i % 6) for i in range(200)]
    after = assign_splits(old + added, seed=0, previous=before)
    assert all(after[b] == before[b] for b, _ in old)
    # the newcomers fill what each split lacks, so the whole stays close to the fractions
    totals = Counter(after.values())
    for split, frac in DEFAULT_FRACTIONS.items():
        assert abs(totals[split] - 600 * frac) <= 6


def test_previous_assignment_to_an_unknown_split_is_reassigned():
    bins = _bins(20)
    splits = assign_splits(bins, seed=0, previous={"00001": "holdout"})
    assert splits["00001"] in DEFAULT_FRACTIONS


@pytest.mark.parametrize(("text", "expected"), [("80/10/10", (0.8, 0.1, 0.1)), ("0.7,0.2,0.1", (0.7, 0.2, 0.1)),
                                                ("8/1/1", (0.8, 0.1, 0.1))])
def test_parse_fractions(text, expected):
    got = parse_fractions(text)
    assert tuple(round(got[k], 6) for k in ("train", "val", "test")) == expected


@pytest.mark.parametrize("text", ["80/20", "a/b/c", "-1/1/1", "0/0/0"])
def test_parse_fractions_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_fractions(text)
