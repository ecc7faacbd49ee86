"""Upload a built dataset to `s3://bucket/prefix/{train,val,test}/...`, skipping unchanged objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from data_tools.build import MANIFEST
from data_tools.problems import DataToolsError
from data_tools.s3 import S3Location, TransferReport, run_pool, with_retries
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


def plan_upload(client, dataset: Path, dest: S3Location) -> tuple[list[Upload], int]:
    """(uploads needed, number unchanged). Unchanged: same size and the single-part ETag equals our MD5."""
    existing = _existing(client, dest)
    todo, unchanged = [], 0
    for path in dataset_files(dataset):
        key = dest.key(path.relative_to(dataset).as_posix())
        md5 = _md5(path)
        size_etag = existing.get(key)
        if size_etag == (path.stat().st_size, md5):
            unchanged += 1
        else:
            todo.append(Upload(path, key, md5))
    return todo, unchanged


def run_uploads(client, bucket: str, uploads: list[Upload], *, workers: int = 16,
                progress: bool | None = None) -> TransferReport:
    def one(u: Upload) -> int:
        data = u.path.read_bytes()
        with_retries(lambda: client.put_object(Bucket=bucket, Key=u.key, Body=data, ContentType=_content_type(u.key)))
        return len(data)

    return run_pool(uploads, one, name=lambda u: u.key, desc="upload", workers=workers, progress=progress)


def _content_type(key: str) -> str:
    return {".jpg": "image/jpeg", ".json": "application/json", ".csv": "text/csv"}.get(Path(key).suffix,
                                                                                      "application/octet-stream")


def channel_uris(dest: S3Location) -> dict[str, str]:
    """The S3 URIs to pass as SageMaker training channels."""
    return {split: f"s3://{dest.bucket}/{dest.key(split)}" for split in SPLITS}
