"""The ABID layout: `bin-images/<id>.jpg` beside `metadata/<id>.json`, and pairing the two."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.problems import DataToolsError, Problem

IMAGES_DIR = "bin-images"
METADATA_DIR = "metadata"
IMAGE_SUFFIX = ".jpg"
METADATA_SUFFIX = ".json"
# the public bucket that holds the Amazon Bin Image Dataset
ABID_BUCKET = "aft-vbi-pds"
ABID_REGION = "us-east-1"


def open_class_folder(max_count: int) -> str:
    """The class folder of bins with more than `max_count` items: "6+" for 5. The same name as the model's open
    class label (modeling.counts.open_label; a test checks they agree: this package may not import modeling)."""
    return f"{max_count + 1}+"


def class_folder(count: int, max_count: int) -> str:
    """The class folder of a bin of `count` items: its count, or the open class folder above `max_count`."""
    return str(count) if count <= max_count else open_class_folder(max_count)


def class_sort_key(name: str) -> tuple[int, bool]:
    """Class and count names in count order, the open class last: "0" < "5" < "6+" (and "6" < "6+" < "7")."""
    return int(name.rstrip("+")), name.endswith("+")
# A bin id becomes a file name (photos, recount folders), a URL and text on the dashboard: letters, digits and
# '.', '_', '-', starting with a letter or digit, no "..", at most 100 characters (the database column's width).
# One rule for every way in: folder and S3 imports, builds, datasets, id lists (uploads make their ids to fit it).
BIN_ID_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, no '..', at most 100 characters"
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def is_safe_bin_id(bin_id: str) -> bool:
    """Whether `bin_id` follows BIN_ID_RULE."""
    return isinstance(bin_id, str) and bool(_PLAIN_ID.fullmatch(bin_id)) and ".." not in bin_id


def unsafe_bin_id_reason(bin_id: str) -> str:
    return f"bin id {bin_id[:120]!r} is not a plain name ({BIN_ID_RULE}): left out"


def normalize_bin_id(value: str | int) -> str:
    """ABID ids are zero-padded to 5 digits below 100000 ("00042"); keep other ids as given."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bin id must not be negative: {value}")
        return f"{value:05d}"
    text = str(value).strip()
    if text.isascii() and text.isdigit() and len(text) < 5:  # isdigit alone takes "²" and other digits
        return f"{int(text):05d}"
    if not is_safe_bin_id(text):
        raise ValueError(f"not a usable bin id: {value!r} ({BIN_ID_RULE})")
    return text


def bin_sort_key(bin_id: str) -> tuple[int, str]:
    """Numeric order for zero-padded ids ("00002" < "00010" < "100000"), then the rest by text."""
    return (len(bin_id), bin_id) if bin_id.isdigit() else (1 << 30, bin_id)


def image_key(bin_id: str) -> str:
    return f"{IMAGES_DIR}/{bin_id}{IMAGE_SUFFIX}"


def metadata_key(bin_id: str) -> str:
    return f"{METADATA_DIR}/{bin_id}{METADATA_SUFFIX}"


@dataclass
class Pairing:
    """Ids found in a source, matched across the two folders, and the files refused on the way."""

    root: Path
    paired: list[str] = field(default_factory=list)
    metadata_only: list[str] = field(default_factory=list)
    image_only: list[str] = field(default_factory=list)
    refused: list[Problem] = field(default_factory=list)  # unsafe bin ids, symlinks out of the source folder

    def image_path(self, bin_id: str) -> Path:
        return self.root / IMAGES_DIR / f"{bin_id}{IMAGE_SUFFIX}"

    def metadata_path(self, bin_id: str) -> Path:
        return self.root / METADATA_DIR / f"{bin_id}{METADATA_SUFFIX}"

    def orphan_problems(self) -> list[Problem]:
        """Every file of the source that is not a usable pair: refused files and orphans."""
        out = list(self.refused)
        out += [
            Problem(f"{METADATA_DIR}/{b}{METADATA_SUFFIX}", "metadata without an image", b)
            for b in self.metadata_only
        ]
        out += [
            Problem(f"{IMAGES_DIR}/{b}{IMAGE_SUFFIX}", "image without metadata", b) for b in self.image_only
        ]
        return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _stems(root: Path, name: str, suffix: str, refused: list[Problem]) -> set[str]:
    """The bin ids of `root/name/*<suffix>`; files with unsafe ids or linking out of `root` go to `refused`."""
    folder = root / name
    if not folder.is_dir():
        return set()
    real_root = os.path.realpath(root)
    real_folder = os.path.realpath(folder)
    if not _inside(real_folder, real_root):
        refused.append(Problem(name, f"a symlink to {real_folder}, outside the source folder: not followed"))
        return set()
    stems: set[str] = set()
    # os.scandir is several times faster than Path.glob on folders of 100k+ files
    with os.scandir(folder) as it:
        for e in it:
            if not e.name.endswith(suffix):
                continue
            stem = e.name[: -len(suffix)]
            rel = f"{name}/{e.name}"
            if not is_safe_bin_id(stem):
                refused.append(Problem(rel, unsafe_bin_id_reason(stem)))
                continue
            if e.is_symlink():
                target = os.path.realpath(e.path)
                if not _inside(target, real_root):
                    refused.append(Problem(rel, f"a symlink to {target}, outside the source folder: not followed",
                                           stem))
                    continue
            if e.is_file():
                stems.add(stem)
    return stems


def scan_local(root: Path, metadata_only: bool = False) -> Pairing:
    """Pair images and metadata under `root`; with `metadata_only`, images are not looked for.

    A file whose name is not a safe bin id, or a symlink that leads out of `root`, is refused (reported in
    `Pairing.refused`, never read).
    """
    if not root.is_dir():
        raise DataToolsError(f"source folder not found: {root}")
    refused: list[Problem] = []
    meta = _stems(root, METADATA_DIR, METADATA_SUFFIX, refused)
    if not meta and not (root / METADATA_DIR).is_dir():
        raise DataToolsError(f"{root} is not in ABID layout: no {METADATA_DIR}/ folder")
    if metadata_only:
        return Pairing(root, sorted(meta, key=bin_sort_key), refused=refused)
    images = _stems(root, IMAGES_DIR, IMAGE_SUFFIX, refused)
    return Pairing(
        root,
        paired=sorted(meta & images, key=bin_sort_key),
        metadata_only=sorted(meta - images, key=bin_sort_key),
        image_only=sorted(images - meta, key=bin_sort_key),
        refused=refused,
    )
