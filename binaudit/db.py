"""The project database: engine, schema, migrations.

SQLAlchemy Core over SQLite by default (a file in the workspace, WAL mode); the same schema
serves a PostgreSQL URL. The schema is versioned: `migrate()` applies every migration newer
than the database's recorded version, in order, each in its own transaction, so an existing
database survives an upgrade.

Tables (latest version):
    app_state        key/value (the active model version, ...)
    jobs             training / tuning / deployment / transform jobs of either backend
    model_versions   the model registry
    bins             bin photos and their metadata (expected count, items)
    predictions      one row per (bin, model version)
    reviews          analysts' decisions, append-only history
    problems         bad images / metadata met while importing or scoring
    audit_log        append-only log of every change

SQLite notes: writers use `BEGIN IMMEDIATE` (see `write_tx`) so two processes that both read
and then write wait for each other instead of failing with "database is locked"; readers never
block writers in WAL mode.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()


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
    sa.Column("log_path", sa.String(1000)),
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
    sa.Column("artifact_uri", sa.String(1000), nullable=False),  # local model dir or s3://.../model.tar.gz
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
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("image_uri", sa.String(1000), nullable=False),  # path inside the workspace, or s3://
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
    sa.Column("bin_id", sa.String(100), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("predicted_count", sa.Integer, nullable=False),  # argmax
    sa.Column("decoded_count", sa.Integer, nullable=False),  # minimises expected squared error
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("expected_count", sa.Integer),  # the stock record at scoring time
    sa.Column("mismatch_probability", sa.Float),
    sa.Column("argmax_differs", sa.Boolean),
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
)

reviews = sa.Table(
    "reviews", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bin_id", sa.String(100), sa.ForeignKey("bins.id", ondelete="CASCADE"), nullable=False),
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
    sa.Column("bin_id", sa.String(100)),
    sa.Column("file", sa.String(1000), nullable=False),
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
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("entity", sa.String(30), nullable=False),
    sa.Column("entity_id", sa.String(100), nullable=False),
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
            extra_indexes: tuple[tuple[str, ...], ...] = ()) -> sa.Table:
    """A copy of `table` as an earlier migration created it: without the columns and indexes later ones add.

    Rule for new migrations: a migration that changes a table lists what it added (columns and index
    names) in the `exclude` of every earlier migration creating that table, and what it dropped in their
    `extra_indexes` (name, *columns), so a fresh database and an upgraded one end in the same shape.
    """
    keep = [c for c in table.columns if c.name not in exclude]
    kept_names = {c.name for c in keep}
    extras: list[sa.SchemaItem] = [
        sa.Index(i.name, *[c.name for c in i.columns]) for i in table.indexes
        if {c.name for c in i.columns} <= kept_names and i.name not in exclude
    ]
    extras += [sa.Index(name, *columns) for name, *columns in extra_indexes]
    extras += [sa.UniqueConstraint(*[c.name for c in u.columns], name=u.name)
               for u in table.constraints if isinstance(u, sa.UniqueConstraint) and len(u.columns) > 1]
    return sa.Table(table.name, m, *[c._copy() for c in keep], *extras)  # _copy: Column.copy() is deprecated


def _v1_jobs_and_registry(conn: Connection) -> None:
    m = sa.MetaData()
    for table in (app_state, jobs, model_versions):
        _frozen(table, m, exclude=("output", "stop_requested") if table is jobs else ()).create(conn)


_V4_PREDICTION_INDEXES = ("ix_pred_queue", "ix_pred_hand_queued", "ix_pred_model_prob", "ix_pred_model_agree")


def _v2_audit(conn: Connection) -> None:
    m = sa.MetaData()
    sa.Table("model_versions", m, sa.Column("id", sa.Integer, primary_key=True))  # target of the foreign keys
    _frozen(bins, m, exclude=("ix_bins_decision",)).create(conn)
    for table in (reviews, problems, audit_log):
        _frozen(table, m).create(conn)
    _frozen(predictions, m, exclude=("settled", "queued", *_V4_PREDICTION_INDEXES),
            extra_indexes=(("ix_pred_model_mismatch", "model_version_id", "mismatch_probability"),)).create(conn)
    if conn.dialect.name == "sqlite":  # the audit log is append-only, enforced by the database itself
        for op in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )


def _v3_job_outputs(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN output JSON")
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN stop_requested BOOLEAN NOT NULL DEFAULT 0")


def _v4_fast_queue_and_search(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN settled BOOLEAN NOT NULL DEFAULT FALSE")
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN queued BOOLEAN NOT NULL DEFAULT FALSE")
    conn.exec_driver_sql(
        "UPDATE predictions SET "
        "settled = COALESCE((SELECT b.decided_at IS NOT NULL AND b.decided_at >= predictions.created_at "
        "                    FROM bins b WHERE b.id = predictions.bin_id), FALSE), "
        "queued = COALESCE((SELECT b.queued FROM bins b WHERE b.id = predictions.bin_id), FALSE)")
    conn.exec_driver_sql("DROP INDEX ix_pred_model_mismatch")
    for index in (*predictions.indexes, *bins.indexes):
        if index.name in (*_V4_PREDICTION_INDEXES, "ix_bins_decision"):
            index.create(conn)
    if conn.dialect.name == "sqlite":
        create_sqlite_search_index(conn)


def create_sqlite_search_index(conn: Connection) -> None:
    """FTS5 with the trigram tokenizer answers substring searches (LIKE '%...%') from an index.

    External content: the index reads `bins.search_text`, kept in step by triggers. (On PostgreSQL the
    same job is done by a pg_trgm GIN index; BinAudit's queries fall back to LIKE there.)
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


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs, model registry, app state", _v1_jobs_and_registry),
    Migration(2, "bins, predictions, reviews, problems, append-only audit log", _v2_audit),
    Migration(3, "jobs: output locations and stop requests", _v3_job_outputs),
    Migration(4, "queue facts on predictions, queue and browse indexes, substring search index", _v4_fast_queue_and_search),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(engine: Engine) -> int:
    if not sa.inspect(engine).has_table("schema_version"):
        return 0
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0


def migrate(engine: Engine, target: int = LATEST_VERSION) -> list[int]:
    """Apply pending migrations up to `target`; returns the versions applied."""
    schema_version.create(engine, checkfirst=True)
    applied = []
    for migration in MIGRATIONS:
        if migration.version > target:
            break
        with write_tx(engine) as conn:
            done = conn.execute(
                sa.select(schema_version.c.version).where(schema_version.c.version == migration.version)
            ).first()
            if done:  # another process got here first
                continue
            migration.upgrade(conn)
            conn.execute(schema_version.insert().values(
                version=migration.version, description=migration.description, applied_at=utcnow()))
            applied.append(migration.version)
    return applied


# ---------------------------------------------------------------- engine

def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below issues BEGIN itself
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("sqlite_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, *, create_dirs: bool = True) -> Engine:
    """An engine for `url`; SQLite files get WAL mode, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if create_dirs and path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def open_database(url: str) -> Engine:
    """An engine with the schema brought up to date."""
    engine = make_engine(url)
    migrate(engine)
    return engine


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A read-write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_immediate=True)
        with conn.begin():
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
    stmt = _dialect_insert(conn, table).on_conflict_do_nothing(index_elements=list(key))
    return conn.execute(stmt, rows).rowcount


def upsert(conn: Connection, table: sa.Table, rows: list[dict], key: tuple[str, ...], update: tuple[str, ...]) -> None:
    """Insert rows, or update the `update` columns of those whose `key` exists."""
    if not rows:
        return
    stmt = _dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(index_elements=list(key), set_={c: stmt.excluded[c] for c in update})
    conn.execute(stmt, rows)
