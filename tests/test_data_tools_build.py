"""Building the counting dataset: class folders, split, manifest, stats, and bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data_tools.build import BuildOptions, build_dataset, read_manifest
from data_tools.problems import read_report
from data_tools.synth import SynthOptions, generate

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_tools", *args], cwd=cwd, capture_output=True, text=True)


def _expected_counts(raw: Path, skip: set[str] = frozenset()) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))["EXPECTED_QUANTITY"]
            for p in (raw / "metadata").glob("*.json") if p.stem not in skip}


@pytest.mark.slow
def test_acceptance_synth_600_then_build_twice(tmp_path):
    raw, out = tmp_path / "X", tmp_path / "Y"
    assert _cli("synth", "--n", "600", "--out", str(raw)).returncode == 0
    first = _cli("build", "--source", str(raw), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "train" in first.stdout and "total" in first.stdout  # the class table is printed

    rows = read_manifest(out / "manifest.csv")
    expected = _expected_counts(raw)
    assert sorted(r["bin_id"] for r in rows) == sorted(expected)  # one row per bin: above 5 in the open class
    assert any(c > 5 for c in expected.values())  # the generator draws ABID's counts, a third above 5
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (out / split).iterdir()) == [*map(str, range(6)), "6+"]
    for r in rows:
        assert int(r["count"]) == expected[r["bin_id"]]
        assert r["class"] == (r["count"] if int(r["count"]) <= 5 else "6+")
        assert Path(r["image_path"]).parts == (r["split"], r["class"], f"{r['bin_id']}.jpg")  # folder == class
        assert (out / r["image_path"]).stat().st_size == int(r["bytes"])
    per_class = Counter(r["class"] for r in rows)
    per_split = Counter((r["class"], r["split"]) for r in rows)
    for name, n in per_class.items():
        for split, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert abs(per_split[name, split] - n * frac) <= 1

    manifest_bytes = (out / "manifest.csv").read_bytes()
    second = _cli("build", "--source", str(raw), "--out", str(out))
    assert second.returncode == 0
    assert (out / "manifest.csv").read_bytes() == manifest_bytes


def test_stats_json_matches_the_manifest(tiny_dataset):
    stats = json.loads((tiny_dataset / "stats.json").read_text())
    rows = read_manifest(tiny_dataset / "manifest.csv")
    for split, classes in stats["classes"].items():
        for name, n in classes.items():
            assert n == sum(1 for r in rows if r["split"] == split and r["class"] == name)
    for split, counts in stats["true_counts"].items():
        for count, n in counts.items():
            assert n == sum(1 for r in rows if r["split"] == split and r["count"] == count)
    assert stats["top_class"] == "open" and stats["open_class_bins"] == sum(int(r["count"]) > 5 for r in rows) > 0
    assert stats["bins"] == len(rows)
    assert stats["source_kind"] == "synthetic"
    import hashlib

    assert stats["manifest_sha256"] == hashlib.sha256((tiny_dataset / "manifest.csv").read_bytes()).hexdigest()
    assert all((tiny_dataset / r["metadata_path"]).is_file() for r in rows)


def test_adding_bins_later_keeps_earlier_assignments_and_removes_stale_files(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "ds"
    generate(SynthOptions(n=80, out=raw, seed=1, max_count=5, counts="uniform", width=48, height=40), progress=False)
    build_dataset(BuildOptions(source=raw, out=out, progress=False))
    before = {r["bin_id"]: r["split"] for r in read_manifest(out / "manifest.csv")}

    generate(SynthOptions(n=40, out=raw, seed=2, start_id=81, max_count=5, counts="uniform", width=48, height=40), progress=False)
    # a bin whose metadata changes count moves class folder; its split stays, the old file goes
    moved = next(iter(before))
    meta_path = raw / "metadata" / f"{moved}.json"
    doc = json.loads(meta_path.read_text(encoding="utf-8"))
    old_count = doc["EXPECTED_QUANTITY"]
    new_count = (old_count + 1) % 6
    doc["BIN_FCSKU_DATA"] = {"BNEW": {"asin": "BNEW", "name": "x", "quantity": new_count}} if new_count else {}
    doc["EXPECTED_QUANTITY"] = new_count
    meta_path.write_text(json.dumps(doc), encoding="utf-8")

    build_dataset(BuildOptions(source=raw, out=out, progress=False))
    after = {r["bin_id"]: r for r in read_manifest(out / "manifest.csv")}
    assert len(after) == 120
    assert all(after[b]["split"] == s for b, s in before.items())
    assert not (out / before[moved] / str(old_count) / f"{moved}.jpg").exists()
    assert (out / before[moved] / str(new_count) / f"{moved}.jpg").exists()
    on_disk = {p.relative_to(out).as_posix() for s in ("train", "val", "test") for p in (out / s).glob("*/*.jpg")}
    assert on_disk == {r["image_path"] for r in after.values()}


def test_resize_to_max_side(tmp_path, synth_raw):
    out = tmp_path / "ds"
    build_dataset(BuildOptions(source=synth_raw, out=out, max_side=40, progress=False))
    for r in read_manifest(out / "manifest.csv"):
        assert max(int(r["width"]), int(r["height"])) == 40
        assert max(int(r["orig_width"]), int(r["orig_height"])) > 40
        with Image.open(out / r["image_path"]) as img:
            assert img.size == (int(r["width"]), int(r["height"]))


def test_metadata_only_build_writes_the_manifest_without_images(tmp_path, synth_raw):
    out = tmp_path / "ds"
    result = build_dataset(BuildOptions(source=synth_raw, out=out, metadata_only=True, progress=False))
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == len(result.rows) > 100
    assert all(r["image_path"] == "" for r in rows)
    assert not (out / "train").exists()


# ---------------------------------------------------------------- bad input

def _good_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 40)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def raw_with_bad_files(tmp_path, synth_raw) -> tuple[Path, dict[str, str]]:
    """A copy of the synthetic bins with one bad file of each kind; returns it and {file: reason fragment}."""
    raw = tmp_path / "raw"
    shutil.copytree(synth_raw, raw)
    images, meta = raw / "bin-images", raw / "metadata"
    ids = sorted(p.stem for p in meta.glob("*.json"))
    good_jpeg = (images / f"{ids[0]}.jpg").read_bytes()
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    bad = {
        f"bin-images/{ids[1]}.jpg": ("corrupt", good_jpeg[:200] + bytes(range(256)) * 8 + good_jpeg[-2:]),
        f"bin-images/{ids[2]}.jpg": ("truncated", good_jpeg[: len(good_jpeg) // 2]),
        f"bin-images/{ids[3]}.jpg": ("empty file", b""),
        f"bin-images/{ids[4]}.jpg": ("not a JPEG (starts like text)", b"this is not a photo\n"),
        f"bin-images/{ids[5]}.jpg": ("not a JPEG (starts like PNG)", png.getvalue()),
        f"metadata/{ids[6]}.json": ("malformed JSON", b'{"EXPECTED_QUANTITY": 2, '),
        f"metadata/{ids[7]}.json": ("not UTF-8", b'{"EXPECTED_QUANTITY": 0, "BIN_FCSKU_DATA": {}, "n": "\xe9"}'),
        f"metadata/{ids[8]}.json": ("missing EXPECTED_QUANTITY", b'{"BIN_FCSKU_DATA": {}}'),
    }
    for rel, (_, data) in bad.items():
        (raw / rel).write_bytes(data)
    (images / f"{ids[9]}.jpg").unlink()  # metadata without an image
    (meta / f"{ids[10]}.json").unlink()  # image without metadata
    (images / "99999.jpg").write_bytes(_good_jpeg())  # another image without metadata
    reasons = {rel: reason for rel, (reason, _) in bad.items()}
    reasons[f"metadata/{ids[9]}.json"] = "metadata without an image"
    reasons[f"bin-images/{ids[10]}.jpg"] = "image without metadata"
    reasons["bin-images/99999.jpg"] = "image without metadata"
    return raw, reasons


def test_every_bad_file_is_reported_and_every_good_bin_is_built(tmp_path, raw_with_bad_files):
    raw, reasons = raw_with_bad_files
    out = tmp_path / "ds"
    proc = _cli("build", "--source", str(raw), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    report = {p.file: p.reason for p in read_report(out / "errors.csv")}
    for rel, fragment in reasons.items():
        assert rel in report, f"{rel} not reported"
        assert fragment in report[rel], (rel, report[rel])

    bad_ids = {Path(rel).stem for rel in reasons}
    expected = _expected_counts(raw, skip=bad_ids)
    built = {r["bin_id"] for r in read_manifest(out / "manifest.csv")}
    assert built == set(expected)  # every good bin, those above 5 items in the open class


def test_huge_image_is_refused_with_its_size():
    from data_tools.images import BadImage, inspect_jpeg

    buf = io.BytesIO()
    Image.new("RGB", (2000, 1500), "white").save(buf, "JPEG")
    with pytest.raises(BadImage, match="2000x1500 px is over the 1,000,000 pixel limit"):
        inspect_jpeg(buf.getvalue(), max_pixels=1_000_000)


def test_abid_sample_builds_all_100_bins_34_of_them_in_the_open_class(tmp_path, abid_sample):
    out = tmp_path / "Z"
    proc = _cli("build", "--source", str(abid_sample), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 100
    above = [r for r in rows if r["class"] == "6+"]
    assert len(above) == 34 and all(int(r["count"]) > 5 and Path(r["image_path"]).parts[1] == "6+" for r in above)
    assert all(r["class"] == r["count"] for r in rows if r not in above)  # the manifest keeps the true count
    assert read_manifest(out / "filtered.csv") == []
    assert [p for p in read_report(out / "errors.csv") if p.is_error] == []
    stats = json.loads((out / "stats.json").read_text())
    assert stats["source_kind"] == "abid" and stats["top_class"] == "open" and stats["open_class_bins"] == 34
    assert sum(stats["classes"][s]["6+"] for s in ("train", "val", "test")) == 34
    assert sum(n for s in ("train", "val", "test") for c, n in stats["true_counts"][s].items() if int(c) > 5) == 34
    assert "34 of them in the class 6+" in proc.stdout and "true counts" in proc.stdout


def test_abid_sample_with_top_class_drop_builds_66_bins_and_filters_34(tmp_path, abid_sample):
    out = tmp_path / "Z"
    proc = _cli("build", "--source", str(abid_sample), "--out", str(out), "--top-class", "drop")
    assert proc.returncode == 0, proc.stderr
    assert len(read_manifest(out / "manifest.csv")) == 66
    with (out / "filtered.csv").open() as fh:
        filtered = list(csv.DictReader(fh))
    assert len(filtered) == 34 and all(int(r["expected_quantity"]) > 5 for r in filtered)
    assert [p for p in read_report(out / "errors.csv") if p.is_error] == []
    assert "34 filtered" in proc.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["source_kind"] == "abid" and stats["top_class"] == "drop" and "6+" not in stats["classes"]["train"]
    assert sum(stats["true_counts"]["filtered"].values()) == 34  # the histogram shows what was left out


def test_synthetic_bins_above_max_count_open_or_drop(tmp_path):
    raw = tmp_path / "raw"
    truth = generate(SynthOptions(n=60, out=raw, seed=3, max_count=8, width=48, height=40), progress=False)
    above = {b for b, _, record, _ in truth if record > 5}
    assert 10 < len(above) < 40
    opened = build_dataset(BuildOptions(source=raw, out=tmp_path / "open", progress=False))
    assert len(opened.rows) == 60 and opened.filtered == []
    assert {r["bin_id"] for r in opened.rows if r["class"] == "6+"} == above
    for r in opened.rows:
        assert (tmp_path / "open" / r["image_path"]).is_file() and Path(r["image_path"]).parts[1] == r["class"]
    # the class is one stratum: each split holds its share of the open class, within one bin
    per_split = Counter(r["split"] for r in opened.rows if r["class"] == "6+")
    assert all(abs(per_split[s] - len(above) * f) <= 1 for s, f in (("train", 0.8), ("val", 0.1), ("test", 0.1)))
    dropped = build_dataset(BuildOptions(source=raw, out=tmp_path / "drop", top_class="drop", progress=False))
    assert {b for b, _ in dropped.filtered} == above and len(dropped.rows) == 60 - len(above)
    # the bins of 0..5 items land in the same split either way
    same = {r["bin_id"]: r["split"] for r in opened.rows}
    assert all(same[r["bin_id"]] == r["split"] for r in dropped.rows)
    with pytest.raises(ValueError, match="open, drop"):
        build_dataset(BuildOptions(source=raw, out=tmp_path / "x", top_class="keep", progress=False))


def test_cli_fatal_error_is_one_line_without_traceback(tmp_path):
    proc = _cli("build", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: source folder not found")
    proc = _cli("build", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--split", "1/2")
    assert proc.returncode == 2 and "train/val/test" in proc.stderr


@pytest.mark.parametrize("command", ["synth", "download", "build", "upload", "stats"])
def test_every_command_has_help(command):
    proc = _cli(command, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_stats_command_prints_the_table(tiny_dataset, synth_raw):
    proc = _cli("stats", str(tiny_dataset))
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0] == "classes" and lines[1].split() == ["class", "train", "val", "test", "total"]
    assert any(line.split()[:1] == ["6+"] for line in lines)  # the open class row
    truth = lines.index("true counts (from the metadata)")
    assert lines[truth + 1].split() == ["count", "train", "val", "test", "total"]
    counts = [line.split()[0] for line in lines[truth + 3:] if line.split() and line.split()[0].isdigit()]
    assert max(map(int, counts)) > 5 and "6+" not in counts  # records above 5 shown as themselves here
    raw_stats = _cli("stats", str(synth_raw))
    assert raw_stats.returncode == 0 and "bins with usable metadata" in raw_stats.stdout


def test_parallel_metadata_parsing_gives_the_same_dataset(tmp_path, raw_with_bad_files, monkeypatch):
    """Large sources parse metadata in worker processes; the result must not depend on it."""
    import data_tools.build as build_module

    raw, _ = raw_with_bad_files
    sequential = build_dataset(BuildOptions(source=raw, out=tmp_path / "a", metadata_only=True, progress=False))
    monkeypatch.setattr(build_module, "_POOL_MIN_FILES", 10)
    monkeypatch.setattr(build_module, "_CHUNK", 16)
    parallel = build_dataset(BuildOptions(source=raw, out=tmp_path / "b", metadata_only=True, progress=False))
    assert (tmp_path / "a/manifest.csv").read_bytes() == (tmp_path / "b/manifest.csv").read_bytes()
    assert sorted(sequential.problems, key=str) == sorted(parallel.problems, key=str)
    assert any("malformed JSON" in p.reason for p in parallel.problems)


def test_the_open_class_folder_is_the_models_open_class_label():
    """data_tools may not import modeling: the two spell "more than N" the same way, checked here."""
    from data_tools.layout import open_class_folder
    from modeling.counts import open_label

    assert [open_class_folder(n) for n in (1, 5, 9)] == [open_label(n) for n in (1, 5, 9)] == ["2+", "6+", "10+"]
