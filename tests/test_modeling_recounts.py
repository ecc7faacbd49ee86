"""train.py's --recounts: analysts' recounts join the training data; a recounted bin replaces its original."""

from __future__ import annotations

import shutil
from pathlib import Path

from modeling.data import CountFolderDataset, dataset_fingerprint, with_recounts
from tests.modeling_fixtures import run_python, train_cli_args


def _recounts_from(dataset: Path, out: Path) -> tuple[str, int]:
    """Move one training photo to another count, as an analyst's recount would."""
    original = sorted((dataset / "train" / "3").glob("*.jpg"))[0]
    (out / "1").mkdir(parents=True)
    shutil.copyfile(original, out / "1" / original.name)
    return original.stem, 1


def test_recounts_replace_their_originals_and_add_the_rest(tiny_dataset, tmp_path):
    stem, recount = _recounts_from(tiny_dataset, tmp_path / "recounts")
    plain = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32)
    merged = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32,
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
    plain = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32)
    merged = CountFolderDataset(tiny_dataset / "train", 5, transform=lambda x: x, decode_side=32,
                                recounts_root=tmp_path / "recounts")
    assert merged.samples == plain.samples
    assert with_recounts([("a/3/x.jpg", 3)], []) == [("a/3/x.jpg", 3)]


def test_train_reads_the_recounts_channel_from_sagemakers_variable(tiny_dataset, tmp_path):
    _recounts_from(tiny_dataset, tmp_path / "recounts")
    from tests.modeling_fixtures import subprocess_env

    env = subprocess_env(SM_CHANNEL_RECOUNTS=str(tmp_path / "recounts"))
    proc = run_python(["-m", "modeling.train", *train_cli_args(tiny_dataset, tmp_path / "model")],
                      cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    import json

    config = json.loads((tmp_path / "model" / "model_config.json").read_text())
    assert config["resolved_args"]["recounts"] == str(tmp_path / "recounts")
