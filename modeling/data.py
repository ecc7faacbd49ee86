"""Count folders -> labelled samples. Folder "k" holds photos of bins with k items and gets label k; the open class
folder "N+1+" ("6+" for --max-count 5: bins with more than N items) gets label N+1 (modeling.counts).

Unlike torchvision's ImageFolder (which numbers the sorted folder names, so folders 1..5 would silently become
labels 0..4), the label is the folder's integer name, always.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from modeling.counts import CLOSED, OPEN, TOP_CLASSES, open_label
from modeling.preprocessing import load_image
from modeling.recounts import usable_recounts

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MANIFEST = "manifest.csv"


class DatasetLayoutError(ValueError):
    """A data folder is not laid out as <root>/<count>/<image>; the message names the offending folder."""


def scan_count_folders(root: str | os.PathLike, max_count: int, *, open_top: bool = False,
                       allow_empty: bool = False) -> list[tuple[str, int]]:
    """[(image path, class)] under root/<count>/, sorted by (folder, file name); the class is the count, and the
    open class folder "N+1+" ("6+" for max_count 5) is class N+1.

    Hidden folders (".ipynb_checkpoints") are skipped; any other folder that is not an integer in 0..max_count (or,
    with `open_top`, the open class folder) is an error, because silently skipping it would drop labelled data.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"data folder not found: {root}")
    samples: list[tuple[str, int]] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        count = _folder_count(root, entry.name, max_count, open_top)
        with os.scandir(entry.path) as files:
            names = sorted(f.name for f in files if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
        samples.extend((os.path.join(entry.path, name), count) for name in names)
    if not samples and not allow_empty:
        folders = f"0..{max_count}" + (f" and {open_label(max_count)}" if open_top else "")
        raise DatasetLayoutError(f"no images found in {root}: expected <count>/<bin_id>.jpg folders named {folders}")
    return samples


def has_open_class_folder(root: str | os.PathLike, max_count: int) -> bool:
    """Whether a data folder has the open class folder of `max_count` ("6+" for 5) with at least one photo."""
    folder = Path(root) / open_label(max_count)
    return folder.is_dir() and any(f.name.lower().endswith(IMAGE_SUFFIXES) for f in folder.iterdir())


def resolve_top_class(top_class: str, train_root: str | os.PathLike, max_count: int) -> str:
    """--top-class as train.py uses it: "auto" is "open" when the training folder has the open class folder
    (a dataset built with `data_tools build --top-class open`, the default), else "closed"."""
    if top_class == "auto":
        return OPEN if has_open_class_folder(train_root, max_count) else CLOSED
    if top_class not in TOP_CLASSES:
        raise ValueError(f"Invalid top class {top_class!r}. Only auto, {', '.join(TOP_CLASSES)} are supported.")
    return top_class


def bin_ids(samples: Iterable[tuple[str, int]]) -> set[str]:
    """The bins of some samples: a photo's file stem is its bin id (<count>/<bin_id>.jpg)."""
    return {Path(path).stem for path, _ in samples}


def with_recounts(samples: list[tuple[str, int]], recounts: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Training samples plus analysts' recounts; a recounted bin (same file stem) replaces its original,
    whose label the recount has shown to be wrong."""
    recounted = bin_ids(recounts)
    return [s for s in samples if Path(s[0]).stem not in recounted] + list(recounts)


def _folder_count(root: Path, name: str, max_count: int, open_top: bool) -> int:
    top = open_label(max_count)
    if name == top:
        if not open_top:
            raise DatasetLayoutError(
                f"folder {name!r} in {root} holds bins with more than {max_count} items, which a closed model "
                f"(--top-class closed) has no class for; train with --top-class open (or auto), or rebuild the "
                f"dataset with `data_tools build --top-class drop`"
            )
        return max_count + 1
    if name.endswith("+") and name[:-1].isdigit():
        raise DatasetLayoutError(
            f"folder {name!r} in {root} is the open class of --max-count {int(name[:-1]) - 1}, not of "
            f"--max-count {max_count} (whose open class folder is {top!r})"
        )
    folders = f"0..{max_count}" + (f" and {top}" if open_top else "")
    if not name.isdigit():
        raise DatasetLayoutError(
            f"folder {name!r} in {root} is not an item count: class folders must be named {folders}"
        )
    count = int(name)
    if count > max_count:
        raise DatasetLayoutError(
            f"folder {name!r} in {root} holds {count}-item bins, above --max-count {max_count}; "
            f"raise --max-count or remove the folder"
        )
    return count


class CountFolderDataset(Dataset):
    """Photos under root/<count>/ as (uint8 image tensor, class) pairs; class == item count, and with `open_top` the
    open class folder ("6+") is class max_count + 1."""

    def __init__(self, root: str | os.PathLike, max_count: int, transform: Callable, decode_side: int | None,
                 recounts_root: str | os.PathLike | None = None, held_out_bins: Collection[str] = (), *,
                 open_top: bool = False) -> None:
        self.root = Path(root)
        self.max_count = max_count
        self.open_top = open_top
        self.samples = scan_count_folders(root, max_count, open_top=open_top)
        self.recounts_root = Path(recounts_root) if recounts_root else None
        self.recounts: list[tuple[str, int]] = []  # recounts trained on
        self.held_out_recounts: list[tuple[str, int]] = []  # recounts left out: their bins are in val/test
        self.beyond_range_recounts: list[tuple[str, int]] = []  # recounts of more than N items, for a closed model
        self.replaced_by_recounts = 0  # base photos whose label a recount replaced
        if self.recounts_root is not None:
            # the audit core files a recount above N under the open class; a closed model has no class for it
            found = scan_count_folders(self.recounts_root, max_count, open_top=True, allow_empty=True)
            self.beyond_range_recounts = [r for r in found if not open_top and r[1] > max_count]
            found = [r for r in found if r not in self.beyond_range_recounts]
            usable = set(usable_recounts([Path(path).stem for path, _ in found], held_out_bins)[0])
            self.recounts = [r for r in found if Path(r[0]).stem in usable]
            self.held_out_recounts = [r for r in found if Path(r[0]).stem not in usable]
            base = len(self.samples)
            self.samples = with_recounts(self.samples, self.recounts)
            self.replaced_by_recounts = base + len(self.recounts) - len(self.samples)
        self.transform = transform
        self.decode_side = decode_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, count = self.samples[index]
        img = load_image(path, self.decode_side)
        return self.transform(img), count

    @property
    def targets(self) -> list[int]:
        return [count for _, count in self.samples]

    def class_counts(self) -> list[int]:
        counts = [0] * (self.max_count + 1 + int(self.open_top))
        for _, count in self.samples:
            counts[count] += 1
        return counts


def dataset_fingerprint(splits: Iterable[tuple[str, str | os.PathLike, Sequence[tuple[str, int]]]]) -> str:
    """sha256 of the sorted (split, path relative to the split root, size in bytes) listing.

    Changes when a photo is added, removed, moved between count folders or rewritten with another size.
    """
    rows = []
    for split, root, samples in splits:
        for path, _ in samples:
            # a recount lives outside the split root: keyed by its own <count>/<file>
            rel = Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else \
                "recounts/" + "/".join(Path(path).parts[-2:])
            rows.append(f"{split}\t{rel}\t{os.path.getsize(path)}")
    return hashlib.sha256("\n".join(sorted(rows)).encode("utf-8")).hexdigest()


def manifest_sha256(train_root: str | os.PathLike) -> str | None:
    """sha256 of the data_tools manifest.csv beside the train folder, when there is one."""
    path = Path(train_root).parent / MANIFEST
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()
