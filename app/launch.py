"""`make run`: seed the demo when the workspace is empty, then start the dashboard.

The first run seeds synthetic bins, trains a model on CPU and scores every bin (a few minutes on two
cores, progress printed); later runs find the workspace and start in seconds, keeping every
analyst's decision. Port and address: BINAUDIT_PORT (default 8501), BINAUDIT_ADDRESS (default
localhost). Only a workspace's own SQLite database is ever seeded: a team's shared database
(BINAUDIT_DATABASE_URL) starts empty, and servers starting together could not both seed it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app.demo import seed_demo, workspace_is_empty
from app.ui.identity import login_problem
from binaudit.config import ConfigError, Settings, load_settings
from binaudit.workspace import Workspace

DASHBOARD = Path(__file__).resolve().parent / "dashboard.py"


def should_seed_demo(settings: Settings, engine) -> bool:
    """An empty workspace with its own SQLite database, unless BINAUDIT_SKIP_DEMO=1."""
    return (not settings.database_url and os.environ.get("BINAUDIT_SKIP_DEMO") != "1"
            and workspace_is_empty(engine))


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = login_problem(settings.require_login)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    ws = Workspace.from_settings(settings)
    engine = ws.open()
    if should_seed_demo(settings, engine):
        print(f"First run: seeding a demo workspace in {ws.root}")
        seed_demo(ws, engine)
    port = os.environ.get("BINAUDIT_PORT", "8501")
    address = os.environ.get("BINAUDIT_ADDRESS", "localhost")
    print(f"BinAudit dashboard on http://{address}:{port}  (Ctrl+C to stop)", flush=True)
    os.execv(sys.executable, streamlit_args(port, address))  # the dashboard replaces this process: Ctrl+C stops it
    return 0  # pragma: no cover


def streamlit_args(port: str, address: str) -> list[str]:
    """The dashboard's command line. Analysts see "an error occurred", never a traceback (it names files, queries,
    settings); Streamlit still logs the full traceback on the server. .streamlit/config.toml says the same, for
    `streamlit run` from the repository root."""
    return [sys.executable, "-m", "streamlit", "run", str(DASHBOARD), "--server.port", port,
            "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.showErrorDetails", "none"]


if __name__ == "__main__":
    sys.exit(main())
