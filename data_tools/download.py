"""Download bins in ABID layout from S3: concurrent, resumable, retried, with a progress bar.

A file is written to `<name>.part` and renamed only once every byte has arrived and the
length matches, so an interrupted run leaves no half file that a rerun would take as done.
A rerun skips complete files (and, where the listing gave sizes, checks the size too).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_tools.layout import IMAGES_DIR, METADATA_DIR, bin_sort_key, image_key, metadata_key
from data_tools.s3 import S3Location, ShortRead, TransferReport, run_pool, with_retries

CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Transfer:
    key: str  # object key, relative to the bucket
    dest: Path
    size: int | None = None  # known from a listing; None when ids were given directly


def _list_ids(client, loc: S3Location, folder: str, suffix: str, limit: int | None) -> dict[str, int]:
    """{bin id: size} for the objects under `<prefix>/<folder>/`, stopping after `limit` ids."""
    found: dict[str, int] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key(folder) + "/"):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            if name.endswith(suffix):
                found[name[: -len(suffix)]] = obj["Size"]
                if limit is not None and len(found) >= limit:
                    return found
    return found


def list_bin_ids(client, loc: S3Location, folder: str, suffix: str, limit: int | None = None) -> dict[str, int]:
    """{bin id: size} of the objects `<prefix>/<folder>/<id><suffix>` (all, or the first `limit`)."""
    return _list_ids(client, loc, folder, suffix, limit)


def plan_download(client, loc: S3Location, out: Path, *, ids: list[str] | None = None, limit: int | None = None,
                  metadata_only: bool = False) -> list[Transfer]:
    """The transfers that bring `ids` (or the first `limit` bins, or all) of `loc` into `out`."""
    if ids is not None:
        chosen = ids[:limit] if limit is not None else ids
        transfers = [Transfer(loc.key(metadata_key(b)), out / metadata_key(b)) for b in chosen]
        if not metadata_only:
            transfers += [Transfer(loc.key(image_key(b)), out / image_key(b)) for b in chosen]
        return transfers

    meta_sizes = _list_ids(client, loc, METADATA_DIR, ".json", limit)
    chosen = sorted(meta_sizes, key=bin_sort_key)
    transfers = [Transfer(loc.key(metadata_key(b)), out / metadata_key(b), meta_sizes[b]) for b in chosen]
    if not metadata_only:
        # With a limit, listing all 535k images to learn sizes costs more than it saves.
        image_sizes = _list_ids(client, loc, IMAGES_DIR, ".jpg", None) if limit is None else {}
        transfers += [Transfer(loc.key(image_key(b)), out / image_key(b), image_sizes.get(b)) for b in chosen]
    return transfers


def is_complete(t: Transfer) -> bool:
    try:
        size = t.dest.stat().st_size
    except FileNotFoundError:
        return False
    return t.size is None or size == t.size


def _fetch(client, bucket: str, t: Transfer) -> int:
    part = t.dest.with_name(t.dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    response = client.get_object(Bucket=bucket, Key=t.key)
    expected = response.get("ContentLength")
    written = 0
    with part.open("wb") as fh:
        for chunk in response["Body"].iter_chunks(CHUNK):
            fh.write(chunk)
            written += len(chunk)
    if expected is not None and written != expected:
        part.unlink(missing_ok=True)
        raise ShortRead(f"{t.key}: got {written} of {expected} bytes")
    os.replace(part, t.dest)
    return written


def run_transfers(client, bucket: str, transfers: Iterable[Transfer], *, workers: int = 16, attempts: int = 5,
                  progress: bool | None = None) -> TransferReport:
    """Fetch every transfer not already complete; a failed object is reported, the rest go on."""
    report = TransferReport()
    todo = []
    for t in transfers:
        if is_complete(t):
            report.skipped += 1
        else:
            todo.append(t)
    return run_pool(todo, lambda t: with_retries(lambda: _fetch(client, bucket, t), attempts=attempts),
                    name=lambda t: t.key, desc="download", workers=workers, progress=progress, report=report)
