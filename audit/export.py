"""CSV exports (the queue, the decisions) and the labelled examples analysts' recounts produce.

A confirmed mismatch with a recounted quantity is a labelled photo: the bin really holds that
many items. `build_recount_dataset` lays those out as class folders (`<count>/<bin_id>.jpg`, the
layout train.py reads) so a retraining job can add them to its training data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.imports import is_safe_bin_id
from audit.queue import queue_frame
from audit.reviews import CONFIRM, decisions_frame
from binaudit import db
from binaudit.workspace import UnsafePath, Workspace, image_roots, resolve_image

RECOUNT_MARKER = ".binaudit-recounts"  # marks a folder build_recount_dataset may delete and rebuild


class ExportError(ValueError):
    """An export that would destroy something it did not write."""


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def export_queue(engine: Engine, version_id: int, path: Path, *, threshold: float, budget: int | None = None) -> int:
    frame = queue_frame(engine, version_id, threshold=threshold, budget=budget)
    write_csv(frame, path)
    return len(frame)


def export_decisions(engine: Engine, path: Path) -> int:
    frame = decisions_frame(engine)
    write_csv(frame, path)
    return len(frame)


def recount_examples(engine: Engine) -> pd.DataFrame:
    """Bins whose latest decision confirms a mismatch with a recounted quantity."""
    b = db.bins
    with engine.connect() as conn:
        rows = conn.execute(sa.select(b.c.id.label("bin_id"), b.c.image_uri, b.c.expected_count, b.c.recounted_count,
                                      b.c.decided_by, b.c.decided_at)
                            .where(b.c.decision == CONFIRM, b.c.recounted_count.is_not(None))
                            .order_by(b.c.id)).mappings().all()
    return pd.DataFrame(rows, columns=["bin_id", "image_uri", "expected_count", "recounted_count", "decided_by",
                                       "decided_at"])


def _fresh_recount_folder(out: Path) -> None:
    """Empty `out` for a rebuild (a changed decision must not linger), but only a folder this module wrote."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / RECOUNT_MARKER).is_file()):
            raise ExportError(f"refusing to replace {out}: it is not a recount dataset written by BinAudit "
                              f"(no {RECOUNT_MARKER} file); choose a new or empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / RECOUNT_MARKER).write_text("written by BinAudit's build_recount_dataset; rebuilt on every export\n")


def build_recount_dataset(engine: Engine, workspace: Workspace, out: Path, *, max_count: int = 5) -> pd.DataFrame:
    """Copy recounted photos into `out/<count>/<bin_id>.jpg`; returns what was written and what was skipped."""
    examples = recount_examples(engine)
    with engine.connect() as conn:
        roots = image_roots(conn)
    _fresh_recount_folder(out)
    status = []
    for row in examples.itertuples(index=False):
        if row.recounted_count > max_count:
            status.append(f"skipped: recount {row.recounted_count} is over the model's {max_count}")
            continue
        try:
            src = resolve_image(row.image_uri, workspace, roots)
        except UnsafePath as exc:
            status.append(f"skipped: {exc}")
            continue
        if not isinstance(src, Path) or not src.is_file():
            status.append(f"skipped: photo not found locally ({row.image_uri})")
            continue
        if not is_safe_bin_id(row.bin_id):
            status.append(f"skipped: bin id {row.bin_id!r} is not a plain file name")
            continue
        dest = out / str(row.recounted_count) / f"{row.bin_id}{src.suffix.lower() or '.jpg'}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        status.append(f"written: {dest.relative_to(out).as_posix()}")
    return examples.assign(status=status)
