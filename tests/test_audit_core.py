"""The audit core against a real (tiny) model, each test on SQLite and on a real PostgreSQL server.

The command-line end-to-end test runs on SQLite here; its PostgreSQL counterpart, from an empty
database, is tests/test_postgres_team.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from audit import imports, reviews
from audit.browse import BinFilter, bin_detail, browse_count, browse_page
from audit.export import build_recount_dataset, export_decisions, export_queue, recount_summary
from audit.mismatch import queue_rules
from audit.overview import overview
from audit.queue import QueueFilter, queue_frame, queue_page, queue_size, queue_values
from audit.scorers import local_scorer
from audit.scoring import count_pending, score_bins
from binaudit import db
from binaudit.workspace import UnsafePath, Workspace, resolve_image
from modeling.registry import activate, register_model
from tests.modeling_fixtures import jpeg_bytes, png_bytes, tiny_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ws(tmp_path, database_url) -> Workspace:
    return Workspace(tmp_path / "ws", database_url)


@pytest.fixture
def sqlite_ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'binaudit.db'}")


@pytest.fixture
def engine(ws):
    return ws.open()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory) -> Path:
    return tiny_model(tiny_dataset, tmp_path_factory)


@pytest.fixture
def version(engine, ws, tiny_model_dir):
    v = register_model(engine, tiny_model_dir, ws.models_dir, job_id=None)
    return activate(engine, v.id, actor="test")


def _predictions(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(db.predictions)).mappings().all())


def test_import_dataset_then_reimport_is_idempotent(engine, tiny_dataset):
    first = imports.import_dataset(engine, tiny_dataset, actor="t")
    rows = sum(1 for _ in (tiny_dataset / "manifest.csv").open()) - 1
    assert (first.added, first.updated) == (rows, 0)
    again = imports.import_dataset(engine, tiny_dataset, actor="t")
    assert (again.added, again.updated, again.unchanged) == (0, 0, rows)
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.bins).limit(1)).mappings().one()
    assert row["split"] in ("train", "val", "test") and row["items"] is not None
    assert Path(row["image_uri"]).is_file()


def test_import_folder_records_bad_metadata_and_keeps_the_rest(engine, synth_raw, tmp_path):
    folder = tmp_path / "raw"
    shutil.copytree(synth_raw, folder)
    (folder / "metadata" / "00003.json").write_text('{"EXPECTED_QUANTITY": ')
    (folder / "bin-images" / "00004.jpg").unlink()
    report = imports.import_abid_folder(engine, folder, actor="t")
    assert report.added == 118
    reasons = {p.file: p.reason for p in report.problems}
    assert "malformed JSON" in reasons["metadata/00003.json"]
    assert reasons["metadata/00004.json"] == "metadata without an image"
    with engine.connect() as conn:
        stored = conn.execute(sa.select(db.problems.c.file, db.problems.c.reason)).all()
    assert {f for f, _ in stored} >= {"metadata/00003.json", "metadata/00004.json"}


def test_upload_with_metadata_typed_count_and_bad_files(engine, ws):
    meta = json.dumps({"BIN_FCSKU_DATA": {"B01": {"asin": "B01", "name": "Tea", "quantity": 2}},
                       "EXPECTED_QUANTITY": 2}).encode()
    row = imports.import_upload(engine, ws, "00777.jpg", jpeg_bytes(), actor="ana", metadata=meta)
    assert (row["id"], row["expected_count"], row["items"][0]["name"]) == ("00777", 2, "Tea")
    assert (ws.root / row["image_uri"]).is_file()
    typed = imports.import_upload(engine, ws, "shelf photo.png", png_bytes(), actor="ana", expected_count=4)
    assert typed["expected_count"] == 4 and typed["id"].startswith("shelf-photo-")
    with pytest.raises(imports.ImportError_, match=r"notes\.jpg: .*"):
        imports.import_upload(engine, ws, "notes.jpg", b"just text", actor="ana")
    with pytest.raises(imports.ImportError_, match=r"cut\.jpg: .*truncated|cut\.jpg"):
        imports.import_upload(engine, ws, "cut.jpg", jpeg_bytes(400, 300)[:600], actor="ana")
    with pytest.raises(imports.ImportError_, match="metadata for 00778.jpg: .*differs"):
        bad = json.dumps({"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 3}).encode()
        imports.import_upload(engine, ws, "00778.jpg", jpeg_bytes(), actor="ana", metadata=bad)
    with pytest.raises(imports.ImportError_, match="pixel limit"):
        imports.import_upload(engine, ws, "huge.jpg", jpeg_bytes(2000, 1500), actor="ana", max_pixels=1_000_000)


def test_image_paths_are_confined(sqlite_ws, tmp_path):
    ws = sqlite_ws
    ws.root.mkdir(parents=True, exist_ok=True)
    (ws.root / "images").mkdir(exist_ok=True)
    inside = ws.root / "images" / "a.jpg"
    inside.write_bytes(b"x")
    assert resolve_image("images/a.jpg", ws, []) == inside.resolve()
    with pytest.raises(UnsafePath):
        resolve_image("/etc/passwd", ws, [])
    with pytest.raises(UnsafePath):
        resolve_image("images/../../outside.jpg", ws, [])
    (ws.root / "images" / "link.jpg").symlink_to("/etc/hostname")
    with pytest.raises(UnsafePath):
        resolve_image("images/link.jpg", ws, [])
    assert resolve_image(str(tmp_path / "x.jpg"), ws, [str(tmp_path)]) == (tmp_path / "x.jpg").resolve()
    with pytest.raises(UnsafePath, match="configured bucket"):
        resolve_image("s3://someone-else/x.jpg", ws, [])
    assert resolve_image("s3://imported/abid/bin-images/1.jpg", ws, ["s3://imported/abid"]).startswith("s3://")
    with pytest.raises(UnsafePath, match="plain S3 object key"):  # the key becomes a path in the cache
        resolve_image("s3://imported/abid/../../../etc/x.jpg", ws, ["s3://imported/abid"])


def test_scoring_is_idempotent_and_records_bad_images(engine, ws, version, tiny_dataset):
    imports.import_dataset(engine, tiny_dataset, actor="t")
    bad = imports.import_upload(engine, ws, "00900.jpg", jpeg_bytes(), actor="t", expected_count=1)
    (ws.root / bad["image_uri"]).write_bytes(b"\xff\xd8\xff garbage")  # broken after upload
    with db.write_tx(engine) as conn:  # a crafted row pointing outside the workspace
        conn.execute(db.bins.insert().values(id="evil", image_uri="/etc/passwd", expected_count=1, items=[],
                                             search_text="", source="upload", created_at=db.utcnow(),
                                             updated_at=db.utcnow()))
    n_bins = count_pending(engine, version.id)
    scorer = local_scorer(version.model_dir, batch_size=16, workers=0)
    report = score_bins(engine, ws, version, scorer, commit_every=25, progress=False)
    assert (report.scored, report.failed) == (n_bins - 2, 2)
    preds = _predictions(engine)
    assert preds["bin_id"].is_unique and len(preds) == n_bins - 2
    assert np.allclose([sum(p) for p in preds["probabilities"]], 1.0, atol=1e-4)
    with engine.connect() as conn:
        reasons = dict(conn.execute(sa.select(db.problems.c.bin_id, db.problems.c.reason)
                                    .where(db.problems.c.stage == "score")).all())
    assert "outside the workspace" in reasons["evil"] and reasons["00900"]

    again = score_bins(engine, ws, version, scorer, progress=False)
    assert (again.scored, again.failed, again.pending_at_start) == (0, 0, 0)
    retry = score_bins(engine, ws, version, scorer, retry_failed=True, progress=False)
    assert (retry.scored, retry.failed) == (0, 2)


def _cli_env(ws: Workspace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(BINAUDIT_WORKSPACE=str(ws.root), BINAUDIT_DATABASE_URL=ws.database_url, PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1", BINAUDIT_SECRETS=str(ws.root / "no-secrets.toml"))
    return env


# `python -m audit score` whose scorer, after 35 results (3 chunks of 10 committed, 5 scored in the 4th),
# announces it in a file and waits forever: the kill always lands at the same point, however fast the machine
_SCORE_HELD_AFTER_35 = """
import sys, threading
import audit.scorers as scorers
from audit.cli import main
real_scorer_for = scorers.scorer_for

def held_scorer_for(*args, **kwargs):
    score = real_scorer_for(*args, **kwargs)
    def held(paths):
        for i, result in enumerate(score(paths)):
            if i == 35:
                open(sys.argv[1], "w").close()
                threading.Event().wait()
            yield result
    return held

scorers.scorer_for = held_scorer_for
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_scoring_resumes_after_a_kill_without_duplicates(engine, ws, version, tmp_path, synth_raw):
    total = imports.import_abid_folder(engine, synth_raw, actor="t").added
    args = ["score", "--commit-every", "10", "--batch-size", "10", "--workers", "0"]
    held = tmp_path / "scorer-held"
    proc = subprocess.Popen([sys.executable, "-c", _SCORE_HELD_AFTER_35, str(held), *args], cwd=ROOT,
                            env=_cli_env(ws), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not held.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the scorer never reached its 36th photo"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(_predictions(engine))
    assert partial == 30 < total  # the 4th chunk's 5 scored photos were lost with the process

    rerun = subprocess.run([sys.executable, "-m", "audit", *args], cwd=ROOT, env=_cli_env(ws),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    preds = _predictions(engine)
    assert len(preds) == total and preds["bin_id"].is_unique
    assert f"{total - partial} scored" in rerun.stdout


def _seed_predictions(engine, version_id: int, n: int, seed: int = 0) -> pd.DataFrame:
    """Random bins, predictions and decisions written straight to the tables; about one in ten has a record above
    5 written as a closed 0..5 model writes it (beyond its range: no mismatch probability, no flag)."""
    rng = np.random.default_rng(seed)
    t0 = db.utcnow()
    bins, preds = [], []
    for i in range(n):
        decided = rng.random() < 0.3
        decided_at = t0 + pd.Timedelta(seconds=int(rng.integers(-100, 100))) if decided else None
        beyond = bool(rng.random() < 0.1)
        expected = int(rng.integers(6, 12)) if beyond else int(rng.integers(0, 6))
        bins.append({"id": f"b{i:04d}", "image_uri": f"images/{i}.jpg", "expected_count": expected,
                     "items": [], "search_text": "", "source": "upload", "created_at": t0, "updated_at": t0,
                     "decided_at": decided_at, "decision": "dismiss" if decided else None,
                     "queued": bool(rng.random() < 0.05)})
        preds.append({"bin_id": f"b{i:04d}", "model_version_id": version_id, "predicted_count": 1, "decoded_count": 1,
                      "probabilities": [1, 0, 0, 0, 0, 0], "expected_count": expected, "beyond_range": beyond,
                      "mismatch_probability": None if beyond else round(float(rng.random()), 3),
                      "argmax_differs": None if beyond else False,
                      "created_at": t0,
                      # the queue facts as audit.reviews keeps them
                      "settled": decided_at is not None and decided_at >= t0, "queued": bins[-1]["queued"]})
    with db.write_tx(engine) as conn:
        conn.execute(db.bins.insert(), bins)
        conn.execute(db.predictions.insert(), preds)
    frame = pd.DataFrame(bins).rename(columns={"id": "bin_id"})
    frame["mismatch_probability"] = [p["mismatch_probability"] for p in preds]
    frame["predicted_at"] = t0
    frame["decided_at"] = pd.to_datetime(frame["decided_at"])
    return frame


@pytest.mark.parametrize("threshold", [0.0, 0.35, 0.8])
def test_sql_queue_agrees_with_the_reference_rules(engine, version, threshold):
    frame = _seed_predictions(engine, version.id, 300)
    expected = queue_rules(frame, threshold=threshold)["bin_id"].tolist()
    beyond = set(frame.loc[frame["expected_count"] > 5, "bin_id"])
    hand = set(frame.loc[frame["queued"], "bin_id"])
    assert beyond - hand and beyond & hand  # both kinds are seeded: only those sent by hand may be queued
    assert {b for b in expected if b in beyond} <= hand
    assert queue_size(engine, version.id, threshold=threshold) == len(expected)
    got = queue_page(engine, version.id, threshold=threshold, limit=1000)["bin_id"].tolist()
    assert got == expected
    page2 = queue_page(engine, version.id, threshold=threshold, limit=10, offset=10)["bin_id"].tolist()
    assert page2 == expected[10:20]


def test_queue_filters_narrow_the_queue_without_reordering_it(engine, version):
    frame = _seed_predictions(engine, version.id, 300, seed=5)
    full = queue_rules(frame, threshold=0.3)
    cases = [(QueueFilter(expected=(2, 3)), full["expected_count"].isin([2, 3])),
             (QueueFilter(prob_min=0.5, prob_max=0.8), full["mismatch_probability"].between(0.5, 0.8)),
             (QueueFilter(sent_by_hand=True), full["queued"]),
             (QueueFilter(sent_by_hand=False, expected=(0,)), ~full["queued"] & (full["expected_count"] == 0))]
    for where, mask in cases:
        expected = full.loc[mask, "bin_id"].tolist()
        assert expected, where  # each case selects some bins, not all
        assert len(expected) < len(full), where
        assert queue_size(engine, version.id, threshold=0.3, where=where) == len(expected), where
        assert queue_page(engine, version.id, threshold=0.3, limit=1000, where=where)["bin_id"].tolist() == expected
        last = (len(expected) - 1) // 3 * 3  # the last page of three
        assert queue_page(engine, version.id, threshold=0.3, limit=3, offset=last, where=where)["bin_id"].tolist() \
            == expected[last:]
    expected_values, predicted_values = queue_values(engine, version.id, threshold=0.3)
    assert expected_values == sorted(full["expected_count"].unique().tolist()) and predicted_values == [1]
    csv = queue_frame(engine, version.id, threshold=0.3)
    assert csv["queued"].all() and csv["sent_by_hand"].tolist() == full["queued"].tolist()  # issue 13: not False
    assert "predicted_count_differs" in csv and "argmax_differs" not in csv


def test_a_reviewer_undoes_her_own_last_decision_and_history_keeps_both(engine, version):
    frame = _seed_predictions(engine, version.id, 20, seed=1)
    open_now = set(queue_page(engine, version.id, threshold=0.0, limit=100)["bin_id"])
    bin_id = next(b for b in frame.loc[frame["decision"].isna(), "bin_id"] if b in open_now)
    v0 = reviews.bin_state(engine, bin_id).row_version
    v1 = reviews.decide(engine, reviews.Decision(bin_id, reviews.DISMISS, "ana", v0))
    assert bin_id not in set(queue_page(engine, version.id, threshold=0.0, limit=100)["bin_id"])
    assert reviews.undo_window_left(engine, bin_id, "ana", v1) and not reviews.undo_window_left(engine, bin_id, "ben", v1)
    with pytest.raises(reviews.ReviewError, match="not yours"):
        reviews.undo(engine, bin_id, reviewer="ben", expected_version=v1)
    with pytest.raises(reviews.ReviewError, match="older"):
        reviews.undo(engine, bin_id, reviewer="ana", expected_version=v1, window=pd.Timedelta(0).to_pytimedelta())
    v2 = reviews.undo(engine, bin_id, reviewer="ana", expected_version=v1)
    state = reviews.bin_state(engine, bin_id)
    assert state.decision is None and state.row_version == v2
    assert bin_id in set(queue_page(engine, version.id, threshold=0.0, limit=100)["bin_id"])  # back in the queue
    past = reviews.history(engine, bin_id)
    assert past["decision"].tolist() == ["dismiss"] and past["undone_at"].notna().all()  # kept, marked undone
    assert reviews.decisions_frame(engine).set_index("bin_id").loc[bin_id, "undone_at"] is not pd.NaT
    with engine.connect() as conn:
        actions = conn.execute(sa.select(db.audit_log.c.action).where(
            db.audit_log.c.action.in_(["decide", "undo_decision"])).order_by(db.audit_log.c.id)).scalars().all()
    assert actions == ["decide", "undo_decision"]

    v3 = reviews.decide(engine, reviews.Decision(bin_id, reviews.UNSURE, "ana", v2))
    v4 = reviews.decide(engine, reviews.Decision(bin_id, reviews.CONFIRM, "ben", v3, recounted_count=9))
    with pytest.raises(reviews.ReviewConflict, match="changed after your decision"):  # ben acted since
        reviews.undo(engine, bin_id, reviewer="ana", expected_version=v3)
    reviews.undo(engine, bin_id, reviewer="ben", expected_version=v4)
    state = reviews.bin_state(engine, bin_id)
    assert (state.decision, state.decided_by, state.recounted_count) == ("unsure", "ana", None)  # ana's stands again
    assert bin_id not in set(queue_page(engine, version.id, threshold=0.0, limit=100)["bin_id"])


def test_decisions_leave_the_queue_and_a_budget_caps_it(engine, version):
    _seed_predictions(engine, version.id, 50, seed=3)
    top = queue_page(engine, version.id, threshold=0.5, limit=3)
    first = top.iloc[0]
    reviews.decide(engine, reviews.Decision(first.bin_id, reviews.DISMISS, "ana", int(first.row_version)))
    after = queue_page(engine, version.id, threshold=0.5, limit=100)["bin_id"].tolist()
    assert first.bin_id not in after
    assert queue_size(engine, version.id, threshold=0.5, budget=4) == 3  # one decision already made today
    assert len(queue_page(engine, version.id, threshold=0.5, budget=4, limit=50)) == 3


def test_two_analysts_deciding_the_same_bin(engine, version):
    _seed_predictions(engine, version.id, 5, seed=1)
    with engine.connect() as conn:
        v0 = conn.execute(sa.select(db.bins.c.row_version).where(db.bins.c.id == "b0001")).scalar_one()
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def analyst(name: str, decision: str, recount: int | None) -> None:
        barrier.wait()
        try:
            outcomes[name] = reviews.decide(engine, reviews.Decision("b0001", decision, name, v0, recount))
        except reviews.ReviewConflict as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=analyst, args=("ana", reviews.CONFIRM, 9)),
               threading.Thread(target=analyst, args=("ben", reviews.DISMISS, None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [o for o in outcomes.values() if isinstance(o, reviews.ReviewConflict)]
    assert len(outcomes) == 2 and len(conflicts) == 1  # exactly one analyst is told, the other wins
    winner = next(n for n, o in outcomes.items() if not isinstance(o, reviews.ReviewConflict))
    assert winner in str(conflicts[0]) and "decided meanwhile" in str(conflicts[0])
    hist = reviews.history(engine, "b0001")
    assert hist["reviewer"].tolist() == [winner]  # nothing overwritten, one decision stored
    with engine.connect() as conn:
        log = conn.execute(sa.select(db.audit_log.c.actor).where(db.audit_log.c.action == "decide")).scalars().all()
    assert log == [winner]


def test_review_validation(engine, version):
    _seed_predictions(engine, version.id, 3, seed=2)
    with engine.connect() as conn:
        expected, rv = conn.execute(sa.select(db.bins.c.expected_count, db.bins.c.row_version)
                                    .where(db.bins.c.id == "b0000")).one()
    with pytest.raises(reviews.ReviewError, match="recounted quantity"):
        reviews.decide(engine, reviews.Decision("b0000", reviews.CONFIRM, "ana", rv))
    with pytest.raises(reviews.ReviewError, match="dismiss instead"):
        reviews.decide(engine, reviews.Decision("b0000", reviews.CONFIRM, "ana", rv, expected))
    with pytest.raises(reviews.ReviewError, match="unknown decision"):
        reviews.decide(engine, reviews.Decision("b0000", "maybe", "ana", rv))
    with pytest.raises(reviews.ReviewError, match="no bin"):
        reviews.decide(engine, reviews.Decision("nope", reviews.DISMISS, "ana", 1))
    with pytest.raises(reviews.ReviewError, match="at most 200 characters"):  # PostgreSQL would refuse it
        reviews.decide(engine, reviews.Decision("b0000", reviews.DISMISS, "a" * 201, rv))


def test_browse_filters_and_detail(engine, ws, version, tiny_dataset):
    imports.import_dataset(engine, tiny_dataset, actor="t")
    score_bins(engine, ws, version, local_scorer(version.model_dir, workers=0), progress=False)
    everything = browse_count(engine, version.id, BinFilter())
    assert everything == len(browse_page(engine, version.id, BinFilter(), limit=1000))
    only_val = browse_page(engine, version.id, BinFilter(splits=("val",)), limit=1000)
    assert set(only_val["split"]) == {"val"}
    threes = browse_page(engine, version.id, BinFilter(expected=(3,)), limit=1000)
    assert set(threes["expected_count"]) == {3}
    rows = browse_page(engine, version.id, BinFilter(), limit=1000)
    disagree = browse_page(engine, version.id, BinFilter(mismatch_only=True), limit=1000)
    expected_disagree = rows.loc[rows["predicted_count"] != rows["expected_count"], "bin_id"]
    assert 0 < len(disagree) < len(rows) and set(disagree["bin_id"]) == set(expected_disagree)
    values = sorted(set(rows["mismatch_probability"]))
    low, high = values[1], values[-2]  # a band that holds some bins, not the lowest or the highest
    band = browse_page(engine, version.id, BinFilter(prob_min=low, prob_max=high), limit=1000)
    in_band = rows.loc[rows["mismatch_probability"].between(low, high), "bin_id"]
    assert 0 < len(band) < len(rows) and set(band["bin_id"]) == set(in_band)
    some_bin = browse_page(engine, version.id, BinFilter(expected=(2,)), limit=1).iloc[0]
    detail = bin_detail(engine, some_bin.bin_id, version.id)
    asin = detail["bin"]["items"][0]["asin"]
    found = browse_page(engine, version.id, BinFilter(text=asin.lower()), limit=10)
    assert some_bin.bin_id in found["bin_id"].tolist()
    assert browse_count(engine, version.id, BinFilter(text="100%_no_such")) == 0
    assert detail["prediction"]["model_version_id"] == version.id


def test_exports_and_recount_dataset(engine, ws, version, tiny_dataset, tmp_path):
    imports.import_dataset(engine, tiny_dataset, actor="t")
    score_bins(engine, ws, version, local_scorer(version.model_dir, workers=0), progress=False)
    queue = queue_page(engine, version.id, threshold=0.0, limit=1000)
    # two training bins and one test bin: a recount of the test bin must never become a training example
    top = pd.concat([queue[queue["split"] == "train"].head(2), queue[queue["split"] == "test"].head(1)])
    for row, recount in zip(top.itertuples(), (0, 1, 0), strict=True):
        recount = recount if recount != row.expected_count else recount + 2
        reviews.decide(engine, reviews.Decision(row.bin_id, reviews.CONFIRM, "ana", int(row.row_version), recount))
    n_queue = export_queue(engine, version.id, tmp_path / "q.csv", threshold=0.0)
    assert n_queue == len(pd.read_csv(tmp_path / "q.csv")) == queue_size(engine, version.id, threshold=0.0)
    exported = pd.read_csv(tmp_path / "q.csv", dtype=str)
    labels = set(version.classes.labels)  # the open class is written "6+", never 6
    assert set(exported["predicted_count"]) <= labels and set(exported["decoded_count"]) <= labels
    assert "6" not in set(exported["predicted_count"]) | set(exported["decoded_count"])
    assert export_decisions(engine, tmp_path / "d.csv") == 3
    decisions = pd.read_csv(tmp_path / "d.csv")
    assert set(decisions["decision"]) == {"confirm_mismatch"} and set(decisions["reviewer"]) == {"ana"}
    frame = build_recount_dataset(engine, ws, tmp_path / "recounts", max_count=5)
    written = sorted(p.relative_to(tmp_path / "recounts").as_posix() for p in (tmp_path / "recounts").rglob("*.jpg"))
    status = frame.set_index("bin_id")["status"]
    assert len(written) == 2 and all(status[b].startswith("written") for b in top.bin_id[:2])
    assert status[top.bin_id.iloc[2]].startswith("left out: the bin is in val or test")  # its split in the database
    assert recount_summary(frame) == {"written": 2, "left_out": 1, "skipped": 0}
    for path in written:
        count, name = path.split("/")
        assert int(count) == frame.set_index("bin_id").loc[Path(name).stem, "recounted_count"]
    # the folders a job will hold out count too: naming the training folder leaves its bins out as well
    again = build_recount_dataset(engine, ws, tmp_path / "recounts", max_count=5, held_out=[tiny_dataset / "train"])
    assert recount_summary(again)["left_out"] == 3 and not list((tmp_path / "recounts").rglob("*.jpg"))


def test_overview_figures(engine, ws, version, tiny_dataset):
    imports.import_dataset(engine, tiny_dataset, actor="t")
    score_bins(engine, ws, version, local_scorer(version.model_dir, workers=0), progress=False)
    o = overview(engine, version.id, threshold=0.5)
    preds = _predictions(engine)
    assert o.bins == o.scored == len(preds)
    # the open class 6 agrees with any record above 5
    assert o.agree == int((preds["predicted_count"] == preds["expected_count"].clip(upper=6)).sum())
    assert o.open_queue == queue_size(engine, version.id, threshold=0.5)
    assert o.beyond_range == 0  # an open model checks every bin


@pytest.mark.slow
def test_cli_end_to_end(sqlite_ws, tiny_dataset, tiny_model_dir):
    ws = sqlite_ws
    engine = ws.open()
    activate(engine, register_model(engine, tiny_model_dir, ws.models_dir, job_id=None).id, actor="test")
    env = _cli_env(ws)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "audit", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    assert "added" in run("import", "--dataset", str(tiny_dataset)).stdout
    assert run("score", "--workers", "0").returncode == 0
    q = run("queue", "--limit", "3", "--threshold", "0")
    assert q.returncode == 0 and "bin(s) in the queue" in q.stdout
    bin_id = q.stdout.splitlines()[2].split()[0]
    d = run("decide", bin_id, "--decision", "unsure", "--reviewer", "cli-user", "--note", "blurry")
    assert d.returncode == 0, d.stderr
    assert "cli-user" in run("history", bin_id).stdout
    bad = run("decide", "no-such-bin", "--decision", "dismiss", "--reviewer", "x")
    assert bad.returncode == 2 and bad.stderr.startswith("error: no bin")
    assert "confirmed mismatches" in run("overview").stdout

    # recounts as a training folder: a val bin's recount stays out, a training bin's goes in
    recounted = {split: sorted((tiny_dataset / split / "2").glob("*.jpg"))[0].stem for split in ("train", "val")}
    for bin_id in recounted.values():
        assert run("decide", bin_id, "--decision", "confirm_mismatch", "--recount", "4", "--reviewer", "ana").returncode == 0
    out = ws.root / "recounts"
    export = run("export", "recounts", "--out", str(out), "--val", str(tiny_dataset / "val"),
                 "--test", str(tiny_dataset / "test"))
    assert export.returncode == 0, export.stderr
    assert "1 recount(s) left out (bins in val or test), 0 skipped" in export.stdout
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.jpg")] == [f"4/{recounted['train']}.jpg"]


def test_a_newer_model_brings_a_decided_bin_back(engine, ws, version, tiny_dataset, tiny_model_dir):
    imports.import_dataset(engine, tiny_dataset, actor="t")
    score_bins(engine, ws, version, local_scorer(version.model_dir, workers=0), progress=False)
    top = queue_page(engine, version.id, threshold=0.0, limit=1).iloc[0]
    reviews.decide(engine, reviews.Decision(top.bin_id, reviews.DISMISS, "ana", int(top.row_version)))
    assert top.bin_id not in queue_page(engine, version.id, threshold=0.0, limit=1000)["bin_id"].tolist()

    newer = activate(engine, register_model(engine, tiny_model_dir, ws.models_dir).id, actor="t")
    score_bins(engine, ws, newer, local_scorer(newer.model_dir, workers=0), progress=False)
    # the newer model's prediction came after the decision: the bin is open again under it, not under the old one
    assert top.bin_id in queue_page(engine, newer.id, threshold=0.0, limit=1000)["bin_id"].tolist()
    assert top.bin_id not in queue_page(engine, version.id, threshold=0.0, limit=1000)["bin_id"].tolist()


def test_changing_the_expected_count_rescores_the_mismatch_without_the_photo(engine, ws, version):
    row = imports.import_upload(engine, ws, "00555.jpg", jpeg_bytes(), actor="ana", expected_count=1)
    from modeling.predictor import Predictor

    probs = Predictor.load(version.model_dir, precision="fp32").predict_bytes(jpeg_bytes())["probabilities"]
    from audit.scoring import record_prediction

    assert record_prediction(engine, version, row["id"], probs)
    imports.import_upload(engine, ws, "00555.jpg", jpeg_bytes(), actor="ana", expected_count=3)
    with engine.connect() as conn:
        pred = conn.execute(sa.select(db.predictions).where(db.predictions.c.bin_id == "00555")).mappings().one()
    assert pred["expected_count"] == 3
    assert pred["mismatch_probability"] == pytest.approx(1 - probs[3], abs=1e-5)


def test_import_from_an_s3_prefix_keeps_the_photos_in_s3(aws_env, engine, ws, version, synth_raw, request,
                                                         tmp_path):
    import boto3

    from audit.photos import local_photo
    from tests.conftest import s3_bucket_name

    bucket = s3_bucket_name(request)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for folder in ("bin-images", "metadata"):
        for path in sorted((synth_raw / folder).iterdir())[:15]:
            s3.put_object(Bucket=bucket, Key=f"abid/{folder}/{path.name}", Body=path.read_bytes())
    s3.put_object(Bucket=bucket, Key="abid/metadata/99999.json", Body=b"{broken")  # bad metadata, no photo
    report = imports.import_s3_prefix(engine, ws, f"s3://{bucket}/abid", actor="t", workers=4)
    assert report.added == 15
    assert {p.file: p.reason for p in report.problems}["metadata/99999.json"] == "metadata without an image"
    with engine.connect() as conn:
        uris = dict(conn.execute(sa.select(db.bins.c.id, db.bins.c.image_uri)).all())
        roots = db.get_state(conn, "image_roots")
    assert all(u == f"s3://{bucket}/abid/bin-images/{b}.jpg" for b, u in uris.items())  # the photos stay in S3
    assert not list(ws.root.rglob("*.jpg"))  # nothing was copied onto this server's disk

    # a second server: its own folder, the same database; it reads the photos from S3 through its cache
    server_b = Workspace(tmp_path / "server-b", ws.database_url)
    first = sorted(uris)[0]
    cached = local_photo(uris[first], server_b, roots)
    assert server_b.root in cached.parents and cached.read_bytes() == (synth_raw / "bin-images" / f"{first}.jpg").read_bytes()
    s3.put_object(Bucket=bucket, Key=f"abid/bin-images/{first}.jpg", Body=b"changed in S3")
    assert local_photo(uris[first], server_b, roots).read_bytes() == cached.read_bytes()  # fetched once, then cached
    s3.delete_object(Bucket=bucket, Key=f"abid/bin-images/{sorted(uris)[1]}.jpg")  # gone from S3 before scoring
    scored = score_bins(engine, server_b, version, local_scorer(version.model_dir, workers=0), progress=False)
    assert (scored.scored, scored.failed) == (14, 1)
    with engine.connect() as conn:
        reason = conn.execute(sa.select(db.problems.c.reason).where(db.problems.c.stage == "score")).scalar_one()
    assert reason == f"photo not found in S3: {uris[sorted(uris)[1]]}"
    with pytest.raises(UnsafePath, match="imported S3 prefix"):  # other prefixes of the bucket stay closed
        local_photo(f"s3://{bucket}/elsewhere/x.jpg", server_b, roots)


# ---------------------------------------------------------------- records survive re-imports and races


def _uniform_scorer(during=None):
    """A scorer answering a flat distribution; `during()` runs after the first photo, mid-run."""
    def scorer(paths):
        for i, _ in enumerate(paths):
            if i == 1 and during:
                during()
            yield np.full(7, 1 / 7), None  # the tiny model's classes: 0..5 and 6+
    return scorer


def test_scoring_reads_the_bins_at_write_time(engine, ws, version, tiny_dataset):
    imports.import_dataset(engine, tiny_dataset, actor="t")
    with engine.connect() as conn:
        first, last = conn.execute(sa.select(sa.func.min(db.bins.c.id), sa.func.max(db.bins.c.id))).one()

    def analysts_meanwhile():  # after the scorer read its page, before the chunk is written
        reviews.send_to_queue(engine, last, actor="ana", expected_version=reviews.bin_state(engine, last).row_version)
        with engine.connect() as conn:
            version_now = conn.execute(sa.select(db.bins.c.row_version).where(db.bins.c.id == first)).scalar_one()
        reviews.decide(engine, reviews.Decision(first, reviews.DISMISS, "bo", version_now))

    score_bins(engine, ws, version, _uniform_scorer(analysts_meanwhile), progress=False, commit_every=10_000)
    preds = _predictions(engine).set_index("bin_id")
    assert bool(preds.loc[last, "queued"])  # the hand-queued bin is not lost from the queue
    assert last in queue_page(engine, version.id, threshold=0.99, limit=1000)["bin_id"].tolist()
    with engine.connect() as conn:
        decided_at = conn.execute(sa.select(db.bins.c.decided_at).where(db.bins.c.id == first)).scalar_one()
    # the prediction is written after the decision, so by the queue rules it is open again: the flag must agree
    assert preds.loc[first, "created_at"] >= decided_at and not preds.loc[first, "settled"]


def test_reuploading_a_bin_keeps_its_record_and_replaces_a_changed_photo(engine, ws, version, tiny_dataset):
    imports.import_dataset(engine, tiny_dataset, actor="t")
    score_bins(engine, ws, version, _uniform_scorer(), progress=False)
    with engine.connect() as conn:
        before = conn.execute(sa.select(db.bins).where(db.bins.c.split == "train").limit(1)).mappings().one()
    bin_id = before["id"]
    photo = Path(before["image_uri"]).read_bytes()

    # the same photo again, no metadata: nothing about the bin is lost, its prediction stays
    same = imports.import_upload(engine, ws, f"{bin_id}.jpg", photo, actor="ana")
    assert (same["expected_count"], same["items"], same["split"]) == (
        before["expected_count"], before["items"], before["split"])
    assert (_predictions(engine)["bin_id"] == bin_id).sum() == 1

    # a different photo under the same ABID name: the old prediction described another photo and goes
    other = imports.import_upload(engine, ws, f"{bin_id}.jpg", jpeg_bytes(color=(0, 0, 255)), actor="ana",
                                  expected_count=before["expected_count"] + 1)
    assert other["expected_count"] == before["expected_count"] + 1 and other["items"] == before["items"]
    assert (_predictions(engine)["bin_id"] == bin_id).sum() == 0
    from audit.scoring import record_prediction

    assert record_prediction(engine, version, bin_id, np.full(7, 1 / 7))
    with engine.connect() as conn:
        stored = conn.execute(sa.select(db.bins).where(db.bins.c.id == bin_id)).mappings().one()
        actions = conn.execute(sa.select(db.audit_log.c.action).where(db.audit_log.c.entity_id == bin_id)).scalars()
        assert "replace_photo" in set(actions)
    assert stored["split"] == before["split"] and stored["expected_count"] == before["expected_count"] + 1


def test_expected_count_change_rescores_predictions_of_models_with_other_class_counts(engine, ws, version):
    row = imports.import_upload(engine, ws, "00556.jpg", jpeg_bytes(), actor="ana", expected_count=1)
    from audit.scoring import record_prediction
    from modeling.registry import get_version

    def closed_version(name: str, max_count: int) -> int:
        """A closed 0..max_count model, its config as written before the open class existed (no top_class)."""
        config = {k: v for k, v in version.config.items() if k not in ("top_class", "class_labels")}
        with db.write_tx(engine) as conn:
            return conn.execute(db.model_versions.insert().values(
                name=name, artifact_uri=str(version.model_dir), arch="resnet18", image_size=64, max_count=max_count,
                config={**config, "class_to_count": list(range(max_count + 1)), "max_count": max_count,
                        "num_classes": max_count + 1}, metrics={}, created_at=db.utcnow())).inserted_primary_key[0]

    wide_id, old_id = closed_version("wide", 10), closed_version("old", 5)
    wide_probs = np.arange(1, 12, dtype=np.float64) / np.arange(1, 12).sum()  # an 11-class model (counts 0..10)
    open_probs = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4])  # the tiny model: 0..5 and 6+
    assert record_prediction(engine, version, row["id"], open_probs)
    assert record_prediction(engine, get_version(engine, wide_id), row["id"], wide_probs)
    assert record_prediction(engine, get_version(engine, old_id), row["id"], np.full(6, 1 / 6))

    imports.import_upload(engine, ws, "00556.jpg", jpeg_bytes(), actor="ana", expected_count=7)
    preds = _predictions(engine).set_index("model_version_id")
    assert preds.loc[wide_id, "mismatch_probability"] == pytest.approx(1 - wide_probs[7], abs=1e-5)
    assert preds.loc[version.id, "mismatch_probability"] == pytest.approx(0.6, abs=1e-5)  # 7 is 6+: 1 - p(6+)
    # 7 is beyond the old closed 0..5 model's range: no probability (it used to be p(count <= 5) = 1.0)
    assert pd.isna(preds.loc[old_id, "mismatch_probability"]) and pd.isna(preds.loc[old_id, "argmax_differs"])
    assert preds["beyond_range"].to_dict() == {version.id: False, wide_id: False, old_id: True}
    assert set(preds["expected_count"]) == {7}
    assert row["id"] not in queue_page(engine, old_id, threshold=0.0, limit=10)["bin_id"].tolist()
    imports.import_upload(engine, ws, "00556.jpg", jpeg_bytes(), actor="ana", expected_count=5)
    back = _predictions(engine).set_index("model_version_id").loc[old_id]
    assert back["mismatch_probability"] == pytest.approx(5 / 6, abs=1e-5) and not back["beyond_range"]


def test_recount_export_never_deletes_a_folder_it_did_not_write(engine, ws, tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("an analyst's own file")
    from audit.export import ExportError

    with pytest.raises(ExportError, match="refusing to replace"):
        build_recount_dataset(engine, ws, mine)
    assert (mine / "keep.txt").read_text() == "an analyst's own file"
    out = tmp_path / "recounts"
    build_recount_dataset(engine, ws, out)
    (out / "3").mkdir()
    (out / "3" / "stale.jpg").write_bytes(b"x")
    build_recount_dataset(engine, ws, out)  # its own folder is rebuilt, so a stale photo does not linger
    assert not (out / "3").exists()


def test_unsafe_or_absurd_input_is_refused_with_a_reason(engine, ws, tiny_dataset, tmp_path, monkeypatch, capsys):
    dataset = tmp_path / "ds"
    shutil.copytree(tiny_dataset, dataset)
    manifest = (dataset / "manifest.csv").read_text().splitlines()
    first_id = manifest[1].split(",")[0]
    manifest[1] = manifest[1].replace(first_id, "../../escape", 1)
    (dataset / "manifest.csv").write_text("\n".join(manifest) + "\n")
    report = imports.import_dataset(engine, dataset, actor="t")
    assert report.added == len(manifest) - 2
    assert any("../../escape" in p.reason for p in report.problems)

    with pytest.raises(imports.ImportError_, match="between 0 and"):
        imports.import_upload(engine, ws, "00557.jpg", jpeg_bytes(), actor="ana", expected_count=2**63)
    huge = json.dumps({"BIN_FCSKU_DATA": {"A": {"asin": "A", "name": "x", "quantity": 2**63}},
                       "EXPECTED_QUANTITY": 2**63}).encode()
    with pytest.raises(imports.ImportError_, match="plausible"):
        imports.import_upload(engine, ws, "00557.jpg", jpeg_bytes(), actor="ana", metadata=huge)

    from audit.cli import main

    for key, value in _cli_env(ws).items():
        monkeypatch.setenv(key, value)
    assert main(["import", "--folder", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# ---------------------------------------------------------------- real ABID bins above 5 items (../shared/abid-sample)


def test_an_open_model_checks_real_abid_bins_above_5_by_their_photo(engine, ws, version, abid_sample):
    """The tiny model is trained on an open synthetic dataset (its "6+" folder): a record of 12 is checked against
    p(6+) of that bin's photo, so the mismatch probabilities differ from bin to bin and none is 1.0 by construction."""
    assert version.classes.open_top
    imports.import_abid_folder(engine, abid_sample, actor="t")
    report = score_bins(engine, ws, version, local_scorer(version.model_dir, workers=0), progress=False)
    assert report.scored == 100 and report.failed == 0
    preds = _predictions(engine)
    above = preds[preds["expected_count"] > 5]
    assert len(above) == 34 and not above["beyond_range"].any()
    p_open = np.array([p[6] for p in above["probabilities"]])
    assert above["mismatch_probability"].to_numpy() == pytest.approx(1 - p_open, abs=1e-5)
    assert (above["mismatch_probability"] < 1.0).all()
    # one value per photo (a model that has seen few "6+" bins puts little mass there: close to 1, but not fixed)
    assert above["mismatch_probability"].nunique() == 34 and np.ptp(above["mismatch_probability"]) > 1e-3
    assert overview(engine, version.id, threshold=0.5).beyond_range == 0


def test_a_closed_model_does_not_queue_real_abid_bins_above_5_and_labels_them_beyond_range(engine, ws, abid_sample,
                                                                                           tmp_path):
    from tests.modeling_fixtures import closed_model_dir

    closed = activate(engine, register_model(engine, closed_model_dir(tmp_path / "closed"), ws.models_dir).id,
                      actor="t")
    imports.import_abid_folder(engine, abid_sample, actor="t")
    score_bins(engine, ws, closed, local_scorer(closed.model_dir, workers=0), progress=False)
    preds = _predictions(engine).set_index("bin_id")
    above = preds[preds["expected_count"] > 5]
    assert len(above) == 34 and above["beyond_range"].all()
    assert above["mismatch_probability"].isna().all() and above["argmax_differs"].isna().all()
    queue = queue_page(engine, closed.id, threshold=0.0, limit=1000)
    assert set(queue["bin_id"]) == set(preds.index) - set(above.index)  # the 66 bins it can check, no other
    assert overview(engine, closed.id, threshold=0.0).beyond_range == 34
    listed = browse_page(engine, closed.id, BinFilter(beyond_range_only=True), limit=1000)
    assert set(listed["bin_id"]) == set(above.index) and listed["beyond_range"].all()
    out = subprocess.run([sys.executable, "-m", "audit", "overview"], cwd=ROOT, env=_cli_env(ws), capture_output=True,
                         text=True, timeout=120)
    assert "beyond the model's range: 34 bin(s)" in out.stdout, out.stderr


def test_a_recount_above_n_is_filed_under_the_open_class(engine, ws, tmp_path):
    imports.import_upload(engine, ws, "00777.jpg", jpeg_bytes(), actor="ana", expected_count=2)
    with engine.connect() as conn:
        row_version = conn.execute(sa.select(db.bins.c.row_version).where(db.bins.c.id == "00777")).scalar_one()
    reviews.decide(engine, reviews.Decision("00777", reviews.CONFIRM, "ana", row_version, 9))
    frame = build_recount_dataset(engine, ws, tmp_path / "recounts", max_count=5)
    assert frame.set_index("bin_id").loc["00777", "status"] == "written: 6+/00777.jpg"
    assert (tmp_path / "recounts" / "6+" / "00777.jpg").is_file()
