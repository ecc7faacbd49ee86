"""Flake check: the tests most exposed to timing, many times in a row, then the whole suite; stops at the first failure.

    make flake-check                               (about an hour on 2 cores)
    .venv/bin/python -m tests.flake_check --stage suite --rounds 1     (one stage, one round)

Stages, in order (pytest runs as `make test` runs it unless noted):
  browser    tests/test_browser.py alone, in one process                                     x10
  app-pages  tests/test_app_pages.py alone, 2 workers                                         x10
  selection  -k "app or page or browser or dashboard", 2 workers (the selection that once
             caught the browser test checking the page before its rerun had started)         x10
  suite      the whole suite, 2 workers                                                        x3
One line per run (stage, round, outcome, seconds), then a summary; exit status 1 at the first failure, whose log
tail is printed (every run's full log is kept under test-artifacts/flake-check/).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "test-artifacts" / "flake-check"
PARALLEL = ["-n", "2", "--dist", "worksteal"]  # as `make test`


@dataclass
class Stage:
    name: str
    args: list[str]
    rounds: int
    seconds: list[float] = field(default_factory=list)
    passed: int = 0


def stages() -> list[Stage]:
    return [
        Stage("browser", ["tests/test_browser.py"], 10),
        Stage("app-pages", [*PARALLEL, "tests/test_app_pages.py"], 10),
        Stage("selection", [*PARALLEL, "-k", "app or page or browser or dashboard"], 10),
        Stage("suite", PARALLEL, 3),
    ]


def run_once(stage: Stage, round_no: int) -> bool:
    log = LOGS / f"{stage.name}-{round_no:02d}.log"
    cmd = [sys.executable, "-m", "pytest", "-q", *stage.args]
    start = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - start
    stage.seconds.append(seconds)
    stage.passed += code == 0
    summary = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
    print(f"{stage.name:10s} {round_no:2d}/{stage.rounds}  {'ok' if code == 0 else 'FAILED':6s} {seconds:7.1f} s  "
          f"{summary}", flush=True)
    if code != 0:
        print(f"\n--- {' '.join(cmd[1:])} (log {log.relative_to(ROOT)}), last lines:", flush=True)
        print("\n".join(log.read_text().splitlines()[-60:]), flush=True)
    return code == 0


def report(chosen: list[Stage]) -> None:
    print("\nstage       runs  passed   min s  median s   max s")
    for s in chosen:
        if s.seconds:
            print(f"{s.name:10s} {len(s.seconds):5d} {s.passed:7d} {min(s.seconds):7.1f} "
                  f"{statistics.median(s.seconds):9.1f} {max(s.seconds):7.1f}")


def main(argv: list[str] | None = None) -> int:
    all_stages = stages()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", action="append", choices=[s.name for s in all_stages],
                        help="run only this stage (repeatable; default: all, in order)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per stage instead of the defaults")
    args = parser.parse_args(argv)
    chosen = [s for s in all_stages if not args.stage or s.name in args.stage]
    for s in chosen:
        s.rounds = args.rounds or s.rounds
    LOGS.mkdir(parents=True, exist_ok=True)
    for stage in chosen:
        for round_no in range(1, stage.rounds + 1):
            if not run_once(stage, round_no):
                report(chosen)
                print(f"\nflake check FAILED: {stage.name}, round {round_no}")
                return 1
    report(chosen)
    print(f"\nflake check passed: {sum(s.rounds for s in chosen)} runs, none failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
