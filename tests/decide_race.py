"""Race two `python -m audit decide` processes on one bin, N times: `python -m tests.decide_race BIN --pairs N`.

The workspace and database come from BINAUDIT_* as for the CLI. Before each pair the bin is sent back to the queue
(no decision). Then two processes are forked from this one (the CLI's modules already imported, so a pair costs
milliseconds, not two interpreter starts), both released at the same instant, and each runs the real CLI entry
point, `audit.cli.main(["decide", ...])`, with its own database connection. One JSON line per pair on stdout:
{"pair": i, "outcomes": [{"reviewer", "rc", "out", "err"}, ...]}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys

import audit.cli
import audit.reviews  # noqa: F401 - imported before forking, so the children start at once
import modeling.registry  # noqa: F401
from audit.reviews import bin_state, send_to_queue
from binaudit.config import load_settings
from binaudit.workspace import Workspace


def _child(start_fd: int, result_fd: int, argv: list[str]) -> None:
    os.read(start_fd, 1)  # released together with the other process
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = audit.cli.main(argv)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            rc, err = 99, io.StringIO(f"{type(exc).__name__}: {exc}")
    os.write(result_fd, json.dumps({"rc": rc, "out": out.getvalue(), "err": err.getvalue()}).encode())


def race_pair(commands: dict[str, list[str]]) -> list[dict]:
    """Fork one process per {reviewer: CLI arguments}, release them at once; their outcomes in that order."""
    start_r, start_w = os.pipe()
    children = []
    for reviewer, argv in commands.items():
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(result_r)
            try:
                _child(start_r, result_w, argv)
            finally:
                os._exit(0)
        os.close(result_w)
        children.append((pid, result_r, reviewer))
    os.write(start_w, b"go")
    outcomes = []
    for pid, result_r, reviewer in children:
        with os.fdopen(result_r, "rb") as fh:
            data = fh.read()
        os.waitpid(pid, 0)
        outcomes.append({"reviewer": reviewer, **json.loads(data or b'{"rc": 98, "out": "", "err": "no answer"}')})
    os.close(start_r)
    os.close(start_w)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.decide_race", description=__doc__.split("\n\n")[0])
    p.add_argument("bin_id")
    p.add_argument("--pairs", type=int, default=40)
    args = p.parse_args(argv)
    ws = Workspace.from_settings(load_settings())
    engine = ws.open()
    for i in range(args.pairs):
        state = bin_state(engine, args.bin_id)
        if state.decision is not None:
            send_to_queue(engine, args.bin_id, actor="race-reset", expected_version=state.row_version)
        engine.dispose()  # no connection crosses the fork: each child opens its own
        recount = str((state.expected_count or 0) + 1)  # a real mismatch: a recount equal to the record is refused
        outcomes = race_pair({
            f"ana-{i}": ["decide", args.bin_id, "--decision", "confirm_mismatch", "--recount", recount,
                         "--reviewer", f"ana-{i}"],
            f"ben-{i}": ["decide", args.bin_id, "--decision", "unsure", "--reviewer", f"ben-{i}"],
        })
        print(json.dumps({"pair": i, "outcomes": outcomes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
