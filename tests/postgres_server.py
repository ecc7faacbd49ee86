"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries, initdb + pg_ctl in a temp folder.

One server per pytest process (each xdist worker starts its own: about a second), listening on
127.0.0.1 on a free port, so tests use the URLs a team would (`postgresql+psycopg://user@host:port/db`).
Tests get a fresh database each, copied from a migrated template (`CREATE DATABASE ...
TEMPLATE`, tens of milliseconds). fsync is off: the data is thrown away.

initdb and postgres refuse to run as root; when the tests run as root (CI does) the server runs as the
unprivileged user `nobody`, owning the temp folder. Nothing here skips: a server that cannot start raises
`PostgresUnavailable` with the reason, and every test that needs it fails with that reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "nobody"  # who runs initdb/postgres when the tests run as root
SUPERUSER = "postgres"  # the database role initdb creates (trust authentication on the socket)
MIN_VERSION = 15


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresUnavailable(RuntimeError):
    """The test server could not be found or started; the message says why and what to install."""


def find_bindir() -> Path:
    """The newest Debian PostgreSQL (>= 15) binaries, or $BINAUDIT_TEST_PG_BINDIR."""
    if override := os.environ.get("BINAUDIT_TEST_PG_BINDIR"):
        return Path(override)
    found = sorted(((int(m.group(1)), Path(p).parent) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
                    if (m := re.search(r"/postgresql/(\d+)/bin/", p))), reverse=True)
    if not found or found[0][0] < MIN_VERSION:
        raise PostgresUnavailable(
            f"no PostgreSQL >= {MIN_VERSION} under /usr/lib/postgresql (found: {[v for v, _ in found] or 'none'}); "
            "install Debian's `postgresql` package (`make test` does), or set BINAUDIT_TEST_PG_BINDIR")
    return found[0][1]


class PostgresServer:
    def __init__(self, bindir: Path | None = None, options: str = ""):
        self.bindir = bindir or find_bindir()
        self.options = options  # more `-c name=value` server settings
        self.root = Path(tempfile.mkdtemp(prefix="binaudit-pg-"))  # short: a socket path has ~100 characters
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self.port = 0
        self._run_as: dict = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}, **self._run_as)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed ({done.returncode}): "
                                      f"{done.stderr.strip()[-2000:]}\n{log}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync", "--no-instructions")
        for attempt in range(3):  # another process may take the free port between the probe and the start
            self.port = _free_port()
            options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                       f"-c shared_buffers=32MB {self.options}")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                          "start")
                return self
            except PostgresUnavailable:
                if attempt == 2 or "already in use" not in self.log.read_text(errors="replace"):
                    raise
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ databases

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def create_database(self, template: str | None = None, name: str | None = None) -> str:
        """A new empty (or template-copied) database; returns its name."""
        name = name or f"t{os.getpid()}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: tests may leave pooled connections
