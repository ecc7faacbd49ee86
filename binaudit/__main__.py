"""`python -m binaudit {migrate,copy-database}`: the project database from the shell.

migrate brings the configured database's schema up to date and says where it stands. Every
dashboard server and every command does the same when it opens the database, so this is optional:
a team runs it once before starting new servers after an upgrade. Several at once are safe (the
migration lock). copy-database copies every row into another, empty database (a one-machine SQLite
workspace moving to a team's PostgreSQL). Fatal errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from binaudit import db
from binaudit.config import ConfigError, load_settings
from binaudit.copy_database import CopyError, copy_database


def _redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m binaudit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending migrations to BINAUDIT_DATABASE_URL (or the workspace's SQLite)")
    p = sub.add_parser("copy-database", help="copy every row of the configured database into an empty one")
    p.add_argument("--to", required=True, help="the target's URL, e.g. postgresql+psycopg://user:pw@host/binaudit")
    args = parser.parse_args(argv)
    try:
        url = load_settings().resolved_database_url
        engine = db.make_engine(url)
        if args.command == "migrate":
            applied = db.migrate(engine)
            done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
            print(f"{_redacted(url)}: schema version {db.current_version(engine)} ({done})")
        else:
            counts = copy_database(engine, db.make_engine(args.to))
            print(f"copied {_redacted(url)} -> {_redacted(args.to)}: "
                  + ", ".join(f"{n} {table}" for table, n in counts.items()))
    except (ConfigError, CopyError, sa.exc.SQLAlchemyError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
