"""The project database: migrations, WAL, the append-only audit log, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import sqlalchemy as sa

from binaudit import db


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'binaudit.db'}"


def test_fresh_database_is_at_the_latest_version_in_wal_mode(url):
    engine = db.open_database(url)
    assert db.current_version(engine) == db.LATEST_VERSION
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert db.migrate(engine) == []  # nothing left to apply


def test_an_older_database_survives_the_upgrade(url):
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
        for bin_id, decided in (("b1", later), ("b2", None)):
            conn.execute(sa.text("INSERT INTO bins (id, image_uri, expected_count, items, search_text, source, "
                                 "created_at, updated_at, decided_at, queued, row_version) VALUES (:id, 'x.jpg', 2, "
                                 "'[]', :text, 'upload', :t, :t, :d, 0, 1)"),
                         {"id": bin_id, "text": f"{bin_id} acme teapot", "t": now, "d": decided})
            conn.execute(sa.text("INSERT INTO predictions (bin_id, model_version_id, predicted_count, decoded_count, "
                                 "probabilities, mismatch_probability, created_at) VALUES (:id, 1, 2, 2, '[]', 0.9, :t)"),
                         {"id": bin_id, "t": now})

    assert db.migrate(engine) == [4]
    fresh = db.open_database(url.replace("binaudit.db", "fresh.db"))
    for table in ("jobs", "bins", "predictions", "reviews", "audit_log"):
        upgraded_cols = {c["name"] for c in sa.inspect(engine).get_columns(table)}
        assert upgraded_cols == {c["name"] for c in sa.inspect(fresh).get_columns(table)}, table
        upgraded_idx = {i["name"] for i in sa.inspect(engine).get_indexes(table)}
        assert upgraded_idx == {i["name"] for i in sa.inspect(fresh).get_indexes(table)}, table
    with engine.connect() as conn:
        job = conn.execute(sa.select(db.jobs).where(db.jobs.c.id == "train-1")).mappings().one()
        assert job["params"] == {"epochs": 2} and job["stop_requested"] is False and job["output"] is None
        assert conn.execute(sa.select(db.model_versions.c.val_accuracy)).scalar() == 0.5
        settled = dict(conn.execute(sa.select(db.predictions.c.bin_id, db.predictions.c.settled)).all())
        assert settled == {"b1": True, "b2": False}  # backfilled from the decisions
        found = conn.exec_driver_sql("SELECT count(*) FROM bins_fts WHERE bins_fts MATCH 'teapot'").scalar()
        assert found == 2  # rows from before the search index are in it


def test_audit_log_is_append_only(url):
    engine = db.open_database(url)
    with db.write_tx(engine) as conn:
        db.log_change(conn, actor="ana", action="decide", entity="bin", entity_id="00001", details={"x": 1})
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.write_tx(engine) as conn:
        conn.execute(db.audit_log.update().values(actor="mallory"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.write_tx(engine) as conn:
        conn.execute(db.audit_log.delete())
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.audit_log.c.actor)).scalars().all() == ["ana"]


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
    db.open_database(url)
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_increment_many, args=(url, 40)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    with db.make_engine(url).connect() as conn:
        assert db.get_state(conn, "counter") == 80
