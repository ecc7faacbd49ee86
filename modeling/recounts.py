"""Which analysts' recounts may train a model: never the recount of a bin in the validation or test set.

A recount is an analyst's count of a bin's photo, so it is a labelled example. Training on the photo of a bin that
is also in val or test would leak it: validation would then score a photo the model was taught. Every path that
puts recounts into training decides with `usable_recounts`: the audit core's export (which knows each bin's split
from the database and reads the val/test folders it is given) and train.py (which reads its --val and --test).

Stdlib only: train.py imports it, so it ships in the SageMaker source dir (modeling.CONTAINER_MODULES).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path


def usable_recounts(recounted_bins: Iterable[str], held_out_bins: Collection[str]) -> tuple[list[str], list[str]]:
    """(bins whose recount may be trained on, bins whose recount may not: they are in val or test), in order."""
    held_out = set(held_out_bins)
    bins = list(recounted_bins)
    return [b for b in bins if b not in held_out], [b for b in bins if b in held_out]


def folder_bin_ids(folder: str | os.PathLike) -> set[str]:
    """The bin ids (file stems) of the photos in a `<count>/<bin_id>.jpg` folder; none when it is not given ("")
    or does not exist."""
    root = Path(folder)
    if not str(folder) or not root.is_dir():  # Path("") is the working directory
        return set()
    return {p.stem for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
            for p in d.iterdir() if p.is_file() and not p.name.startswith(".")}
