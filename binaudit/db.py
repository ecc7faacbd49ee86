"""The project database: engine, schema, migrations.

SQLAlchemy Core over SQLite by default (a file in the workspace, WAL mode), or PostgreSQL for a
team with several dashboard servers. The schema is versioned: `migrate()` applies every migration newer
than the database's recorded version, in order, in one transaction, so an existing database
survives an upgrade (or, if one fails, stays as it was).

Tables (latest version):
    app_state        key/value (the active model version, ...)
    jobs             training / tuning / deployment / transform jobs of either backend
    model_versions   the model registry
    bins             bin photos and their metadata (expected count, items)
    predictions      one row per (bin, model version)
    reviews          analysts' decisions, append-only history
    problems         bad images / metadata met while importing or scoring
    audit_log        append-only log of every change

Writers use `write_tx`: on SQLite `BEGIN IMMEDIATE`, on PostgreSQL an advisory lock, so two
processes that both read and then write wait for each other (instead of failing with "database is
locked" or losing an update); readers never block writers (WAL mode, MVCC).

PostgreSQL (15 or newer, psycopg 3: `postgresql+psycopg://...`) runs the same migrations: they hold
an advisory lock, so servers starting together against an empty database migrate it once. The audit
log is append-only on both (triggers); foreign keys are enforced on both (SQLite: `PRAGMA
foreign_keys=ON` on every connection).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()


# Column lengths: SQLite ignores them, PostgreSQL enforces them. Free-form text (paths, URIs, actors, logged
# entity ids) is TEXT; a bin id is at most 200 characters (audit.imports.is_safe_bin_id); a reviewer's
# name at most 200 (audit.reviews.validate).


def utcnow() -> dt.datetime:
    """Naive UTC, microsecond precision: sorts correctly as text in SQLite."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# ---------------------------------------------------------------- tables (latest schema)

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

app_state = sa.Table(
    "app_state", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),  # training | tuning | deployment | transform
    sa.Column("backend", sa.String(20), nullable=False),  # local | sagemaker
    sa.Column("status", sa.String(20), nullable=False),  # Pending | InProgress | Completed | Failed | Stopped
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("started_at", sa.DateTime),
    sa.Column("ended_at", sa.DateTime),
    sa.Column("log_path", sa.Text),
    sa.Column("metrics", sa.JSON),  # per-epoch dicts parsed from the log
    sa.Column("failure_reason", sa.Text),
    sa.Column("pid", sa.Integer),  # local backend: the worker process
    sa.Column("external_id", sa.String(300)),  # SageMaker job / endpoint name
    sa.Column("parent_id", sa.String(100), sa.ForeignKey("jobs.id")),  # a tuning trial's tuning job
    sa.Column("output", sa.JSON),  # where results went: model dir, endpoint, output path
    sa.Column("stop_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("row_version", sa.Integer, nullable=False, default=1),
    sa.Index("ix_jobs_created", "created_at"),
    sa.Index("ix_jobs_parent", "parent_id"),
)

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("job_id", sa.String(100), sa.ForeignKey("jobs.id")),
    sa.Column("artifact_uri", sa.Text, nullable=False),  # local model dir or s3://.../model.tar.gz
    sa.Column("arch", sa.String(50), nullable=False),
    sa.Column("image_size", sa.Integer, nullable=False),
    sa.Column("max_count", sa.Integer, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("val_accuracy", sa.Float),
    sa.Column("val_rmse", sa.Float),
    sa.Column("dataset_fingerprint", sa.String(100)),
    sa.Column("manifest_sha256", sa.String(100)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("promoted_at", sa.DateTime),
)

bins = sa.Table(
    "bins", metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("image_uri", sa.Text, nullable=False),  # path inside the workspace, or s3://
    sa.Column("expected_count", sa.Integer),  # None: nothing known about the stock record
    sa.Column("items", sa.JSON, nullable=False),  # [{asin, name, quantity, length_in, ...}]
    sa.Column("search_text", sa.Text, nullable=False, default=""),  # lower-cased names and ASINs
    sa.Column("source", sa.String(50), nullable=False),  # dataset | folder | s3 | upload
    sa.Column("split", sa.String(10)),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # the latest review decision, denormalised so queue queries need no join over history
    sa.Column("decision", sa.String(30)),
    sa.Column("recounted_count", sa.Integer),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", sa.DateTime),
    sa.Column("queued", sa.Boolean, nullable=False, default=False),  # sent to the queue by hand
    sa.Column("row_version", sa.Integer, nullable=False, default=1),  # optimistic concurrency
    sa.Index("ix_bins_expected", "expected_count"),
    sa.Index("ix_bins_split", "split"),
    sa.Index("ix_bins_decided", "decided_at"),
    sa.Index("ix_bins_decision", "decision"),
)

_probability_desc = sa.desc(sa.column("mismatch_probability"))  # rank order: highest first, ties by bin id

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bin_id", sa.String(200), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("predicted_count", sa.Integer, nullable=False),  # argmax
    sa.Column("decoded_count", sa.Integer, nullable=False),  # minimises expected squared error
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("expected_count", sa.Integer),  # the stock record at scoring time
    sa.Column("mismatch_probability", sa.Float),
    sa.Column("argmax_differs", sa.Boolean),
    # the record is above a closed model's top count: no mismatch probability (NULL), never queued on its own
    sa.Column("beyond_range", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # Queue facts copied from the bin so the queue is one index walk over this table (no join to filter):
    # settled: a decision on the bin came at or after this prediction; queued: an analyst sent the bin by hand.
    # Written only by audit.reviews and audit.scoring, which keep them equal to what bins says.
    sa.Column("settled", sa.Boolean, nullable=False, default=False),
    sa.Column("queued", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("bin_id", "model_version_id", name="uq_prediction_bin_model"),
    sa.Index("ix_pred_model_predicted", "model_version_id", "predicted_count"),
    sa.Index("ix_pred_queue", "model_version_id", "settled", _probability_desc, "bin_id", "queued"),
    sa.Index("ix_pred_hand_queued", "model_version_id", "queued", "settled"),
    sa.Index("ix_pred_model_prob", "model_version_id", _probability_desc, "bin_id"),
    sa.Index("ix_pred_model_agree", "model_version_id", "argmax_differs"),
    sa.Index("ix_pred_model_beyond", "model_version_id", "beyond_range"),
)

reviews = sa.Table(
    "reviews", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bin_id", sa.String(200), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False),
    sa.Column("decision", sa.String(30), nullable=False),  # confirm_mismatch | dismiss | unsure
    sa.Column("recounted_count", sa.Integer),
    sa.Column("reviewer", sa.String(200), nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id")),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_reviews_bin", "bin_id", "created_at"),
    sa.Index("ix_reviews_created", "created_at"),
)

problems = sa.Table(
    "problems", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bin_id", sa.String(200)),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),  # import | score
    sa.Column("model_version_id", sa.Integer),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_problems_stage", "stage", "model_version_id"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("entity", sa.String(30), nullable=False),
    sa.Column("entity_id", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Index("ix_audit_entity", "entity", "entity_id"),
)


# ---------------------------------------------------------------- migrations

@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    upgrade: Callable[[Connection], None]


def _frozen(table: sa.Table, m: sa.MetaData, *, exclude: tuple[str, ...] = (),
            extra_indexes: tuple[tuple[str, ...], ...] = (), name: str | None = None,
            foreign_keys: bool = False, indexes: bool = True) -> sa.Table:
    """A copy of `table` as an earlier migration created it: without the columns and indexes later ones add.

    Rule for new migrations: a migration that changes a table lists what it added (columns and index
    names) in the `exclude` of every earlier migration creating that table, and what it dropped in their
    `extra_indexes` (name, *columns), so a fresh database and an upgraded one end in the same shape.
    Versions 1 and 2 created their tables without foreign keys (`Column._copy` leaves them out); version 5
    adds them (`foreign_keys=True`: the declared ones, named `fk_<table>_<column>`).
    """
    keep = [c for c in table.columns if c.name not in exclude]
    kept_names = {c.name for c in keep}
    extras: list[sa.SchemaItem] = [
        sa.Index(i.name, *[c.name for c in i.columns]) for i in table.indexes
        if indexes and {c.name for c in i.columns} <= kept_names and i.name not in exclude
    ]
    extras += [sa.Index(name, *columns) for name, *columns in extra_indexes]
    extras += [sa.UniqueConstraint(*[c.name for c in u.columns], name=u.name)
               for u in table.constraints if isinstance(u, sa.UniqueConstraint) and len(u.columns) > 1]
    if foreign_keys:
        extras += [sa.ForeignKeyConstraint([fk.parent.name], [fk.target_fullname], ondelete=fk.ondelete,
                                           name=f"fk_{table.name}_{fk.parent.name}")
                   for fk in table.foreign_keys if fk.parent.name in kept_names]
    return sa.Table(name or table.name, m, *[c._copy() for c in keep], *extras)  # _copy: Column.copy() is deprecated


def _v1_jobs_and_registry(conn: Connection) -> None:
    m = sa.MetaData()
    for table in (app_state, jobs, model_versions):
        _frozen(table, m, exclude=("output", "stop_requested") if table is jobs else ()).create(conn)


_V4_PREDICTION_INDEXES = ("ix_pred_queue", "ix_pred_hand_queued", "ix_pred_model_prob", "ix_pred_model_agree")
_V6_PREDICTION_ADDS = ("beyond_range", "ix_pred_model_beyond")
_ADDED_AFTER_V5 = {"predictions": _V6_PREDICTION_ADDS}  # columns and indexes of later migrations, per table


def _v2_audit(conn: Connection) -> None:
    m = sa.MetaData()
    sa.Table("model_versions", m, sa.Column("id", sa.Integer, primary_key=True))  # target of the foreign keys
    _frozen(bins, m, exclude=("ix_bins_decision",)).create(conn)
    for table in (reviews, problems, audit_log):
        _frozen(table, m).create(conn)
    _frozen(predictions, m, exclude=("settled", "queued", *_V4_PREDICTION_INDEXES, *_V6_PREDICTION_ADDS),
            extra_indexes=(("ix_pred_model_mismatch", "model_version_id", "mismatch_probability"),)).create(conn)
    if conn.dialect.name == "sqlite":  # the audit log is append-only, enforced by the database itself
        for op in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )


def _v3_job_outputs(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN output JSON")
    # FALSE, not 0: PostgreSQL refuses an integer default for a boolean (SQLite reads FALSE as 0)
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN stop_requested BOOLEAN NOT NULL DEFAULT FALSE")


def _v4_fast_queue_and_search(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN settled BOOLEAN NOT NULL DEFAULT FALSE")
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN queued BOOLEAN NOT NULL DEFAULT FALSE")
    conn.exec_driver_sql(
        "UPDATE predictions SET "
        "settled = COALESCE((SELECT b.decided_at IS NOT NULL AND b.decided_at >= predictions.created_at "
        "                    FROM bins b WHERE b.id = predictions.bin_id), FALSE), "
        "queued = COALESCE((SELECT b.queued FROM bins b WHERE b.id = predictions.bin_id), FALSE)")
    conn.exec_driver_sql("DROP INDEX ix_pred_model_mismatch")
    postgresql = conn.dialect.name == "postgresql"
    for index in (*predictions.indexes, *bins.indexes):
        if index.name in _PG_RANK_INDEXES and postgresql:
            conn.exec_driver_sql(f"CREATE INDEX {index.name} ON predictions {_PG_RANK_INDEXES[index.name]}")
        elif index.name in (*_V4_PREDICTION_INDEXES, "ix_bins_decision"):
            index.create(conn)
    if postgresql:
        create_postgresql_search_index(conn)
    else:
        create_sqlite_search_index(conn)


# PostgreSQL sorts NULLs first in a DESC index; the queue ranks them last (SQLite's order), so its rank
# indexes say NULLS LAST, or the planner could not walk them for `ORDER BY ... DESC NULLS LAST`.
_PG_RANK_INDEXES = {
    "ix_pred_queue": "(model_version_id, settled, mismatch_probability DESC NULLS LAST, bin_id, queued)",
    "ix_pred_model_prob": "(model_version_id, mismatch_probability DESC NULLS LAST, bin_id)",
}


def create_postgresql_search_index(conn: Connection) -> None:
    """A pg_trgm GIN index answers substring searches (`search_text LIKE '%...%'`, three characters or more).

    pg_trgm ships with PostgreSQL (Debian: postgresql-contrib, part of `postgresql`) and is a trusted
    extension: the database's owner may create it without being a superuser.
    """
    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    conn.exec_driver_sql("CREATE INDEX ix_bins_search_trgm ON bins USING gin (search_text gin_trgm_ops)")


def create_sqlite_search_index(conn: Connection) -> None:
    """FTS5 with the trigram tokenizer answers substring searches (LIKE '%...%') from an index.

    External content: the index reads `bins.search_text`, kept in step by triggers. (On PostgreSQL the
    same job is done by the pg_trgm GIN index of `create_postgresql_search_index`, which serves LIKE itself.)
    """
    conn.exec_driver_sql("CREATE VIRTUAL TABLE bins_fts USING fts5(search_text, content='bins', "
                         "content_rowid='rowid', tokenize='trigram')")
    conn.exec_driver_sql("CREATE TRIGGER bins_fts_insert AFTER INSERT ON bins BEGIN "
                         "INSERT INTO bins_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END")
    conn.exec_driver_sql("CREATE TRIGGER bins_fts_delete AFTER DELETE ON bins BEGIN "
                         "INSERT INTO bins_fts(bins_fts, rowid, search_text) VALUES ('delete', old.rowid, "
                         "old.search_text); END")
    conn.exec_driver_sql("CREATE TRIGGER bins_fts_update AFTER UPDATE OF search_text ON bins BEGIN "
                         "INSERT INTO bins_fts(bins_fts, rowid, search_text) VALUES ('delete', old.rowid, "
                         "old.search_text); "
                         "INSERT INTO bins_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END")
    conn.exec_driver_sql("INSERT INTO bins_fts(bins_fts) VALUES ('rebuild')")


APPEND_ONLY = "audit_log is append-only"


def _audit_log_append_only(conn: Connection) -> None:
    """UPDATE, DELETE, REPLACE (and TRUNCATE) of audit_log rows fail, whichever client sends them.

    SQLite: version 2's BEFORE UPDATE/DELETE triggers miss `REPLACE INTO` / `INSERT OR REPLACE`, which
    delete the old row without firing delete triggers (unless a connection turns recursive_triggers on);
    a BEFORE INSERT trigger refusing an id that exists closes it. PostgreSQL: row triggers for UPDATE
    and DELETE (an upsert's DO UPDATE fires the former) and a statement trigger for TRUNCATE.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            "CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log "
            "WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id) "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")
        return
    conn.exec_driver_sql(
        "CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{APPEND_ONLY}' USING ERRCODE = 'insufficient_privilege'; END $$")
    conn.exec_driver_sql("CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log "
                         "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()")
    conn.exec_driver_sql("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                         "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()")


# Rows that break a foreign key before version 5 enforces them: what the declared ON DELETE rule would have done.
_ORPHANS = (
    ("predictions", "DELETE FROM predictions WHERE bin_id NOT IN (SELECT id FROM bins) "
                    "OR model_version_id NOT IN (SELECT id FROM model_versions)"),
    ("reviews", "DELETE FROM reviews WHERE bin_id NOT IN (SELECT id FROM bins)"),
    ("reviews", "UPDATE reviews SET model_version_id = NULL "
                "WHERE model_version_id IS NOT NULL AND model_version_id NOT IN (SELECT id FROM model_versions)"),
    ("model_versions", "UPDATE model_versions SET job_id = NULL "
                       "WHERE job_id IS NOT NULL AND job_id NOT IN (SELECT id FROM jobs)"),
    ("jobs", "UPDATE jobs SET parent_id = NULL WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM jobs)"),
)
_WITH_FOREIGN_KEYS = (jobs, model_versions, predictions, reviews)  # parents before children


def _enforced_foreign_keys(conn: Connection) -> None:
    """The declared foreign keys, for real: versions 1 and 2 created the tables without them.

    Orphans first get what the declared rule would have done (rows of deleted bins go, a missing model
    version or job becomes NULL), counted in the audit log. SQLite cannot add a constraint to a table, so
    the four tables are rebuilt (create, copy, drop, rename: migrate() runs with foreign_keys off and checks
    them before committing, the order SQLite's documentation prescribes).
    """
    fixed = {}
    for table, statement in _ORPHANS:
        if count := conn.exec_driver_sql(statement).rowcount:
            fixed[table] = fixed.get(table, 0) + count
    if fixed:
        log_change(conn, actor="migration", action="fix_orphans", entity="database", entity_id="5", details=fixed)
    targets = sa.MetaData()  # what the foreign keys point at
    for table in (bins, jobs, model_versions):
        sa.Table(table.name, targets, sa.Column("id", table.c.id.type, primary_key=True))
    if conn.dialect.name != "sqlite":
        for table in _WITH_FOREIGN_KEYS:
            for fk in sorted(table.foreign_keys, key=lambda fk: fk.parent.name):
                target = fk.column
                conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} ADD CONSTRAINT fk_{table.name}_{fk.parent.name} FOREIGN KEY "
                    f"({fk.parent.name}) REFERENCES {target.table.name} ({target.name})"
                    + (f" ON DELETE {fk.ondelete}" if fk.ondelete else ""))
        return
    for table in _WITH_FOREIGN_KEYS:
        later = _ADDED_AFTER_V5.get(table.name, ())  # the table as version 5 leaves it
        _frozen(table, targets, name=f"{table.name}_new", foreign_keys=True, indexes=False,
                exclude=later).create(conn)
        columns = ", ".join(f'"{c.name}"' for c in table.columns if c.name not in later)
        conn.exec_driver_sql(f"INSERT INTO {table.name}_new ({columns}) SELECT {columns} FROM {table.name}")
        conn.exec_driver_sql(f"DROP TABLE {table.name}")
        conn.exec_driver_sql(f"ALTER TABLE {table.name}_new RENAME TO {table.name}")
        for index in table.indexes:
            if index.name not in later:
                index.create(conn)
    if broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all():
        raise RuntimeError(f"migration 5: foreign keys still broken after the clean-up: {broken[:5]}")


def _v5_enforced_integrity(conn: Connection) -> None:
    _audit_log_append_only(conn)
    _enforced_foreign_keys(conn)


def _v6_beyond_range(conn: Connection) -> None:
    """Every model before this version was closed (counts 0..max_count): a prediction whose record is above that
    had a mismatch probability of 1.0 (p(count <= N)) whatever its photo showed, and an argmax that always
    differed. Both are cleared and the prediction marked beyond the model's range, so it leaves the queue."""
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN beyond_range BOOLEAN NOT NULL DEFAULT FALSE")
    conn.exec_driver_sql(
        "UPDATE predictions SET beyond_range = TRUE, mismatch_probability = NULL, argmax_differs = NULL "
        "WHERE expected_count > (SELECT mv.max_count FROM model_versions mv "
        "                        WHERE mv.id = predictions.model_version_id)")
    for index in predictions.indexes:
        if index.name in _V6_PREDICTION_ADDS:
            index.create(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs, model registry, app state", _v1_jobs_and_registry),
    Migration(2, "bins, predictions, reviews, problems, append-only audit log", _v2_audit),
    Migration(3, "jobs: output locations and stop requests", _v3_job_outputs),
    Migration(4, "queue facts on predictions, queue and browse indexes, substring search index", _v4_fast_queue_and_search),
    Migration(5, "audit log refuses REPLACE (SQLite) and every change (PostgreSQL); foreign keys enforced",
              _v5_enforced_integrity),
    Migration(6, "predictions beyond a closed model's range: no mismatch probability", _v6_beyond_range),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(engine: Engine) -> int:
    if not sa.inspect(engine).has_table("schema_version"):
        return 0
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0


MIGRATION_LOCK = 0x42696E4175646974  # "BinAudit": the PostgreSQL advisory lock that serialises migrations


@contextmanager
def _foreign_keys_off(conn: Connection) -> Iterator[None]:
    """SQLite only: table rebuilds (migration 5) need foreign keys off, and the pragma is a no-op in a transaction."""
    raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
    if raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")


def migrate(engine: Engine, target: int = LATEST_VERSION) -> list[int]:
    """Apply pending migrations up to `target`, in order, in one transaction; returns the versions applied.

    The transaction holds the migration lock from its first statement (SQLite: BEGIN IMMEDIATE; PostgreSQL:
    a transaction-level advisory lock), so two servers starting at once against an empty database do not
    both migrate it: the second waits, then finds nothing left to do. A migration that fails rolls the whole
    upgrade back: the database stays at its old version, intact.
    """
    if target <= current_version(engine):
        return []
    applied = []
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_immediate=True)
        with _foreign_keys_off(conn), conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            schema_version.create(conn, checkfirst=True)
            done = set(conn.execute(sa.select(schema_version.c.version)).scalars())
            for migration in MIGRATIONS:
                if migration.version > target:
                    break
                if migration.version in done:  # applied earlier, or by another process while this one waited
                    continue
                migration.upgrade(conn)
                conn.execute(schema_version.insert().values(
                    version=migration.version, description=migration.description, applied_at=utcnow()))
                applied.append(migration.version)
    return applied


# ---------------------------------------------------------------- engine

def _wal_mode(cursor) -> None:
    """Switch a new database file to WAL. Two processes creating it at once: the loser of the switch gets
    "database is locked" at once (SQLite does not wait for this lock), so it retries; then the file is WAL."""
    for attempt in range(200):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 199:
                raise
            time.sleep(0.05)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below issues BEGIN itself
    cursor = dbapi_conn.cursor()
    _wal_mode(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("sqlite_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, *, create_dirs: bool = True) -> Engine:
    """An engine for `url`; SQLite files get WAL mode, foreign keys and a busy timeout.

    PostgreSQL: `postgresql+psycopg://user:password@host:port/database` (psycopg 3); a bare
    `postgresql://` URL is read as the same driver.
    """
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if create_dirs and path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, pool_pre_ping=True)


def open_database(url: str) -> Engine:
    """An engine with the schema brought up to date."""
    engine = make_engine(url)
    migrate(engine)
    return engine


WRITE_LOCK = 0x42696E4157726974  # "BinAWrit": PostgreSQL's advisory lock for write_tx


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A read-write transaction that holds the database's write lock from its first statement.

    SQLite: BEGIN IMMEDIATE. PostgreSQL: a transaction-level advisory lock, so code that reads and then
    writes (a state value, an image-root list, a job claim) is correct there too, one writer at a time,
    as on SQLite. Writes are short; readers are never blocked, on either database.
    """
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
            yield conn


# ---------------------------------------------------------------- small shared helpers

def log_change(conn: Connection, *, actor: str, action: str, entity: str, entity_id: str | int,
               details: dict | None = None) -> None:
    """Append one row to the audit log, inside the caller's transaction."""
    conn.execute(audit_log.insert().values(
        at=utcnow(), actor=actor, action=action, entity=entity, entity_id=str(entity_id),
        details=json.loads(json.dumps(details or {}, default=str)),
    ))


def get_state(conn: Connection, key: str, default: object = None) -> object:
    value = conn.execute(sa.select(app_state.c.value).where(app_state.c.key == key)).scalar()
    return default if value is None else value


def set_state(conn: Connection, key: str, value: object) -> None:
    updated = conn.execute(app_state.update().where(app_state.c.key == key).values(value=value, updated_at=utcnow()))
    if updated.rowcount == 0:
        conn.execute(app_state.insert().values(key=key, value=value, updated_at=utcnow()))


def _dialect_insert(conn: Connection, table: sa.Table):
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"no ON CONFLICT support for {conn.dialect.name}")
    return insert(table)


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict], key: tuple[str, ...]) -> int:
    """Insert rows, skipping those whose `key` already exists (idempotent writes); returns rows inserted."""
    if not rows:
        return 0
    # counted from RETURNING: a many-row execute's rowcount is -1 on psycopg
    stmt = _dialect_insert(conn, table).on_conflict_do_nothing(index_elements=list(key)).returning(table.c[key[0]])
    return len(conn.execute(stmt, rows).all())


def upsert(conn: Connection, table: sa.Table, rows: list[dict], key: tuple[str, ...], update: tuple[str, ...]) -> None:
    """Insert rows, or update the `update` columns of those whose `key` exists."""
    if not rows:
        return
    stmt = _dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(index_elements=list(key), set_={c: stmt.excluded[c] for c in update})
    conn.execute(stmt, rows)
