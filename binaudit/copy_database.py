"""Copy every row of one BinAudit database into another, empty one: a one-machine SQLite workspace
becoming a team's PostgreSQL database (or a PostgreSQL database copied back for a laptop).

The target is migrated to the latest schema first; the source must be at the latest version too
(open it with this version of BinAudit once). Rows keep their ids, the audit log included (appending
to an empty log is allowed), so history, decisions and the active model survive the move.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from binaudit import db

# parents before children, so every foreign key finds its row
TABLES = (db.app_state, db.jobs, db.model_versions, db.bins, db.predictions, db.reviews, db.problems, db.audit_log)
CHUNK = 5000


class CopyError(ValueError):
    """The copy cannot be made as asked; nothing was written."""


def _rows(conn: sa.Connection, table: sa.Table):
    order = [table.c.parent_id.is_not(None)] if table is db.jobs else []  # a tuning job before its trials
    result = conn.execution_options(yield_per=CHUNK).execute(sa.select(table).order_by(*order, *table.primary_key))
    for chunk in result.mappings().partitions():
        yield [dict(r) for r in chunk]


def copy_database(source: Engine, target: Engine) -> dict[str, int]:
    """Rows copied per table. Refuses a source that is not at the latest version or a target holding bins or jobs."""
    if db.current_version(source) != db.LATEST_VERSION:
        raise CopyError(f"the source database is at version {db.current_version(source)}, not "
                        f"{db.LATEST_VERSION}: open it once with this BinAudit (python -m binaudit migrate)")
    db.migrate(target)
    counts: dict[str, int] = {}
    with source.connect() as src, db.write_tx(target) as dst:
        for table in (db.bins, db.jobs, db.model_versions):
            if dst.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
                raise CopyError(f"the target database already has {table.name}: copy into an empty database")
        dst.execute(db.app_state.delete())  # a fresh target may hold nothing but defaults
        for table in TABLES:
            counts[table.name] = 0
            for rows in _rows(src, table):
                dst.execute(table.insert(), rows)
                counts[table.name] += len(rows)
        if dst.dialect.name == "postgresql":  # explicit ids do not move the id sequences on
            for table in TABLES:
                if "id" in table.c and isinstance(table.c.id.type, sa.Integer):
                    dst.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                        f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)")
    return counts
