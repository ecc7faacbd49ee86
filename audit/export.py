"""CSV exports (the queue, the decisions) and the labelled examples analysts' recounts produce.

A confirmed mismatch with a recounted quantity is a labelled photo: the bin really holds that
many items. `build_recount_dataset` lays those out as class folders (`<count>/<bin_id>.jpg`, the
layout train.py reads; a recount above --max-count N goes to the open class folder "N+1+", which a
closed model's training leaves out): the folder a training job gets as its "recounts" channel (train.py's
--recounts). A recount of a bin in val or test is left out (modeling.recounts.usable_recounts):
the database knows each imported bin's split, and the val/test folders the job will use are read.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.photos import local_photo
from audit.queue import queue_frame
from audit.reviews import CONFIRM, decisions_frame
from binaudit import db
from binaudit.csvsafe import spreadsheet_safe
from binaudit.workspace import Workspace, image_roots
from data_tools.layout import is_safe_bin_id
from modeling.counts import open_label
from modeling.recounts import folder_bin_ids, usable_recounts

RECOUNT_MARKER = ".binaudit-recounts"  # marks a folder build_recount_dataset may delete and rebuild
RECOUNT_SUMMARY = ".binaudit-recount-summary.json"  # recount_summary of the folder's build (a dot file: no class)


class ExportError(ValueError):
    """An export that would destroy something it did not write."""


# columns that hold whole numbers; a missing value (no recount, no model) would turn them into floats ("4.0")
INTEGER_COLUMNS = ("review_id", "expected_count", "recounted_count", "model_version_id", "predicted_count",
                   "decoded_count")


def csv_text(frame: pd.DataFrame) -> str:
    """The CSV every export writes (files and the dashboard's downloads): whole numbers as integers, and no text
    cell a spreadsheet would run as a formula (binaudit.csvsafe)."""
    frame = frame.astype({c: "Int64" for c in INTEGER_COLUMNS if c in frame.columns})
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
                    and not pd.api.types.is_datetime64_any_dtype(frame[c])]
    frame[text_columns] = frame[text_columns].astype(object).map(spreadsheet_safe)
    # RFC 4180's CRLF: a cell holding a carriage return is then quoted too (with "\n" alone it would end the row)
    return frame.to_csv(index=False, lineterminator="\r\n")


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(csv_text(frame), encoding="utf-8", newline="")
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
        rows = conn.execute(sa.select(b.c.id.label("bin_id"), b.c.image_uri, b.c.split, b.c.expected_count,
                                      b.c.recounted_count, b.c.decided_by, b.c.decided_at)
                            .where(b.c.decision == CONFIRM, b.c.recounted_count.is_not(None))
                            .order_by(b.c.id)).mappings().all()
    return pd.DataFrame(rows, columns=["bin_id", "image_uri", "split", "expected_count", "recounted_count",
                                       "decided_by", "decided_at"])


def _fresh_recount_folder(out: Path) -> None:
    """Empty `out` for a rebuild (a changed decision must not linger), but only a folder this module wrote."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / RECOUNT_MARKER).is_file()):
            raise ExportError(f"refusing to replace {out}: it is not a recount dataset written by BinAudit "
                              f"(no {RECOUNT_MARKER} file); choose a new or empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / RECOUNT_MARKER).write_text("written by BinAudit's build_recount_dataset; rebuilt on every export\n")


def build_recount_dataset(engine: Engine, workspace: Workspace, out: Path, *, max_count: int = 5,
                          held_out: Sequence[str | Path] = ()) -> pd.DataFrame:
    """Copy recounted photos into `out/<count>/<bin_id>.jpg` (`out/6+/...` above max_count 5); returns what was
    written, what was left out and what was skipped, per bin. A bin whose split is val or test, or whose photo is in
    a `held_out` folder (the job's val and test; s3:// prefixes are train.py's to check), is left out."""
    examples = recount_examples(engine)
    held_out_bins = set(examples.loc[examples["split"].isin(("val", "test")), "bin_id"])
    held_out_bins |= set().union(*(folder_bin_ids(f) for f in held_out if not str(f).startswith("s3://")))
    usable = set(usable_recounts(examples["bin_id"], held_out_bins)[0])
    with engine.connect() as conn:
        roots = image_roots(conn)
    _fresh_recount_folder(out)
    status = []
    for row in examples.itertuples(index=False):
        if row.bin_id not in usable:
            status.append("left out: the bin is in val or test (training on it would leak a held-out photo)")
            continue
        try:
            src = local_photo(row.image_uri, workspace, roots)
        except OSError as exc:  # UnsafePath, a missing file or S3 object, S3 not answering
            status.append(f"skipped: {exc}")
            continue
        if not src.is_file():
            status.append(f"skipped: photo not found ({row.image_uri})")
            continue
        if not is_safe_bin_id(row.bin_id):
            status.append(f"skipped: bin id {row.bin_id!r} is not a plain file name")
            continue
        # a recount above N goes to the open class folder ("6+"): train.py leaves it out of a closed model
        folder = open_label(max_count) if row.recounted_count > max_count else str(row.recounted_count)
        dest = out / folder / f"{row.bin_id}{src.suffix.lower() or '.jpg'}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        status.append(f"written: {dest.relative_to(out).as_posix()}")
    return examples.assign(status=status)


def recounts_for_training(engine: Engine, workspace: Workspace, *, max_count: int,
                          held_out: Sequence[str | Path] = ()) -> tuple[Path, pd.DataFrame]:
    """A new recount folder under the workspace's exports, for one training job's "recounts" channel (the job
    reads it while it runs, and a resumed job again: it is never rebuilt); the folder and build_recount_dataset's
    report."""
    out = workspace.exports_dir / f"recounts-{db.utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    report = build_recount_dataset(engine, workspace, out, max_count=max_count, held_out=held_out)
    (out / RECOUNT_SUMMARY).write_text(json.dumps(recount_summary(report)), encoding="utf-8")
    return out, report


def stored_recount_summary(folder: str | Path) -> dict[str, int] | None:
    """What recounts_for_training wrote into a job's recounts folder (None for a folder made elsewhere)."""
    try:
        return json.loads((Path(folder) / RECOUNT_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def recount_summary(report: pd.DataFrame) -> dict[str, int]:
    """{"written": n, "left_out": n, "skipped": n} of a build_recount_dataset report."""
    kinds = report["status"].str.split(":").str[0] if len(report) else pd.Series(dtype=str)
    return {"written": int((kinds == "written").sum()), "left_out": int((kinds == "left out").sum()),
            "skipped": int((kinds == "skipped").sum())}
