"""Training data with the analysts' recounts: the base train folder plus `audit.export`'s recount dataset.

The merged folder holds links, not copies: hard links where the filesystem allows, symlinks otherwise. A recounted
bin that is also in the base folder is taken from the recounts only (the analyst's count replaces the original
label; the same photo under two counts would teach the model both). A recount of a bin in val or test stays out:
training on it would leak a held-out photo into training (train.py's --recounts does the same).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from binaudit.workspace import Workspace
from jobs.records import JobError


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or hard links not allowed
        os.symlink(src.resolve(), dst)


def _class_files(folder: Path) -> list[Path]:
    """Files in folder/<class>/ (hidden entries skipped; train.py judges the class names)."""
    return sorted(p for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                  for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def _held_out_bins(folders: Sequence[Path]) -> set[str]:
    """Bin ids (file stems) of the val/test folders that exist."""
    return {p.stem for folder in folders if folder.is_dir() for p in _class_files(folder)}


def merge_training_folder(engine: Engine, workspace: Workspace, base_train: Path, out: Path, *,
                          max_count: int, held_out: Sequence[Path] = ()) -> dict[str, Any]:
    """Build `out/<count>/<file>` from base_train and the recounts of bins not in the `held_out` folders
    (val, test); returns what went in and what was left out."""
    from audit.export import build_recount_dataset  # app depends on modeling, not the other way round

    if not base_train.is_dir():
        raise JobError(f"training folder not found: {base_train}")
    recount_dir = out.parent / "recounts"
    report = build_recount_dataset(engine, workspace, recount_dir, max_count=max_count)
    recounts = _class_files(recount_dir) if recount_dir.is_dir() else []
    held_out_bins = _held_out_bins(held_out)
    left_out = sorted({p.stem for p in recounts if p.stem in held_out_bins})
    recounts = [p for p in recounts if p.stem not in held_out_bins]
    recounted_bins = {p.stem for p in recounts}
    if out.exists():
        shutil.rmtree(out)
    replaced = base = 0
    for src in _class_files(base_train):
        if src.stem in recounted_bins:
            replaced += 1
            continue
        _link(src, out / src.parent.name / src.name)
        base += 1
    for src in recounts:
        _link(src, out / src.parent.name / src.name)
    skipped = [s for s in report["status"].tolist() if str(s).startswith("skipped")] if len(report) else []
    return {"base_images": base, "recounts": len(recounts), "replaced_by_recount": replaced,
            "recounts_skipped": len(skipped), "recounts_held_out": left_out, "train_folder": str(out)}
