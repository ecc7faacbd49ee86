"""Bring bins into the audit database: a dataset built by data_tools, a folder or S3 prefix in ABID
layout, or one uploaded photo (with optional metadata JSON or a typed expected count).

Re-importing is safe: a bin that exists is updated (new metadata, new photo location) and the
change is logged; nothing is duplicated. Bad metadata and orphan files are recorded in the
`problems` table with their reason and the rest is imported. Photos referenced in place (dataset
and folder imports, and S3 imports, whose photos stay in S3) have their folder or prefix registered
as an image root; uploads copy photos into the workspace.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.photos import local_photo
from audit.scoring import forget_predictions, refresh_mismatch
from binaudit import db
from binaudit.workspace import UnsafePath, Workspace, image_roots, register_image_root
from data_tools.layout import METADATA_DIR, is_safe_bin_id, scan_local, unsafe_bin_id_reason
from data_tools.metadata import MAX_QUANTITY, BinRecord, item_dicts, parse_metadata, read_metadata_file
from data_tools.problems import Problem
from modeling.preprocessing import ImageDecodeError, load_image, probe_image

CHUNK = 2000
_UPDATABLE = ("image_uri", "expected_count", "items", "search_text", "source", "split", "width", "height",
              "updated_at")


class ImportError_(ValueError):  # noqa: N801 - ImportError is a builtin with another meaning
    """An upload or import that cannot be used at all; the message says why."""


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{len(self.problems)} problem(s)")


def search_text(bin_id: str, items: Iterable[dict]) -> str:
    """What the text filter searches: the bin id, item names and ASINs, lower-cased."""
    return " | ".join([bin_id.lower(), *(f"{i.get('asin', '')} {i.get('name', '')}".lower() for i in items)])


def bin_row(record: BinRecord | None, *, bin_id: str, image_uri: str, source: str, split: str | None = None,
            expected_count: int | None = None, size: tuple[int, int] | None = None) -> dict:
    items = item_dicts(record) if record else []
    now = db.utcnow()
    return {
        "id": bin_id, "image_uri": image_uri,
        "expected_count": record.expected_quantity if record else expected_count,
        "items": items, "search_text": search_text(bin_id, items), "source": source, "split": split,
        "width": size[0] if size else None, "height": size[1] if size else None,
        "created_at": now, "updated_at": now,
    }


def _record_problems(conn: sa.Connection, problems: list[Problem], stage: str = "import") -> None:
    if problems:
        conn.execute(db.problems.insert(), [
            {"bin_id": p.bin_id or None, "file": p.file, "stage": stage, "reason": p.reason, "created_at": db.utcnow()}
            for p in problems
        ])


def _existing(conn: sa.Connection, ids: list[str]) -> dict[str, dict]:
    rows = conn.execute(sa.select(db.bins.c.id, *[db.bins.c[c] for c in _UPDATABLE if c != "updated_at"])
                        .where(db.bins.c.id.in_(ids))).mappings()
    return {r["id"]: dict(r) for r in rows}


def save_bins(engine: Engine, rows: list[dict], *, actor: str, report: ImportReport,
              photo_replaced: Collection[str] = ()) -> None:
    """Insert new bins and update changed ones, in chunks; every change goes to the audit log.

    Bins in `photo_replaced` got a new photo: their predictions are dropped in the same transaction.
    """
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        with db.write_tx(engine) as conn:
            existing = _existing(conn, [r["id"] for r in chunk])
            replaced = [r["id"] for r in chunk if r["id"] in existing and r["id"] in photo_replaced]
            forget_predictions(conn, replaced)
            for bin_id in replaced:
                db.log_change(conn, actor=actor, action="replace_photo", entity="bin", entity_id=bin_id)
            new = [r for r in chunk if r["id"] not in existing]
            changed = [r for r in chunk if r["id"] in existing
                       and any(existing[r["id"]][c] != r[c] for c in _UPDATABLE if c != "updated_at")]
            report.added += len(new)
            report.updated += len(changed)
            report.unchanged += len(chunk) - len(new) - len(changed)
            db.upsert(conn, db.bins, new + changed, key=("id",), update=_UPDATABLE)
            # a decision is made against the row version the analyst saw: a new record or photo is a new version
            touched = sorted({r["id"] for r in changed} | set(replaced))
            if touched:
                conn.execute(db.bins.update().where(db.bins.c.id.in_(touched))
                             .values(row_version=db.bins.c.row_version + 1))
            if new:
                db.log_change(conn, actor=actor, action="import_bins", entity="bin", entity_id=new[0]["id"],
                              details={"count": len(new), "source": new[0]["source"], "ids": [r["id"] for r in new[:50]]})
            refresh_mismatch(conn, [r["id"] for r in changed
                                    if existing[r["id"]]["expected_count"] != r["expected_count"]])
            for r in changed:
                before = existing[r["id"]]
                db.log_change(conn, actor=actor, action="update_bin", entity="bin", entity_id=r["id"], details={
                    c: {"from": before[c], "to": r[c]} for c in ("expected_count", "image_uri", "split")
                    if before[c] != r[c]})


def import_dataset(engine: Engine, dataset: Path, *, actor: str = "system") -> ImportReport:
    """A dataset built by `data_tools build` (manifest.csv + metadata/), photos referenced in place."""
    manifest = dataset / "manifest.csv"
    if not manifest.is_file():
        raise ImportError_(f"{dataset} is not a built dataset (no manifest.csv)")
    report = ImportReport()
    rows = []
    with manifest.open(newline="", encoding="utf-8") as fh:
        for m in csv.DictReader(fh):
            if not m["image_path"]:
                continue  # a metadata-only manifest has no photos to audit
            if not is_safe_bin_id(m["bin_id"]):
                report.problems.append(Problem("manifest.csv", unsafe_bin_id_reason(m["bin_id"])))
                continue
            record = None
            if m.get("metadata_path"):
                meta_file = dataset / m["metadata_path"]
                result = read_metadata_file(meta_file, m["bin_id"], m["metadata_path"]) \
                    if meta_file.is_file() else None
                record = result.record if result else None
            rows.append(bin_row(record, bin_id=m["bin_id"], image_uri=str((dataset / m["image_path"]).resolve()),
                                source="dataset", split=m["split"], expected_count=int(m["count"]),
                                size=(int(m["width"]), int(m["height"])) if m["width"] else None))
    with db.write_tx(engine) as conn:
        register_image_root(conn, dataset, actor=actor)
        _record_problems(conn, report.problems)
    save_bins(engine, rows, actor=actor, report=report)
    return report


def import_abid_folder(engine: Engine, folder: Path, *, actor: str = "system", source: str = "folder") -> ImportReport:
    """A folder in ABID layout (bin-images/ + metadata/); photos referenced in place."""
    pairing = scan_local(folder)
    report = ImportReport(problems=pairing.orphan_problems())
    rows = []
    for bin_id in pairing.paired:
        rel = f"{METADATA_DIR}/{bin_id}.json"
        result = read_metadata_file(pairing.metadata_path(bin_id), bin_id, rel)
        report.problems += result.problems
        if result.record is not None:
            rows.append(bin_row(result.record, bin_id=bin_id, image_uri=str(pairing.image_path(bin_id).resolve()),
                                source=source))
    with db.write_tx(engine) as conn:
        register_image_root(conn, folder, actor=actor)
        _record_problems(conn, report.problems)
    save_bins(engine, rows, actor=actor, report=report)
    return report


def import_s3_prefix(engine: Engine, workspace: Workspace, uri: str, *, actor: str = "system",
                     limit: int | None = None, unsigned: bool = False, workers: int = 16) -> ImportReport:
    """An S3 prefix in ABID layout. The photos stay in S3: bins point at their objects (the prefix is
    registered as an image root) and every server fetches them into its own cache when shown or scored.
    The metadata is downloaded into the workspace's cache and imported. With `limit`, the first N bins
    are taken and their photos not listed (a missing one is reported when it is scored)."""
    from data_tools.download import list_bin_ids, plan_download, run_transfers
    from data_tools.layout import IMAGE_SUFFIX, IMAGES_DIR, image_key
    from data_tools.s3 import make_s3_client, parse_s3_uri

    loc = parse_s3_uri(uri)
    cache = workspace.root / "cache" / "s3-metadata" / loc.bucket / (loc.prefix or "_root")
    client = make_s3_client(unsigned=unsigned, max_pool=workers)
    transfers = plan_download(client, loc, cache, limit=limit, metadata_only=True)
    transfer_report = run_transfers(client, loc.bucket, transfers, workers=workers)
    pairing = scan_local(cache, metadata_only=True)
    if limit is None:
        images = set(list_bin_ids(client, loc, IMAGES_DIR, IMAGE_SUFFIX))
        meta = set(pairing.paired)
        pairing.image_only = sorted(images - meta)
        pairing.metadata_only = [b for b in pairing.paired if b not in images]
        pairing.paired = [b for b in pairing.paired if b in images]
    report = ImportReport(problems=pairing.orphan_problems() + transfer_report.failed)
    rows = []
    for bin_id in pairing.paired:
        result = read_metadata_file(pairing.metadata_path(bin_id), bin_id, f"{METADATA_DIR}/{bin_id}.json")
        report.problems += result.problems
        if result.record is not None:
            rows.append(bin_row(result.record, bin_id=bin_id, image_uri=f"s3://{loc.bucket}/{loc.key(image_key(bin_id))}",
                                source="s3"))
    with db.write_tx(engine) as conn:
        register_image_root(conn, loc.uri, actor=actor)
        _record_problems(conn, report.problems)
    save_bins(engine, rows, actor=actor, report=report)
    return report


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def upload_bin_id(filename: str, data: bytes) -> str:
    """A bin id from the uploaded file's name (ABID style "00042.jpg" -> "00042"), made to follow BIN_ID_RULE and
    unique-safe (a content hash unless the name is all digits)."""
    stem = _UNSAFE_CHARS.sub("-", Path(filename).stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip("-._")
    if stem.isdigit() and len(stem) <= 60:
        return stem
    return f"{stem[:60].rstrip('-._') or 'upload'}-{hashlib.sha256(data).hexdigest()[:8]}"


def import_upload(engine: Engine, workspace: Workspace, filename: str, data: bytes, *, actor: str,
                  metadata: bytes | None = None, expected_count: int | None = None,
                  max_pixels: int = 40_000_000) -> dict:
    """One uploaded photo (+ optional metadata JSON or typed expected count); returns the bin row (with its
    row_version after the upload).

    Raises ImportError_ naming the file and the reason for a photo or metadata that cannot be used.
    """
    try:
        width, height, fmt = probe_image(data, max_pixels=max_pixels)
        load_image(data, target_side=64, max_pixels=max_pixels)  # a full decode: truncated files fail now
    except ImageDecodeError as exc:
        raise ImportError_(f"{filename}: {exc}") from None
    if fmt not in ("JPEG", "PNG"):
        raise ImportError_(f"{filename}: {fmt} images are not accepted (JPEG or PNG only)")
    bin_id = upload_bin_id(filename, data)
    record = None
    if metadata is not None:
        result = parse_metadata(metadata, bin_id, f"{Path(filename).stem}.json")
        errors = [p for p in result.problems if p.is_error]
        if errors:
            raise ImportError_(f"metadata for {filename}: " + "; ".join(p.reason for p in errors))
        record = result.record
    if expected_count is not None and not 0 <= expected_count <= MAX_QUANTITY:
        raise ImportError_(f"{filename}: expected count must lie between 0 and {MAX_QUANTITY:,}")
    with engine.connect() as conn:
        existing = _existing(conn, [bin_id]).get(bin_id)
        replaced = existing is not None and not _same_photo(existing["image_uri"], data, workspace, image_roots(conn))
    suffix = ".png" if fmt == "PNG" else ".jpg"
    dest = workspace.images_dir / "uploads" / f"{bin_id}{suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    row = bin_row(record, bin_id=bin_id, image_uri=dest.relative_to(workspace.root).as_posix(), source="upload",
                  expected_count=expected_count, size=(width, height))
    if existing is not None:
        row = keep_known_fields(row, existing, has_metadata=record is not None, typed_count=expected_count is not None)
    save_bins(engine, [row], actor=actor, report=ImportReport(), photo_replaced=[bin_id] if replaced else ())
    with engine.connect() as conn:  # the version the uploader's page now shows (Send to review queue uses it)
        row["row_version"] = conn.execute(sa.select(db.bins.c.row_version).where(db.bins.c.id == bin_id)).scalar_one()
    return row


def keep_known_fields(row: dict, existing: dict, *, has_metadata: bool, typed_count: bool) -> dict:
    """An upload of a known bin replaces only what it brings: without metadata the bin keeps its items and
    expected count (unless one was typed); an upload never has a split, so the bin keeps its own."""
    kept = {"split": existing["split"]}
    if not has_metadata:
        kept |= {"items": existing["items"], "search_text": existing["search_text"]}
        if not typed_count:
            kept["expected_count"] = existing["expected_count"]
    return row | kept


def _same_photo(image_uri: str, data: bytes, workspace: Workspace, roots: list[str]) -> bool:
    """Whether a bin's stored photo holds exactly these bytes (False when it cannot be read here)."""
    try:
        path = local_photo(image_uri, workspace, roots)
    except (UnsafePath, OSError):
        return False
    return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
