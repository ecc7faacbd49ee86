"""train.py's --recounts: analysts' recounts join the training data; a recounted bin replaces its original;
a recount of a bin in val or test stays out of training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modeling.data import CountFolderDataset, dataset_fingerprint, with_recounts
from modeling.recounts import folder_bin_ids, usable_recounts
from tests.modeling_fixtures import run_python, train_cli_args


def _recounts_from(dataset: Path, out: Path) -> tuple[str, int]:
    """Move one training photo to another count, as an analyst's recount would."""
    original = sorted((dataset / "train" / "3").glob("*.jpg"))[0]
    (out / "1").mkdir(parents=True)
    shutil.copyfile(original, out / "1" / original.name)
    return original.stem, 1


def test_recounts_replace_their_originals_and_add_the_rest(tiny_dataset, tmp_path):
    stem, recount = _recounts_from(tiny_dataset, tmp_path / "recounts")
    plain = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True)
    merged = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True,
                                recounts_root=tmp_path / "recounts")
    assert len(merged) == len(plain)  # one photo relabelled, none added twice
    labels = {Path(p).stem: c for p, c in merged.samples}
    assert labels[stem] == recount
    assert merged.class_counts()[3] == plain.class_counts()[3] - 1
    assert merged.class_counts()[1] == plain.class_counts()[1] + 1
    fingerprint = dataset_fingerprint([("train", str(merged.root), merged.samples)])
    assert fingerprint != dataset_fingerprint([("train", str(plain.root), plain.samples)])


def test_an_empty_recount_folder_changes_nothing(tiny_dataset, tmp_path):
    (tmp_path / "recounts").mkdir()
    plain = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True)
    merged = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True,
                                recounts_root=tmp_path / "recounts")
    assert merged.samples == plain.samples
    assert with_recounts([("a/3/x.jpg", 3)], []) == [("a/3/x.jpg", 3)]


def _recount_of_held_out(dataset: Path, split: str, out: Path) -> str:
    """An analyst's recount of a val or test bin (as audit.export writes any audited bin)."""
    original = sorted((dataset / split / "2").glob("*.jpg"))[0]
    (out / "4").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(original, out / "4" / original.name)
    return original.stem


def test_recounts_of_val_and_test_bins_stay_out_of_training(tiny_dataset, tmp_path):
    stem, _ = _recounts_from(tiny_dataset, tmp_path / "recounts")
    val_bin = _recount_of_held_out(tiny_dataset, "val", tmp_path / "recounts")
    test_bin = _recount_of_held_out(tiny_dataset, "test", tmp_path / "recounts")
    held_out = {p.stem for split in ("val", "test") for p in (tiny_dataset / split).rglob("*.jpg")}
    plain = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True)
    merged = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True,
                                recounts_root=tmp_path / "recounts", held_out_bins=held_out)
    trained_bins = {Path(p).stem for p, _ in merged.samples}
    assert val_bin not in trained_bins and test_bin not in trained_bins
    assert stem in trained_bins and len(merged) == len(plain)
    assert sorted(Path(p).stem for p, _ in merged.held_out_recounts) == sorted([val_bin, test_bin])
    assert [Path(p).stem for p, _ in merged.recounts] == [stem] and merged.replaced_by_recounts == 1
    assert usable_recounts(["a", "b", "c"], {"a", "x"}) == (["b", "c"], ["a"])
    assert folder_bin_ids(tiny_dataset / "val") == {p.stem for p in (tiny_dataset / "val").rglob("*.jpg")}
    assert folder_bin_ids(tmp_path / "no-such-folder") == set() == folder_bin_ids("")  # "": no test folder given


@pytest.mark.slow
def test_train_reads_the_recounts_channel_from_sagemakers_variable(tiny_dataset, tmp_path):
    _recounts_from(tiny_dataset, tmp_path / "recounts")
    val_bin = _recount_of_held_out(tiny_dataset, "val", tmp_path / "recounts")
    from tests.modeling_fixtures import subprocess_env

    env = subprocess_env(SM_CHANNEL_RECOUNTS=str(tmp_path / "recounts"))
    proc = run_python(["-m", "modeling.train", *train_cli_args(tiny_dataset, tmp_path / "model")],
                      cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    import json

    config = json.loads((tmp_path / "model" / "model_config.json").read_text())
    assert config["resolved_args"]["recounts"] == str(tmp_path / "recounts")
    assert ("recounts: 1 used (1 replacing their photo in --train), 1 left out of training because their bins "
            "are in val/test") in proc.stdout
    assert val_bin in proc.stdout
    plain = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True)
    assert sum(config["train_class_counts"]) == len(plain)  # the val bin's recount was not added
    report = json.loads((tmp_path / "model" / "metrics.json").read_text())["recounts"]
    assert report == {"folder": str(tmp_path / "recounts"), "used": 1, "replaced": 1, "left_out": 1,
                      "left_out_bins": [val_bin], "beyond_range": 0}


def test_a_closed_model_leaves_out_recounts_of_more_than_n_items(tiny_dataset, tmp_path):
    """The audit core files a recount of 9 under "6+"; an open model learns it, a closed one has no class for it."""
    stem, _ = _recounts_from(tiny_dataset, tmp_path / "recounts")
    big = sorted((tiny_dataset / "train" / "4").glob("*.jpg"))[0]
    (tmp_path / "recounts" / "6+").mkdir()
    shutil.copyfile(big, tmp_path / "recounts" / "6+" / big.name)
    closed_train = tmp_path / "closed"
    shutil.copytree(tiny_dataset / "train", closed_train, ignore=shutil.ignore_patterns("6+"))
    closed = CountFolderDataset(closed_train, 5, transform=lambda x: x, decode_side=32,
                                recounts_root=tmp_path / "recounts")
    assert [Path(p).stem for p, _ in closed.beyond_range_recounts] == [big.stem]
    assert [Path(p).stem for p, _ in closed.recounts] == [stem] and max(closed.targets) <= 5
    opened = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32, open_top=True,
                                recounts_root=tmp_path / "recounts")
    assert {Path(p).stem: c for p, c in opened.recounts} == {stem: 1, big.stem: 6} and not opened.beyond_range_recounts
