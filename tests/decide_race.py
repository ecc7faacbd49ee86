"""Race two `python -m audit decide` processes on one bin, N times: `python -m tests.decide_race BIN --pairs N`.

The workspace and database come from BINAUDIT_* as for the CLI. Before each pair the bin is sent back to the queue
(no decision). Then two processes are forked from this one (the CLI's modules already imported, so a pair costs
milliseconds, not two interpreter starts), released at the same instant or a little apart (STAGGER_S), and each runs
the real CLI entry point, `audit.cli.main(["decide", ...])`, with its own database connection. One JSON line per pair on stdout:
{"pair": i, "outcomes": [{"reviewer", "rc", "out", "err"}, ...]}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

import audit.cli
import audit.reviews  # noqa: F401 - imported before forking, so the children start at once
import modeling.registry  # noqa: F401
from audit.reviews import bin_state, send_to_queue
from binaudit.config import load_settings
from binaudit.workspace import Workspace

# Between the two processes' starts: at once (they race inside the write), a little apart (the second reads while
# the first writes), or the second once the first has finished (neither saw the other's decision: the case where a
# CLI that read the row version just before writing silently replaced the first decision).
STAGGER_S = (0.0, 0.0, 0.02, 0.1, None)


def _child(start_fd: int, result_fd: int, argv: list[str]) -> None:
    os.read(start_fd, 1)  # released together with the other process
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = audit.cli.main(argv)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            rc, err = 99, io.StringIO(f"{type(exc).__name__}: {exc}")
    os.write(result_fd, json.dumps({"rc": rc, "out": out.getvalue(), "err": err.getvalue()}).encode())


def race_pair(commands: dict[str, list[str]], stagger_s: float | None = 0.0) -> list[dict]:
    """Fork one process per {reviewer: CLI arguments}; release the first, then each next one `stagger_s` later
    (0: all at once; None: once the one before has finished); their outcomes in that order."""
    children = []
    for reviewer, argv in commands.items():
        start_r, start_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(result_r)
            try:
                _child(start_r, result_w, argv)
            finally:
                os._exit(0)
        os.close(result_w)
        os.close(start_r)
        children.append((pid, start_w, result_r, reviewer))
    results: dict[int, bytes] = {}

    def collect(i: int) -> None:
        pid, _, result_r, _ = children[i]
        with os.fdopen(result_r, "rb") as fh:
            results[i] = fh.read()
        os.waitpid(pid, 0)

    for i, (_, start_w, _, _) in enumerate(children):
        if i and stagger_s is None:
            collect(i - 1)
        elif i and stagger_s:
            time.sleep(stagger_s)
        os.write(start_w, b"g")
        os.close(start_w)
    for i in range(len(children)):
        if i not in results:
            collect(i)
    return [{"reviewer": reviewer, **json.loads(results[i] or b'{"rc": 98, "out": "", "err": "no answer"}')}
            for i, (_, _, _, reviewer) in enumerate(children)]


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
        }, STAGGER_S[i % len(STAGGER_S)])
        print(json.dumps({"pair": i, "outcomes": outcomes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
