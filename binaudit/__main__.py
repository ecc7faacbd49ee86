"""`python -m binaudit migrate`: bring the configured database's schema up to date and say where it stands.

Every dashboard server and every command does the same when it opens the database, so this is
optional: a team runs it once before starting new servers after an upgrade, so no server starts
on a half-migrated database. Several at once are safe (the migration lock). Fatal errors print
one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from binaudit import db
from binaudit.config import ConfigError, load_settings


def _redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m binaudit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending migrations to BINAUDIT_DATABASE_URL (or the workspace's SQLite)")
    parser.parse_args(argv)
    try:
        url = load_settings().resolved_database_url
        engine = db.make_engine(url)
        applied = db.migrate(engine)
    except (ConfigError, sa.exc.SQLAlchemyError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    print(f"{_redacted(url)}: schema version {db.current_version(engine)} ({done})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
