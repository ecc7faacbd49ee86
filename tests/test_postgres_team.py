"""A team on one PostgreSQL database: the shell from an empty database, racing analysts and scorers in
separate processes, two dashboard servers, and the README's team commands.

Everything here runs against the real server the tests start (tests/postgres_server.py).
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from binaudit import db

ROOT = Path(__file__).resolve().parent.parent


def _env(url: str, workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "BINAUDIT_"))}
    env.update(BINAUDIT_DATABASE_URL=url, BINAUDIT_WORKSPACE=str(workspace), PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1", BINAUDIT_SECRETS=str(workspace / "no-secrets.toml"))
    return env


def _libpq(url: str) -> str:
    """The URL psql and pg_dump take: SQLAlchemy's without the driver name."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# ---------------------------------------------------------------- acceptance: the shell, from an empty database


@pytest.mark.slow
def test_from_the_shell_on_an_empty_postgresql_database(pg_server, pg_empty_url, tiny_dataset, tmp_path):
    env = _env(pg_empty_url, tmp_path / "ws")

    def run(*args: str, module: str = "audit") -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    migrated = run("migrate", module="binaudit").stdout
    assert f"schema version {db.LATEST_VERSION} (applied 1, 2, 3, 4, 5, 6)" in migrated and "postgresql+psycopg" in migrated
    assert "nothing to apply" in run("migrate", module="binaudit").stdout
    assert "added" in run("import", "--dataset", str(tiny_dataset)).stdout
    with (tiny_dataset / "manifest.csv").open() as fh:
        first, second = list(csv.DictReader(fh))[:2]
    recount = int(first["count"]) + 1
    run("decide", first["bin_id"], "--decision", "confirm_mismatch", "--recount", str(recount), "--reviewer", "ana")
    run("decide", second["bin_id"], "--decision", "dismiss", "--reviewer", "ben", "--note", "record is right")
    assert "ana" in run("history", first["bin_id"]).stdout
    out = tmp_path / "decisions.csv"
    assert "wrote 2 row(s)" in run("export", "decisions", "--out", str(out)).stdout
    with out.open() as fh:
        exported = {r["bin_id"]: r for r in csv.DictReader(fh)}
    assert float(exported[first["bin_id"]]["recounted_count"]) == recount
    assert exported[second["bin_id"]]["reviewer"] == "ben"

    psql = [str(pg_server.bindir / "psql"), _libpq(pg_empty_url), "-v", "ON_ERROR_STOP=1", "-At", "-c"]
    before = subprocess.run([*psql, "SELECT count(*) FROM audit_log"], capture_output=True, text=True, check=True)
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        refused = subprocess.run([*psql, statement], capture_output=True, text=True)
        assert refused.returncode != 0 and "audit_log is append-only" in refused.stderr, refused.stderr
    after = subprocess.run([*psql, "SELECT count(*) FROM audit_log WHERE actor <> 'mallory'"], capture_output=True,
                           text=True, check=True)
    assert int(after.stdout) == int(before.stdout) >= 3  # the import and both decisions, untouched


# ---------------------------------------------------------------- eight analysts, 200 bins, overlapping


def _seed_bins(url: str, n: int) -> list[str]:
    engine = db.make_engine(url)
    now = db.utcnow()
    ids = [f"r{i:04d}" for i in range(n)]
    with db.write_tx(engine) as conn:
        conn.execute(db.bins.insert(), [{"id": b, "image_uri": f"images/{b}.jpg", "expected_count": 2, "items": [],
                                         "search_text": b, "source": "upload", "created_at": now, "updated_at": now}
                                        for b in ids])
    engine.dispose()
    return ids


def _analyst(url: str, name: str, bin_ids: list[str], barrier, results) -> None:
    """Load the bins (the row version each page showed), wait for the others, then decide each one."""
    from audit import reviews

    engine = db.make_engine(url)
    with engine.connect() as conn:
        seen = dict(conn.execute(sa.select(db.bins.c.id, db.bins.c.row_version).where(db.bins.c.id.in_(bin_ids))).all())
    barrier.wait()
    outcome = []
    for k, bin_id in enumerate(bin_ids):
        decision = (reviews.CONFIRM, reviews.DISMISS, reviews.UNSURE)[k % 3]
        try:
            reviews.decide(engine, reviews.Decision(bin_id, decision, name, seen[bin_id],
                                                    3 if decision == reviews.CONFIRM else None))
            outcome.append((bin_id, "recorded", None, None))
        except reviews.ReviewConflict as exc:
            outcome.append((bin_id, "conflict", exc.by, str(exc)))
    results.put((name, outcome))


@pytest.mark.slow
def test_eight_analysts_deciding_overlapping_bins_on_postgresql(pg_url):
    bins = _seed_bins(pg_url, 200)
    rng = np.random.default_rng(5)
    analysts = [f"analyst{k}" for k in range(8)]
    assigned: dict[str, list[str]] = {a: [] for a in analysts}
    for b in bins:  # one, two or three analysts open each bin
        for a in rng.choice(analysts, size=rng.choice([1, 2, 3], p=[0.2, 0.5, 0.3]), replace=False):
            assigned[a].append(b)
    for a in analysts:
        rng.shuffle(assigned[a])
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(analysts)), ctx.Queue()
    procs = [ctx.Process(target=_analyst, args=(pg_url, a, assigned[a], barrier, results)) for a in analysts]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0

    by_bin: dict[str, list[tuple]] = {}
    for name, rows in outcomes.items():
        for bin_id, status, by, message in rows:
            by_bin.setdefault(bin_id, []).append((name, status, by, message))
    engine = db.make_engine(pg_url)
    with engine.connect() as conn:
        decided_by = dict(conn.execute(sa.select(db.bins.c.id, db.bins.c.decided_by)).all())
        history = conn.execute(sa.select(db.reviews.c.bin_id, db.reviews.c.reviewer)).all()
        logged = conn.execute(sa.select(db.audit_log.c.entity_id, db.audit_log.c.actor)
                              .where(db.audit_log.c.action == "decide")).all()
    overlapping = 0
    for bin_id in bins:
        winners = [name for name, status, _, _ in by_bin[bin_id] if status == "recorded"]
        assert len(winners) == 1, (bin_id, by_bin[bin_id])  # exactly one decision per bin stands
        losers = [(by, message) for _, status, by, message in by_bin[bin_id] if status == "conflict"]
        overlapping += bool(losers)
        for by, message in losers:  # every second analyst is told, and told who decided
            assert by == winners[0] and winners[0] in message and "decided meanwhile" in message
        assert decided_by[bin_id] == winners[0]
    assert sorted(history) == sorted((b, decided_by[b]) for b in bins)  # nothing overwritten, nothing doubled
    assert sorted(logged) == sorted(history)
    assert overlapping > 100  # the test really raced most bins


# ---------------------------------------------------------------- two scorers at once


def _scorer_process(url: str, workspace_root: str, version_id: int, barrier, results) -> None:
    from audit.scoring import score_bins
    from binaudit.workspace import Workspace
    from modeling.registry import get_version

    engine = db.make_engine(url)
    version = get_version(engine, version_id)

    def slow_uniform(paths):  # a scorer taking its time, so the two runs overlap for their whole length
        for _ in paths:
            time.sleep(0.004)
            yield np.full(6, 1 / 6), None

    barrier.wait()
    report = score_bins(engine, Workspace(Path(workspace_root), url), version, slow_uniform, commit_every=10,
                        progress=False)
    results.put(report.scored)


def test_two_scorers_at_once_write_each_prediction_once_on_postgresql(pg_url, tmp_path):
    bins = _seed_bins(pg_url, 300)
    engine = db.make_engine(pg_url)
    with db.write_tx(engine) as conn:
        version_id = conn.execute(db.model_versions.insert().values(
            name="v1", artifact_uri="/nowhere", arch="resnet18", image_size=32, max_count=5,
            config={"class_to_count": list(range(6))}, metrics={}, created_at=db.utcnow())).inserted_primary_key[0]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_scorer_process, args=(pg_url, str(tmp_path / "ws"), version_id, barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    scored = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with engine.connect() as conn:
        predicted = conn.execute(sa.select(db.predictions.c.bin_id)).scalars().all()
    assert sorted(predicted) == bins  # every bin once
    assert sum(scored) == len(bins)  # and each run counts only what it wrote


# ---------------------------------------------------------------- two dashboard servers, photos in S3


def _browse(workspace: Path, url: str, monkeypatch, **filters):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BINAUDIT_WORKSPACE", str(workspace))
    monkeypatch.setenv("BINAUDIT_DATABASE_URL", url)
    monkeypatch.setenv("BINAUDIT_SECRETS", str(workspace / "no-secrets.toml"))
    at = AppTest.from_file(str(ROOT / "app" / "dashboard.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/browse.py").run()
    for key, value in filters.items():
        at.multiselect(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_two_dashboard_servers_share_the_database_and_the_s3_photos(aws_env, pg_url, synth_raw, tmp_path, request,
                                                                     monkeypatch):
    import boto3

    from audit import imports, reviews
    from binaudit.workspace import Workspace
    from tests.conftest import s3_bucket_name

    bucket = s3_bucket_name(request)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for folder in ("bin-images", "metadata"):
        for path in sorted((synth_raw / folder).iterdir())[:6]:
            s3.put_object(Bucket=bucket, Key=f"abid/{folder}/{path.name}", Body=path.read_bytes())
    server_a, server_b = tmp_path / "server-a", tmp_path / "server-b"  # nothing shared but the database and S3
    engine = Workspace(server_a, pg_url).open()
    assert imports.import_s3_prefix(engine, Workspace(server_a, pg_url), f"s3://{bucket}/abid", actor="t").added == 6

    for server in (server_a, server_b):
        at = _browse(server, pg_url, monkeypatch)
        assert len(at.get("image")) == 6 and not [c.value for c in at.caption if "broken_image" in c.value]
        assert len(list((server / "cache" / "s3" / bucket).rglob("*.jpg"))) == 6  # its own cache, from S3

    with engine.connect() as conn:
        first = conn.execute(sa.select(db.bins.c.id).order_by(db.bins.c.id)).scalars().first()
    reviews.decide(engine, reviews.Decision(first, reviews.DISMISS, "ana", 1))  # on server A
    at = _browse(server_b, pg_url, monkeypatch, f_decision=[reviews.DISMISS])  # seen on server B
    assert [c.value.split(" · ")[0] for c in at.caption if " · expected " in c.value] == [first]
    with pytest.raises(reviews.ReviewConflict, match="ana decided"):  # and B cannot overwrite it unknowingly
        reviews.decide(db.make_engine(pg_url), reviews.Decision(first, reviews.UNSURE, "ben", 1))


# ---------------------------------------------------------------- the README's team commands


def test_a_shared_database_is_never_seeded_with_the_demo(pg_url, tmp_path, monkeypatch):
    from app.launch import should_seed_demo
    from binaudit.config import load_settings
    from binaudit.workspace import Workspace

    monkeypatch.delenv("BINAUDIT_SKIP_DEMO", raising=False)
    team = load_settings(env={}, secrets_path=tmp_path / "none.toml", workspace=tmp_path / "a", database_url=pg_url)
    alone = load_settings(env={}, secrets_path=tmp_path / "none.toml", workspace=tmp_path / "b")
    assert not should_seed_demo(team, Workspace.from_settings(team).open())  # empty, but shared
    assert should_seed_demo(alone, Workspace.from_settings(alone).open())  # make run's first run


def test_backup_with_pg_dump_and_restore_keeps_rows_and_the_append_only_log(pg_server, pg_url, tmp_path):
    bins = _seed_bins(pg_url, 5)
    engine = db.make_engine(pg_url)
    with db.write_tx(engine) as conn:
        db.log_change(conn, actor="ana", action="decide", entity="bin", entity_id=bins[0])
    dump = tmp_path / "binaudit.dump"
    subprocess.run([str(pg_server.bindir / "pg_dump"), "--format=custom", f"--file={dump}", _libpq(pg_url)],
                   check=True, capture_output=True)
    restored = pg_server.url(pg_server.create_database())
    subprocess.run([str(pg_server.bindir / "pg_restore"), "--no-owner", f"--dbname={_libpq(restored)}", str(dump)],
                   check=True, capture_output=True)
    copy = db.make_engine(restored)
    assert db.current_version(copy) == db.LATEST_VERSION and db.migrate(copy) == []
    with copy.connect() as conn:
        assert conn.execute(sa.select(db.bins.c.id).order_by(db.bins.c.id)).scalars().all() == bins
        assert conn.execute(sa.select(db.audit_log.c.actor)).scalars().all() == ["ana"]
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.write_tx(copy) as conn:
        conn.execute(db.audit_log.delete())
    with db.write_tx(copy) as conn:  # the id sequences came along: new rows do not collide
        db.log_change(conn, actor="ben", action="decide", entity="bin", entity_id=bins[1])
    copy.dispose()


def test_a_sqlite_workspace_moves_to_postgresql_with_copy_database(seeded_workspace, pg_empty_url, tmp_path):
    env = _env(pg_empty_url, seeded_workspace)
    env.pop("BINAUDIT_DATABASE_URL")  # the source: the seeded workspace's own SQLite database
    done = subprocess.run([sys.executable, "-m", "binaudit", "copy-database", "--to", pg_empty_url], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    source, target = db.make_engine(f"sqlite:///{seeded_workspace / 'binaudit.db'}"), db.make_engine(pg_empty_url)
    for table in (db.bins, db.predictions, db.reviews, db.audit_log, db.model_versions, db.jobs, db.app_state):
        with source.connect() as a, target.connect() as b:
            rows = [sorted(map(repr, c.execute(sa.select(table)).all())) for c in (a, b)]
        assert rows[0] == rows[1] and f"{len(rows[0])} {table.name}" in done.stdout, table.name
    again = subprocess.run([sys.executable, "-m", "binaudit", "copy-database", "--to", pg_empty_url], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.startswith("error: the target database already has")
    source.dispose()
    target.dispose()
