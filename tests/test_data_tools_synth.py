"""The synthetic bin generator: ABID layout, seeded, truthful about injected mismatches."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from data_tools.metadata import parse_metadata
from data_tools.synth import SynthOptions, generate, read_truth, split_quantity


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


def test_more_items_cover_more_of_the_bin(tmp_path):
    """A cheap sanity check that the count is visible: pixel variance rises with the items drawn."""
    generate(SynthOptions(n=120, out=tmp_path, seed=9, width=96, height=88), progress=False)
    truth = read_truth(tmp_path / "truth.csv")
    spread = {c: [] for c in range(6)}
    for bin_id, (drawn, _, _) in truth.items():
        arr = np.asarray(Image.open(tmp_path / "bin-images" / f"{bin_id}.jpg").convert("L"), dtype=float)
        spread[drawn].append(arr.std())
    assert np.mean(spread[5]) > np.mean(spread[0])


def test_split_quantity_sums_and_count_weights(tmp_path):
    rng = np.random.default_rng(0)
    for total in range(0, 9):
        parts = split_quantity(rng, total)
        assert sum(parts) == total and all(p >= 1 for p in parts)
    truth = generate(SynthOptions(n=30, out=tmp_path, width=40, height=40, count_weights=(0, 0, 1, 0, 0, 0)),
                     progress=False)
    assert {row[1] for row in truth} == {2}
