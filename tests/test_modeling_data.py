"""Count folders map to labels by their integer name, never by sorted position (ImageFolder's trap)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from modeling.data import (
    CountFolderDataset,
    DatasetLayoutError,
    dataset_fingerprint,
    manifest_sha256,
    resolve_top_class,
)
from modeling.preprocessing import EvalTransform
from tests.modeling_fixtures import jpeg_bytes


def _folder(root: Path, layout: dict[str, int]) -> Path:
    for name, n in layout.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / name / f"{name}-{i}.jpg").write_bytes(jpeg_bytes(40 + i, 30))
    return root


def test_folders_one_to_five_keep_their_counts(tmp_path):
    root = _folder(tmp_path / "train", {"1": 1, "2": 1, "3": 2, "4": 1, "5": 1})
    ds = CountFolderDataset(root, 5, EvalTransform(32), decode_side=32)
    by_folder = {Path(p).parent.name: label for p, label in ds.samples}
    assert by_folder["3"] == 3 and by_folder["1"] == 1 and by_folder["5"] == 5
    assert ds.class_counts() == [0, 1, 1, 2, 1, 1]
    index = next(i for i, (p, _) in enumerate(ds.samples) if Path(p).parent.name == "3")
    image, label = ds[index]
    assert label == 3
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 32, 32)


def test_folder_above_max_count_is_an_error_naming_it(tmp_path):
    root = _folder(tmp_path / "train", {"0": 1, "7": 1})
    with pytest.raises(DatasetLayoutError, match=r"folder '7'.*--max-count 5"):
        CountFolderDataset(root, 5, EvalTransform(32), decode_side=32)
    assert len(CountFolderDataset(root, 7, EvalTransform(32), decode_side=32)) == 2


def test_the_open_class_folder_is_class_n_plus_one_of_an_open_model_only(tmp_path):
    root = _folder(tmp_path / "train", {"0": 1, "5": 1, "6+": 2})
    ds = CountFolderDataset(root, 5, EvalTransform(32), decode_side=32, open_top=True)
    assert sorted(label for _, label in ds.samples) == [0, 5, 6, 6] and ds.class_counts() == [1, 0, 0, 0, 0, 1, 2]
    with pytest.raises(DatasetLayoutError, match=r"folder '6\+'.*closed model.*--top-class drop"):
        CountFolderDataset(root, 5, EvalTransform(32), decode_side=32)
    with pytest.raises(DatasetLayoutError, match=r"folder '6\+'.*open class of --max-count 5, not of --max-count 3"):
        CountFolderDataset(_folder(tmp_path / "other", {"1": 1, "6+": 1}), 3, EvalTransform(32), decode_side=32,
                           open_top=True)
    assert resolve_top_class("auto", root, 5) == "open" and resolve_top_class("closed", root, 5) == "closed"
    assert resolve_top_class("auto", _folder(tmp_path / "plain", {"1": 1}), 5) == "closed"


def test_non_integer_folder_is_an_error_naming_it(tmp_path):
    root = _folder(tmp_path / "train", {"0": 1, "three": 1})
    with pytest.raises(DatasetLayoutError, match=r"folder 'three'.*0\.\.5"):
        CountFolderDataset(root, 5, EvalTransform(32), decode_side=32)


def test_hidden_folders_and_stray_files_are_ignored(tmp_path):
    root = _folder(tmp_path / "train", {"2": 2, ".ipynb_checkpoints": 1})
    (root / "README.txt").write_text("not an image folder")
    (root / "2" / "notes.txt").write_text("not an image")
    ds = CountFolderDataset(root, 5, EvalTransform(32), decode_side=32)
    assert [label for _, label in ds.samples] == [2, 2]


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images found"):
        CountFolderDataset(tmp_path / "empty", 5, EvalTransform(32), decode_side=32)
    with pytest.raises(DatasetLayoutError, match="not found"):
        CountFolderDataset(tmp_path / "missing", 5, EvalTransform(32), decode_side=32)


def test_built_dataset_labels_match_the_manifest(tiny_dataset):
    import csv

    with (tiny_dataset / "manifest.csv").open() as fh:  # the true count; above 5 the class is the open one, 6
        truth = {r["image_path"]: min(int(r["count"]), 6) for r in csv.DictReader(fh) if r["split"] == "train"}
    ds = CountFolderDataset(tiny_dataset / "train", 5, EvalTransform(32), decode_side=32, open_top=True)
    got = {Path(p).relative_to(tiny_dataset).as_posix(): label for p, label in ds.samples}
    assert got == truth and 6 in got.values()  # the fixture's records of 6 and 7 are in the "6+" folder


def test_fingerprint_follows_moves_and_size_changes(tmp_path):
    root = _folder(tmp_path / "train", {"2": 2, "3": 1})

    def fingerprint() -> str:
        ds = CountFolderDataset(root, 5, EvalTransform(32), decode_side=32)
        return dataset_fingerprint([("train", root, ds.samples)])

    first = fingerprint()
    assert first == fingerprint()
    shutil.move(root / "2" / "2-0.jpg", root / "3" / "2-0.jpg")
    moved = fingerprint()
    assert moved != first
    (root / "3" / "2-0.jpg").write_bytes(jpeg_bytes(90, 30))
    assert fingerprint() != moved


def test_manifest_hash_only_when_the_manifest_sits_beside_train(tiny_dataset, tmp_path):
    assert manifest_sha256(tiny_dataset / "train") is not None
    assert len(manifest_sha256(tiny_dataset / "train")) == 64
    assert manifest_sha256(_folder(tmp_path / "train", {"1": 1})) is None
