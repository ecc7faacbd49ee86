"""The project database on SQLite and on a real PostgreSQL server: migrations, the append-only audit log,
foreign keys, concurrent writers and concurrent migrations."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import sqlalchemy as sa

from binaudit import db
from tests.conftest import DATABASES


@pytest.fixture(params=DATABASES)
def url(request, tmp_path) -> str:
    """An empty database (no schema) of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'binaudit.db'}"
    return request.getfixturevalue("pg_empty_url")


def test_fresh_database_is_at_the_latest_version(url):
    engine = db.open_database(url)
    assert db.current_version(engine) == db.LATEST_VERSION
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    else:
        assert engine.dialect.driver == "psycopg"
    foreign = {(fk["name"], fk["referred_table"]) for t in ("predictions", "reviews", "jobs", "model_versions")
               for fk in sa.inspect(engine).get_foreign_keys(t)}
    assert ("fk_predictions_bin_id", "bins") in foreign and ("fk_reviews_bin_id", "bins") in foreign
    assert len(foreign) == 6
    assert db.migrate(engine) == []  # nothing left to apply


def test_an_older_database_survives_the_upgrade(url, tmp_path, request):
    engine = db.make_engine(url)
    assert db.migrate(engine, target=1) == [1]
    now = db.utcnow()
    with db.write_tx(engine) as conn:  # rows written by the version-1 code
        conn.execute(sa.text("INSERT INTO jobs (id, kind, backend, status, params, created_at, row_version) "
                             "VALUES ('train-1', 'training', 'local', 'Completed', '{\"epochs\": 2}', :t, 1)"), {"t": now})
        conn.execute(sa.text("INSERT INTO model_versions (name, job_id, artifact_uri, arch, image_size, max_count, "
                             "config, metrics, val_accuracy, created_at) VALUES ('v1', 'train-1', '/m', 'resnet18', "
                             "64, 5, '{}', '{}', 0.5, :t)"), {"t": now})
    assert "bins" not in sa.inspect(engine).get_table_names()

    assert db.migrate(engine, target=3) == [2, 3]
    later = db.utcnow()
    with db.write_tx(engine) as conn:  # version-3 rows: a bin decided after its prediction, one undecided
        # b3's record (8) is above its closed 0..5 model: the old code gave it p(count <= 5) = 1.0
        for bin_id, decided, expected, p in (("b1", later, 2, 0.9), ("b2", None, 2, 0.9), ("b3", None, 8, 1.0)):
            conn.execute(sa.text("INSERT INTO bins (id, image_uri, expected_count, items, search_text, source, "
                                 "created_at, updated_at, decided_at, queued, row_version) VALUES (:id, 'x.jpg', :e, "
                                 "'[]', :text, 'upload', :t, :t, :d, false, 1)"),
                         {"id": bin_id, "text": f"{bin_id} acme teapot", "t": now, "d": decided, "e": expected})
            conn.execute(sa.text("INSERT INTO predictions (bin_id, model_version_id, predicted_count, decoded_count, "
                                 "probabilities, expected_count, mismatch_probability, argmax_differs, created_at) "
                                 "VALUES (:id, 1, 2, 2, '[]', :e, :p, :d, :t)"),
                         {"id": bin_id, "t": now, "e": expected, "p": p, "d": expected != 2})

    assert db.migrate(engine) == [4, 5, 6]
    fresh_url = (f"sqlite:///{tmp_path / 'fresh.db'}" if engine.dialect.name == "sqlite"
                 else request.getfixturevalue("pg_url"))
    fresh = db.open_database(fresh_url)
    for table in ("jobs", "model_versions", "bins", "predictions", "reviews", "audit_log"):
        upgraded, new = sa.inspect(engine), sa.inspect(fresh)
        assert {c["name"] for c in upgraded.get_columns(table)} == {c["name"] for c in new.get_columns(table)}, table
        assert {i["name"] for i in upgraded.get_indexes(table)} == {i["name"] for i in new.get_indexes(table)}, table
        assert ({fk["name"] for fk in upgraded.get_foreign_keys(table)}
                == {fk["name"] for fk in new.get_foreign_keys(table)}), table
    fresh.dispose()
    with engine.connect() as conn:
        job = conn.execute(sa.select(db.jobs).where(db.jobs.c.id == "train-1")).mappings().one()
        assert job["params"] == {"epochs": 2} and job["stop_requested"] is False and job["output"] is None
        assert conn.execute(sa.select(db.model_versions.c.val_accuracy)).scalar() == 0.5
        settled = dict(conn.execute(sa.select(db.predictions.c.bin_id, db.predictions.c.settled)).all())
        assert settled == {"b1": True, "b2": False, "b3": False}  # backfilled from the decisions
        p = db.predictions
        rows = {r.bin_id: r for r in conn.execute(sa.select(p.c.bin_id, p.c.mismatch_probability, p.c.argmax_differs,
                                                            p.c.beyond_range))}
        assert (rows["b3"].mismatch_probability, rows["b3"].argmax_differs, rows["b3"].beyond_range) == (None, None, True)
        assert (rows["b2"].mismatch_probability, rows["b2"].argmax_differs, rows["b2"].beyond_range) == (0.9, False, False)
        if engine.dialect.name == "sqlite":
            found = conn.exec_driver_sql("SELECT count(*) FROM bins_fts WHERE bins_fts MATCH 'teapot'").scalar()
        else:  # the trigram index, forced: on two rows the planner would rather read the table
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN SELECT id FROM bins WHERE search_text LIKE '%%teapot%%'")
                             .scalars())
            assert "ix_bins_search_trgm" in plan
            found = conn.exec_driver_sql("SELECT count(*) FROM bins WHERE search_text LIKE '%%teapot%%'").scalar()
        assert found == 3  # rows from before the search index are in it


# Every way to rewrite or remove an audit-log row, in each database's own words.
TAMPERING = {
    "sqlite": {
        "UPDATE": "UPDATE audit_log SET actor = 'mallory'",
        "DELETE": "DELETE FROM audit_log",
        "REPLACE": "REPLACE INTO audit_log (id, at, actor, action, entity, entity_id, details) "
                   "SELECT id, at, 'mallory', action, entity, entity_id, details FROM audit_log",
        "INSERT OR REPLACE": "INSERT OR REPLACE INTO audit_log (id, at, actor, action, entity, entity_id, details) "
                             "SELECT id, at, 'mallory', action, entity, entity_id, details FROM audit_log",
        "UPSERT": "INSERT INTO audit_log (id, at, actor, action, entity, entity_id, details) "
                  "SELECT id, at, 'mallory', action, entity, entity_id, details FROM audit_log WHERE true "
                  "ON CONFLICT (id) DO UPDATE SET actor = excluded.actor",
    },
    "postgresql": {
        "UPDATE": "UPDATE audit_log SET actor = 'mallory'",
        "DELETE": "DELETE FROM audit_log",
        "REPLACE (upsert)": "INSERT INTO audit_log (id, at, actor, action, entity, entity_id, details) "
                            "SELECT id, at, 'mallory', action, entity, entity_id, details FROM audit_log "
                            "ON CONFLICT (id) DO UPDATE SET actor = excluded.actor",
        "TRUNCATE": "TRUNCATE audit_log",
    },
}


def test_audit_log_is_append_only(url):
    engine = db.open_database(url)
    with db.write_tx(engine) as conn:
        db.log_change(conn, actor="ana", action="decide", entity="bin", entity_id="00001", details={"x": 1})
    for statement in TAMPERING[engine.dialect.name].values():
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.write_tx(engine) as conn:
            conn.exec_driver_sql(statement)
    with db.write_tx(engine) as conn:  # appending still works
        db.log_change(conn, actor="ben", action="decide", entity="bin", entity_id="00002")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.audit_log.c.id, db.audit_log.c.actor).order_by(db.audit_log.c.id)).all()
    assert [actor for _, actor in rows] == ["ana", "ben"]


def _bin_with_history(engine, bin_id: str) -> None:
    now = db.utcnow()
    with db.write_tx(engine) as conn:
        version = conn.execute(db.model_versions.insert().values(
            name=f"v-{bin_id}", artifact_uri="/m", arch="resnet18", image_size=64, max_count=5, config={},
            metrics={}, created_at=now)).inserted_primary_key[0]
        conn.execute(db.bins.insert().values(id=bin_id, image_uri="x.jpg", items=[], search_text=bin_id,
                                             source="upload", created_at=now, updated_at=now))
        # the predictions table as version 4 left it (later columns such as beyond_range do not exist yet)
        v4_predictions = sa.table("predictions", *(sa.column(c) for c in (
            "bin_id", "model_version_id", "predicted_count", "decoded_count", "probabilities", "created_at", "settled",
            "queued")))
        conn.execute(v4_predictions.insert().values(bin_id=bin_id, model_version_id=version, predicted_count=1,
                                                    decoded_count=1, probabilities="[]", created_at=now,
                                                    settled=False, queued=False))
        conn.execute(db.reviews.insert().values(bin_id=bin_id, decision="dismiss", reviewer="ana", note="",
                                                model_version_id=version, created_at=now))


def _count(engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_foreign_keys_are_enforced_and_deleting_a_bin_takes_its_history(url):
    engine = db.open_database(url)
    _bin_with_history(engine, "b1")
    _bin_with_history(engine, "b2")
    with db.write_tx(engine) as conn:
        conn.execute(db.bins.delete().where(db.bins.c.id == "b1"))
    with engine.connect() as conn:
        assert set(conn.execute(sa.select(db.reviews.c.bin_id)).scalars()) == {"b2"}
        assert set(conn.execute(sa.select(db.predictions.c.bin_id)).scalars()) == {"b2"}
    with pytest.raises(sa.exc.IntegrityError), db.write_tx(engine) as conn:  # a review of no bin
        conn.execute(db.reviews.insert().values(bin_id="nope", decision="dismiss", reviewer="ana", note="",
                                                created_at=db.utcnow()))
    with pytest.raises(sa.exc.IntegrityError), db.write_tx(engine) as conn:  # a model version still referenced
        conn.execute(db.model_versions.delete())
    assert _count(engine, db.reviews) == 1


def test_upgrading_to_enforced_foreign_keys_settles_orphans_and_says_so(url):
    engine = db.make_engine(url)
    assert db.migrate(engine, target=4) == [1, 2, 3, 4]
    _bin_with_history(engine, "kept")
    _bin_with_history(engine, "gone")
    with db.write_tx(engine) as conn:  # before version 5 nothing stopped this
        conn.execute(db.bins.delete().where(db.bins.c.id == "gone"))
        conn.execute(db.reviews.insert().values(bin_id="kept", decision="unsure", reviewer="bo", note="",
                                                model_version_id=999, created_at=db.utcnow()))
    assert _count(engine, db.reviews) == 3
    assert db.migrate(engine) == [5, 6]
    with engine.connect() as conn:
        kept = conn.execute(sa.select(db.reviews.c.bin_id, db.reviews.c.model_version_id)
                            .order_by(db.reviews.c.id)).all()
        log = conn.execute(sa.select(db.audit_log.c.details).where(db.audit_log.c.action == "fix_orphans")).scalar_one()
    assert [b for b, _ in kept] == ["kept", "kept"] and kept[1][1] is None
    assert log == {"predictions": 1, "reviews": 2}  # one review deleted, one unlinked from a missing model
    assert _count(engine, db.predictions) == 1


def test_state_values_round_trip(url):
    engine = db.open_database(url)
    with db.write_tx(engine) as conn:
        assert db.get_state(conn, "active_model", 7) == 7
        db.set_state(conn, "active_model", 3)
        db.set_state(conn, "active_model", {"id": 4})
    with engine.connect() as conn:
        assert db.get_state(conn, "active_model") == {"id": 4}


def _increment_many(url: str, n: int) -> None:
    import time

    engine = db.make_engine(url)
    for _ in range(n):
        with db.write_tx(engine) as conn:  # read, then write: needs the write lock from the start
            value = db.get_state(conn, "counter", 0)
            time.sleep(0.003)  # widen the read-to-write window so the two processes really race
            db.set_state(conn, "counter", value + 1)


def test_concurrent_writers_from_two_processes_lose_nothing(url):
    db.open_database(url).dispose()
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_increment_many, args=(url, 40)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    with db.make_engine(url).connect() as conn:
        assert db.get_state(conn, "counter") == 80


def _migrate_at_once(url: str, barrier, results) -> None:
    engine = db.make_engine(url)
    barrier.wait()
    results.put(db.migrate(engine))


def test_two_servers_starting_at_once_migrate_an_empty_database_once(url):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    servers = [ctx.Process(target=_migrate_at_once, args=(url, barrier, results)) for _ in range(2)]
    for s in servers:
        s.start()
    for s in servers:
        s.join(120)
        assert s.exitcode == 0
    applied = sorted((results.get(timeout=5), results.get(timeout=5)), key=len)
    assert applied == [[], list(range(1, db.LATEST_VERSION + 1))]  # one did all the work, the other none
    engine = db.make_engine(url)
    with engine.connect() as conn:
        versions = conn.execute(sa.select(db.schema_version.c.version)).scalars().all()
    assert sorted(versions) == list(range(1, db.LATEST_VERSION + 1))


def test_a_failed_upgrade_leaves_the_database_as_it_was(url, monkeypatch):
    engine = db.open_database(url)

    def half_done(conn):
        conn.exec_driver_sql("CREATE TABLE half_done (id INTEGER)")
        raise RuntimeError("migration 7 failed half-way")

    monkeypatch.setattr(db, "MIGRATIONS", (*db.MIGRATIONS, db.Migration(7, "fails", half_done)))
    with pytest.raises(RuntimeError, match="half-way"):
        db.migrate(engine, target=7)
    assert db.current_version(engine) == db.LATEST_VERSION
    assert not sa.inspect(engine).has_table("half_done")


def test_the_database_owner_migrates_without_being_a_superuser(pg_server):
    """The README's setup: `createdb --owner=binaudit binaudit`, servers connect as that role (pg_trgm is trusted)."""
    role = "binaudit_owner"
    pg_server.admin(f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN PASSWORD 'secret' NOSUPERUSER")
    name = pg_server.create_database()
    pg_server.admin(f'ALTER DATABASE "{name}" OWNER TO {role}')
    engine = db.make_engine(pg_server.url(name).replace("postgres@", f"{role}:secret@"))
    assert db.migrate(engine) == list(range(1, db.LATEST_VERSION + 1))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_user").scalar() == role
        assert conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar() is False
        assert conn.exec_driver_sql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").scalar() == 1
    engine.dispose()
    pg_server.drop_database(name)
    pg_server.admin(f"DROP ROLE {role}")


def test_readers_do_not_wait_for_a_writer(url):
    engine = db.open_database(url)
    with db.write_tx(engine) as conn:
        db.set_state(conn, "counter", 1)
    with db.write_tx(engine) as writer:  # holds the write lock, uncommitted change
        db.set_state(writer, "counter", 2)
        with engine.connect() as reader:
            if engine.dialect.name == "postgresql":
                reader.exec_driver_sql("SET statement_timeout = 5000")  # a blocked read fails instead of hanging
            started = time.monotonic()
            assert db.get_state(reader, "counter") == 1  # the committed value, at once
            assert time.monotonic() - started < 5


def test_a_server_that_cannot_start_says_why(tmp_path):
    from tests.postgres_server import PostgresServer, PostgresUnavailable

    server = PostgresServer(bindir=tmp_path)  # no initdb there
    with pytest.raises((PostgresUnavailable, OSError), match="initdb"):
        server.start()
    server.stop()
