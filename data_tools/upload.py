"""Upload a built dataset to `s3://bucket/prefix/{train,val,test}/...`, skipping unchanged objects.

Objects under `<prefix>/{train,val,test}/` that the dataset no longer has are stale: a relabelled bin's photo under
its old count folder would give a training channel the same photo with two labels. They are deleted (unless the
caller keeps them); nothing outside those three prefixes is ever deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_tools.build import MANIFEST
from data_tools.problems import DataToolsError, Problem
from data_tools.s3 import S3Location, TransferReport, describe_error, fatal_reason, run_pool, with_retries
from data_tools.split import SPLITS

# what a built dataset holds besides the split folders
_EXTRA_FILES = ("manifest.csv", "stats.json", "errors.csv", "filtered.csv")
_EXTRA_DIRS = ("metadata",)


@dataclass(frozen=True, slots=True)
class Upload:
    path: Path
    key: str
    md5: str


def dataset_files(dataset: Path) -> list[Path]:
    if not (dataset / MANIFEST).is_file():
        raise DataToolsError(f"{dataset} is not a built dataset (no {MANIFEST}); run `data_tools build` first")
    files = [dataset / name for name in _EXTRA_FILES if (dataset / name).is_file()]
    for folder in (*SPLITS, *_EXTRA_DIRS):
        if (dataset / folder).is_dir():
            files += sorted(p for p in (dataset / folder).rglob("*") if p.is_file() and not p.name.endswith(".part"))
    return files


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _existing(client, loc: S3Location) -> dict[str, tuple[int, str]]:
    found = {}
    paginator = client.get_paginator("list_objects_v2")
    prefix = loc.prefix + "/" if loc.prefix else ""
    for page in paginator.paginate(Bucket=loc.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (obj["Size"], obj["ETag"].strip('"'))
    return found


@dataclass(frozen=True, slots=True)
class UploadPlan:
    uploads: list[Upload]
    unchanged: int
    stale: list[str]  # keys under the split prefixes that the dataset no longer has


def split_prefixes(dest: S3Location) -> tuple[str, ...]:
    """`<prefix>/train/`, `<prefix>/val/`, `<prefix>/test/`: the only places stale objects are deleted from."""
    return tuple(dest.key(split) + "/" for split in SPLITS)


def stale_keys(existing: Iterable[str], local: set[str], dest: S3Location) -> list[str]:
    prefixes = split_prefixes(dest)
    return sorted(key for key in existing if key.startswith(prefixes) and key not in local)


def plan_upload(client, dataset: Path, dest: S3Location) -> UploadPlan:
    """Uploads needed, the number unchanged (same size and the single-part ETag equals our MD5), stale keys."""
    existing = _existing(client, dest)
    todo, unchanged, local = [], 0, set()
    for path in dataset_files(dataset):
        key = dest.key(path.relative_to(dataset).as_posix())
        local.add(key)
        md5 = _md5(path)
        size_etag = existing.get(key)
        if size_etag == (path.stat().st_size, md5):
            unchanged += 1
        else:
            todo.append(Upload(path, key, md5))
    return UploadPlan(todo, unchanged, stale_keys(existing, local, dest))


def run_uploads(client, bucket: str, uploads: list[Upload], *, workers: int = 16,
                progress: bool | None = None) -> TransferReport:
    def one(u: Upload) -> int:
        data = u.path.read_bytes()
        with_retries(lambda: client.put_object(Bucket=bucket, Key=u.key, Body=data, ContentType=_content_type(u.key)))
        return len(data)

    return run_pool(uploads, one, name=lambda u: u.key, desc="upload", workers=workers, progress=progress)


def delete_stale(client, dest: S3Location, keys: list[str]) -> TransferReport:
    """Delete `keys`, 1000 per request (S3's limit); a key outside the split prefixes is refused, not deleted."""
    prefixes = split_prefixes(dest)
    outside = [key for key in keys if not key.startswith(prefixes)]
    if outside:
        raise DataToolsError(f"refusing to delete {outside[0]}: only objects under {', '.join(prefixes)} are "
                             f"deleted as stale")
    report = TransferReport()
    for start in range(0, len(keys), 1000):
        _delete_batch(client, dest.bucket, keys[start:start + 1000], report)
    return report


def _delete_batch(client, bucket: str, keys: list[str], report: TransferReport) -> None:
    request = {"Objects": [{"Key": key} for key in keys], "Quiet": True}
    try:
        answer = with_retries(lambda: client.delete_objects(Bucket=bucket, Delete=request))
    except Exception as exc:  # noqa: BLE001 - classified: fatal, or every key of the batch reported
        reason = fatal_reason(exc)
        if reason:
            raise DataToolsError(reason) from None
        report.failed += [Problem(key, describe_error(exc)) for key in keys]
        return
    errors = answer.get("Errors", [])
    report.failed += [Problem(e.get("Key", ""), f"{e.get('Code', 'error')}: {e.get('Message', '')}") for e in errors]
    report.done += len(keys) - len(errors)


def _content_type(key: str) -> str:
    return {".jpg": "image/jpeg", ".json": "application/json", ".csv": "text/csv"}.get(Path(key).suffix,
                                                                                      "application/octet-stream")


def channel_uris(dest: S3Location) -> dict[str, str]:
    """The S3 URIs to pass as SageMaker training channels."""
    return {split: f"s3://{dest.bucket}/{dest.key(split)}" for split in SPLITS}
