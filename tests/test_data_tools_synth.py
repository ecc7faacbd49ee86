"""The synthetic bin generator: ABID layout, seeded, truthful about injected mismatches."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from data_tools.metadata import parse_metadata
from data_tools.synth import (
    ABID_COUNT_SHARES,
    SynthOptions,
    count_probabilities,
    generate,
    mismatched_record,
    read_truth,
    split_quantity,
)


def test_layout_metadata_and_truth_agree(synth_raw):
    truth = read_truth(synth_raw / "truth.csv")
    assert len(truth) == 120
    for bin_id, (drawn, expected, mismatch) in truth.items():
        raw = (synth_raw / "metadata" / f"{bin_id}.json").read_bytes()
        result = parse_metadata(raw, bin_id, "m")
        assert result.problems == ()  # generated metadata is always valid ABID shape
        assert result.record.expected_quantity == expected
        assert mismatch == (drawn != expected)
        assert 0 <= drawn <= 5
        with Image.open(synth_raw / "bin-images" / f"{bin_id}.jpg") as img:
            assert img.format == "JPEG"
            assert 0.8 * 80 <= img.width <= 1.2 * 80 and 0.8 * 72 <= img.height <= 1.2 * 72
    assert 0 < sum(m for _, _, m in truth.values()) < 30  # ~10% injected


def test_products_look_like_abid(synth_raw):
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in (synth_raw / "metadata").glob("*.json")]
    items = [i for d in docs for i in d["BIN_FCSKU_DATA"].values()]
    assert all(re.fullmatch(r"B0[A-Z0-9]{8}", i["asin"]) for i in items)
    assert any(i["quantity"] > 1 for i in items), "some products come more than once"
    assert any(not i["name"].isascii() for i in items), "some names are not ASCII"
    assert any(d["EXPECTED_QUANTITY"] == 0 and d["BIN_FCSKU_DATA"] == {} for d in docs)


def test_same_seed_same_bytes_and_parallel_equals_sequential(tmp_path):
    a = generate(SynthOptions(n=20, out=tmp_path / "a", seed=5, width=48, height=40, workers=1), progress=False)
    b = generate(SynthOptions(n=20, out=tmp_path / "b", seed=5, width=48, height=40, workers=2), progress=False)
    generate(SynthOptions(n=20, out=tmp_path / "c", seed=6, width=48, height=40), progress=False)
    assert a == b
    for name in ("00001.jpg", "00020.jpg"):
        assert (tmp_path / "a/bin-images" / name).read_bytes() == (tmp_path / "b/bin-images" / name).read_bytes()
    assert (tmp_path / "a/bin-images/00001.jpg").read_bytes() != (tmp_path / "c/bin-images/00001.jpg").read_bytes()


@pytest.mark.parametrize("style", ["plain", "realistic"])
def test_more_items_cover_more_of_the_bin(tmp_path, style):
    """A cheap sanity check that the count is visible: pixel variance rises with the items drawn."""
    generate(SynthOptions(n=120, out=tmp_path, seed=9, max_count=5, counts="uniform", width=96, height=88,
                          style=style), progress=False)
    truth = read_truth(tmp_path / "truth.csv")
    spread = {c: [] for c in range(6)}
    for bin_id, (drawn, _, _) in truth.items():
        arr = np.asarray(Image.open(tmp_path / "bin-images" / f"{bin_id}.jpg").convert("L"), dtype=float)
        spread[drawn].append(arr.std())
    assert np.mean(spread[5]) > np.mean(spread[0])


def test_styles_draw_different_photos_of_the_same_bins(tmp_path):
    photos = {}
    for style in ("plain", "realistic"):
        truth = generate(SynthOptions(n=12, out=tmp_path / style, seed=4, width=48, height=40, style=style),
                         progress=False)
        photos[style] = [(tmp_path / style / "bin-images" / f"{row[0]}.jpg").read_bytes() for row in truth]
    assert all(a != b for a, b in zip(photos["plain"], photos["realistic"], strict=True))
    with pytest.raises(ValueError, match="unknown style 'glossy'"):
        generate(SynthOptions(n=1, out=tmp_path / "x", style="glossy"), progress=False)


def test_split_quantity_sums_and_count_weights(tmp_path):
    rng = np.random.default_rng(0)
    for total in range(0, 9):
        parts = split_quantity(rng, total)
        assert sum(parts) == total and all(p >= 1 for p in parts)
    truth = generate(SynthOptions(n=30, out=tmp_path, width=40, height=40, count_weights=(0, 0, 1, 0, 0, 0)),
                     progress=False)
    assert {row[1] for row in truth} == {2}


def test_counts_follow_abid_histogram_with_a_tail_beyond_five(tmp_path):
    assert abs(sum(ABID_COUNT_SHARES) - 1) < 1e-9 and len(ABID_COUNT_SHARES) == 16
    assert [round(sum(ABID_COUNT_SHARES[a:b]), 3) for a, b in ((0, 6), (6, 10), (10, 16))] == [0.673, 0.227, 0.1]
    truth = generate(SynthOptions(n=4000, out=tmp_path, seed=3, images=False), progress=False)
    drawn = np.array([row[1] for row in truth])
    shares = np.bincount(drawn, minlength=16) / len(drawn)
    assert drawn.max() == 15
    assert 0.29 < (drawn > 5).mean() < 0.37  # about a third of real bins hold more than 5 items
    assert np.abs(shares - np.array(ABID_COUNT_SHARES)).max() < 0.02
    assert all(row[1] == row[2] for row in truth)  # no mismatches asked for, none injected


def test_count_distribution_options(tmp_path):
    capped = generate(SynthOptions(n=300, out=tmp_path / "a", seed=1, max_count=5, images=False), progress=False)
    assert {row[1] for row in capped} == set(range(6))  # ABID's shares cut at 5, every count present
    probs = count_probabilities(SynthOptions(n=1, out=tmp_path, max_count=5))
    assert probs[0] < probs[1] < probs[2] < probs[3] and probs[3] > probs[4] > probs[5]  # ABID's shape, not flat
    assert np.allclose(count_probabilities(SynthOptions(n=1, out=tmp_path, max_count=3, counts="uniform")), 0.25)
    padded = count_probabilities(SynthOptions(n=1, out=tmp_path, count_weights=(0, 1, 1)))
    assert len(padded) == 16 and padded[1] == padded[2] == 0.5 and padded[3:].sum() == 0
    for bad in (SynthOptions(n=1, out=tmp_path, max_count=2, count_weights=(1, 1, 1, 1)),
                SynthOptions(n=1, out=tmp_path, counts="poisson"),
                SynthOptions(n=1, out=tmp_path, count_weights=(0, 0))):
        with pytest.raises(ValueError):
            generate(bad, progress=False)


def test_mismatches_go_both_ways_and_across_the_class_boundary(tmp_path):
    truth = generate(SynthOptions(n=1500, out=tmp_path, seed=4, mismatch_rate=0.4, images=False), progress=False)
    rows = [r for r in truth if r[3]]
    assert 0.35 < len(rows) / len(truth) < 0.45
    assert all(drawn != record for _, drawn, record, _ in rows)
    assert all(drawn == record for _, drawn, record, flag in truth if not flag)
    assert any(record > drawn for _, drawn, record, _ in rows) and any(record < drawn for _, drawn, record, _ in rows)
    assert any(drawn <= 5 < record for _, drawn, record, _ in rows)  # e.g. a record of 9 on a bin of 3
    assert any(record <= 5 < drawn for _, drawn, record, _ in rows)  # e.g. a record of 4 on a bin of 8
    far = np.mean([abs(record - drawn) > 2 for _, drawn, record, _ in rows])
    assert 0.08 < far < 0.25  # most records are one or two off; a quarter are any count (some of those near)
    for bin_id, _, record, _ in rows[:50]:  # the metadata carries the record, truth.csv what was drawn
        doc = json.loads((tmp_path / "metadata" / f"{bin_id}.json").read_text(encoding="utf-8"))
        assert doc["EXPECTED_QUANTITY"] == record == sum(i["quantity"] for i in doc["BIN_FCSKU_DATA"].values())
    assert read_truth(tmp_path / "truth.csv") == {b: (d, r, bool(f)) for b, d, r, f in truth}


def test_far_records_are_drawn_from_abid_shares_never_the_truth():
    rng = np.random.default_rng(0)
    records = [mismatched_record(rng, 3) for _ in range(2000)]
    assert 3 not in records and min(records) >= 0
    assert {1, 2, 4, 5} <= set(records) and max(records) > 9
