"""Score every bin of the workspace with a model version: resumable and idempotent.

Pending bins (no prediction for this version yet, no recorded failure) are paged through by id
and streamed into a scorer (the local batched predictor, or a SageMaker batch transform); every
`commit_every` results are written in one transaction. Kill it at any point and rerun: committed
chunks are not redone, the lost chunk is, and the (bin, model version) unique key with
insert-or-ignore makes a duplicate impossible even when two scorers run at once.

A bad image is recorded in `problems` (stage "score", with the reason) and skipped; reruns leave
it alone unless `retry_failed` is set.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tqdm import tqdm

from audit.mismatch import score_distributions
from audit.photos import local_photos
from binaudit import db
from binaudit.workspace import UnsafePath, Workspace, image_roots, resolve_image
from modeling.counts import CountClasses
from modeling.registry import ModelVersion

_IN_CHUNK = 500  # ids per IN (...) list: under every database's bound-parameter limit

# A scorer maps image paths to (probabilities, None) or (None, error reason), in input order.
Scorer = Callable[[Iterable[str]], Iterator[tuple[np.ndarray | None, str | None]]]


@dataclass
class ScoreReport:
    scored: int = 0
    failed: int = 0
    pending_at_start: int = 0

    def __str__(self) -> str:
        return f"{self.scored} scored, {self.failed} failed (see problems), {self.pending_at_start} were pending"


@dataclass(frozen=True, slots=True)
class _Pending:
    bin_id: str
    image_uri: str


def _pending_filter(version_id: int, retry_failed: bool) -> sa.ColumnElement[bool]:
    p, pr = db.predictions, db.problems
    cond = ~sa.exists().where(p.c.bin_id == db.bins.c.id, p.c.model_version_id == version_id)
    if not retry_failed:
        cond &= ~sa.exists().where(pr.c.bin_id == db.bins.c.id, pr.c.stage == "score",
                                   pr.c.model_version_id == version_id)
    return cond


def count_pending(engine: Engine, version_id: int, *, retry_failed: bool = False) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(db.bins)
                            .where(_pending_filter(version_id, retry_failed))).scalar_one()


def _iter_pending(engine: Engine, version_id: int, retry_failed: bool, page: int) -> Iterator[_Pending]:
    """Keyset paging by bin id, so bins that fail during this run are not met again."""
    after = ""
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(db.bins.c.id, db.bins.c.image_uri)
                .where(db.bins.c.id > after, _pending_filter(version_id, retry_failed))
                .order_by(db.bins.c.id).limit(page)
            ).all()
        if not rows:
            return
        yield from (_Pending(*r) for r in rows)
        after = rows[-1][0]


def _bin_states(conn: sa.Connection, bin_ids: list[str]) -> dict[str, sa.Row]:
    """Expected count and hand-queued flag of bins, read inside the caller's write transaction."""
    b, states = db.bins, {}
    for start in range(0, len(bin_ids), _IN_CHUNK):
        rows = conn.execute(sa.select(b.c.id, b.c.expected_count, b.c.queued)
                            .where(b.c.id.in_(bin_ids[start : start + _IN_CHUNK])))
        states.update((r.id, r) for r in rows)
    return states


def _mismatch_fields(t, expected: int | None) -> dict:
    """A prediction's record-dependent columns from a score_distributions row (None when nothing is expected, or
    when the record is beyond a closed model's range)."""
    checked = expected is not None and not t.beyond_range
    return {"expected_count": expected,
            "mismatch_probability": float(t.mismatch_probability) if checked else None,
            "argmax_differs": bool(t.argmax_differs) if checked else None,
            "beyond_range": bool(t.beyond_range)}


def _prediction_rows(conn: sa.Connection, version: ModelVersion, good: list[tuple[str, np.ndarray]],
                     now) -> list[dict]:
    """Prediction rows for scored bins, from the bins' state at write time (the scorer may have taken minutes)."""
    states = _bin_states(conn, [bin_id for bin_id, _ in good])
    good = [(bin_id, probs) for bin_id, probs in good if bin_id in states]
    if not good:
        return []
    expected = [states[bin_id].expected_count for bin_id, _ in good]
    table = score_distributions(np.stack([probs for _, probs in good]), expected,
                                classes=version.classes)
    return [{
        "bin_id": bin_id, "model_version_id": version.id, "predicted_count": int(t.predicted_count),
        "decoded_count": int(t.decoded_count), "probabilities": [round(float(x), 6) for x in probs],
        **_mismatch_fields(t, e), "created_at": now,
        # a new prediction is never settled by an older decision; a hand-queued bin stays queued
        "settled": False, "queued": bool(states[bin_id].queued),
    } for (bin_id, probs), e, t in zip(good, expected, table.itertuples(index=False), strict=True)]


def _write_chunk(engine: Engine, version: ModelVersion, results: list[tuple[_Pending, np.ndarray | None, str | None]],
                 report: ScoreReport) -> None:
    good = [(b.bin_id, probs) for b, probs, _ in results if probs is not None]
    bad = [(b, err) for b, probs, err in results if probs is None]
    with db.write_tx(engine) as conn:
        # inside the write lock: no decision, re-import or hand-queueing can land between this read and the insert
        now = db.utcnow()
        rows = _prediction_rows(conn, version, good, now) if good else []
        report.scored += db.insert_ignore(conn, db.predictions, rows, key=("bin_id", "model_version_id"))
        if bad:
            conn.execute(db.problems.insert(), [
                {"bin_id": b.bin_id, "file": b.image_uri, "stage": "score", "model_version_id": version.id,
                 "reason": err, "created_at": now} for b, err in bad])
            report.failed += len(bad)


def refresh_mismatch(conn: sa.Connection, bin_ids: list[str]) -> int:
    """Recompute the stored predictions' mismatch figures of bins whose expected count changed.

    Uses the stored probabilities; no photo is read. Runs inside the caller's transaction. Predictions
    of different model versions may have different class counts, so each version is scored on its own.
    """
    if not bin_ids:
        return 0
    p, b, mv = db.predictions, db.bins, db.model_versions
    rows = conn.execute(sa.select(p.c.id, p.c.model_version_id, p.c.probabilities, b.c.expected_count,
                                  mv.c.config, mv.c.max_count)
                        .select_from(p.join(b, b.c.id == p.c.bin_id).join(mv, mv.c.id == p.c.model_version_id))
                        .where(p.c.bin_id.in_(bin_ids))).all()
    by_version: dict[int, list[sa.Row]] = {}
    for r in rows:
        by_version.setdefault(r.model_version_id, []).append(r)
    for group in by_version.values():
        table = score_distributions(np.array([r.probabilities for r in group], dtype=np.float64),
                                    [r.expected_count for r in group],
                                    classes=CountClasses.from_config({"max_count": group[0].max_count,
                                                                       **group[0].config}))
        for r, t in zip(group, table.itertuples(index=False), strict=True):
            conn.execute(p.update().where(p.c.id == r.id).values(**_mismatch_fields(t, r.expected_count)))
    return len(rows)


def forget_predictions(conn: sa.Connection, bin_ids: list[str]) -> None:
    """Drop the predictions and scoring failures of bins whose photo was replaced: they describe another photo.

    The next scoring run (or the upload page) predicts afresh; that prediction is newer than any
    decision, so a decided bin can come back to the queue on the new evidence.
    """
    if bin_ids:
        conn.execute(db.predictions.delete().where(db.predictions.c.bin_id.in_(bin_ids)))
        conn.execute(db.problems.delete().where(db.problems.c.bin_id.in_(bin_ids), db.problems.c.stage == "score"))


def record_prediction(engine: Engine, version: ModelVersion, bin_id: str, probs: np.ndarray) -> bool:
    """Store one prediction computed elsewhere (the dashboard's upload page); False if it already existed."""
    with engine.connect() as conn:
        image_uri = conn.execute(sa.select(db.bins.c.image_uri).where(db.bins.c.id == bin_id)).scalar_one_or_none()
    if image_uri is None:
        raise LookupError(f"no bin {bin_id!r}")
    report = ScoreReport()
    _write_chunk(engine, version, [(_Pending(bin_id, image_uri), np.asarray(probs), None)], report)
    return report.scored == 1


def score_bins(engine: Engine, workspace: Workspace, version: ModelVersion, scorer: Scorer, *,
               commit_every: int = 256, retry_failed: bool = False, progress: bool | None = None,
               on_commit: Callable[[int, int], None] | None = None) -> ScoreReport:
    """Score every pending bin with `version` through `scorer`.

    on_commit(done, total) is called after each committed chunk (the dashboard's progress bar).
    """
    report = ScoreReport(pending_at_start=count_pending(engine, version.id, retry_failed=retry_failed))
    with engine.connect() as conn:
        roots = image_roots(conn)
    if retry_failed:
        with db.write_tx(engine) as conn:
            conn.execute(db.problems.delete().where(db.problems.c.stage == "score",
                                                    db.problems.c.model_version_id == version.id))
    pending = _iter_pending(engine, version.id, retry_failed, page=max(commit_every, 512))
    bins_a, bins_b, bins_c = itertools.tee(pending, 3)
    unsafe: dict[str, str] = {}

    def paths() -> Iterator[str]:
        """Local files to score (S3 photos fetched into the cache a few at a time, ahead of the scorer)."""
        for b, photo in zip(bins_c, local_photos((b.image_uri for b in bins_a), workspace, roots), strict=True):
            if isinstance(photo, OSError):
                unsafe[b.bin_id] = str(photo)
                yield ""  # keeps positions aligned; the scorer reports it unreadable, the reason below wins
            else:
                yield str(photo)

    bar = tqdm(total=report.pending_at_start, desc="score", unit="bin",
               disable=None if progress is None else not progress)
    chunk: list[tuple[_Pending, np.ndarray | None, str | None]] = []
    for b, (probs, err) in zip(bins_b, scorer(paths()), strict=True):
        if b.bin_id in unsafe:  # refused or missing before reading: say why, not "file not found"
            probs, err = None, unsafe.pop(b.bin_id)
        chunk.append((b, probs, err))
        if len(chunk) >= commit_every:
            _write_chunk(engine, version, chunk, report)
            bar.update(len(chunk))
            if on_commit:
                on_commit(report.scored + report.failed, report.pending_at_start)
            chunk = []
    if chunk:
        _write_chunk(engine, version, chunk, report)
        bar.update(len(chunk))
        if on_commit:
            on_commit(report.scored + report.failed, report.pending_at_start)
    bar.close()
    return report


def problems_frame_query(version_id: int | None = None) -> sa.Select:
    """Scoring problems (bad images) for the dashboard, newest first."""
    q = sa.select(db.problems).order_by(db.problems.c.id.desc())
    if version_id is not None:
        q = q.where(db.problems.c.model_version_id == version_id)
    return q


def image_path_or_none(workspace: Workspace, uri: str, roots: list[str]) -> Path | None:
    """The readable local path of a stored image, or None when it is unsafe or not local."""
    try:
        resolved = resolve_image(uri, workspace, roots)
    except UnsafePath:
        return None
    return resolved if isinstance(resolved, Path) else None
