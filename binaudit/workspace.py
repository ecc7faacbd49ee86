"""The workspace: where BinAudit keeps its local state, and the rule for which image paths may be read.

    <workspace>/binaudit.db     the project database (unless database_url points elsewhere)
    <workspace>/images/         photos imported from S3 or uploaded through the dashboard
    <workspace>/models/vN/      registered model versions
    <workspace>/jobs/<id>/      local job folders (logs, outputs)
    <workspace>/exports/        CSV exports and recount datasets
    <workspace>/cache/s3/       photos fetched from S3 (audit.photos)

Image paths stored in the database are relative to the workspace, or absolute paths under an
image root that an import registered explicitly (a dataset folder, say), or S3 URIs in the
configured bucket or under an S3 prefix an import registered (`s3://bucket/prefix`). Anything
else is refused, so a crafted row cannot make the app read /etc/passwd or another user's files.
audit.photos turns an allowed location into a local file (S3 objects through a cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from binaudit import db
from binaudit.config import Settings

IMAGE_ROOTS_KEY = "image_roots"


class UnsafePath(PermissionError):
    """An image location outside the workspace, the registered image roots and the configured bucket."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    database_url: str
    s3_bucket: str = ""

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspace:
        return cls(settings.workspace.resolve(), settings.resolved_database_url, settings.s3_bucket)

    def open(self) -> Engine:
        """Create the folders and bring the database schema up to date."""
        for folder in (self.root, self.images_dir, self.models_dir, self.jobs_dir, self.exports_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return db.open_database(self.database_url)


def image_roots(conn: sa.Connection) -> list[str]:
    return list(db.get_state(conn, IMAGE_ROOTS_KEY, []) or [])


def register_image_root(conn: sa.Connection, folder: Path | str, *, actor: str) -> None:
    """Allow image paths under `folder`, a local folder or an `s3://bucket/prefix` (an import that
    references photos in place calls this)."""
    root = folder.rstrip("/") if isinstance(folder, str) and folder.startswith("s3://") else str(Path(folder).resolve())
    roots = image_roots(conn)
    if root not in roots:
        db.set_state(conn, IMAGE_ROOTS_KEY, [*roots, root])
        db.log_change(conn, actor=actor, action="register_image_root", entity="workspace", entity_id=root)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_image(uri: str, workspace: Workspace, roots: list[str]) -> Path | str:
    """The local path (symlinks resolved) or S3 URI to read for a stored image location; UnsafePath otherwise."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        if not key or key.endswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise UnsafePath(f"{uri}: not a plain S3 object key")  # the key becomes a path in the cache
        if workspace.s3_bucket and bucket == workspace.s3_bucket:
            return uri
        if any(uri.startswith(r + "/") for r in roots if r.startswith("s3://")):
            return uri
        raise UnsafePath(f"{uri}: not in the configured bucket or an imported S3 prefix")
    path = Path(uri)
    path = (workspace.root / path) if not path.is_absolute() else path
    real = Path(os.path.realpath(path))
    allowed = [workspace.root.resolve(), *(Path(os.path.realpath(r)) for r in roots if not r.startswith("s3://"))]
    if not any(_inside(real, root) for root in allowed):
        raise UnsafePath(f"{uri}: outside the workspace and the registered image folders")
    return real
