"""`python -m jobs.local.runner JOB_ID --workspace W --database-url URL`: runs one local job to its end.

The local backend starts this detached and returns at once. The runner runs train.py as its child (for training
and each tuning trial; a batch transform in-process) and writes the outcome to the database itself, so a job ends
correctly with no dashboard or CLI open. SIGTERM ends the children; the job is then Stopped, registering nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from sqlalchemy.engine import Engine

from binaudit import db
from binaudit.workspace import Workspace
from jobs import store
from jobs.local.processes import STOP, on_sigterm, say
from jobs.local.training import run_train_process
from jobs.local.transform import run_transform
from jobs.local.tuner import run_tuning
from jobs.records import JobError, JobRecord

RUNS = {"training": run_train_process, "tuning": run_tuning, "transform": run_transform}


def run_job(engine: Engine, workspace: Workspace, job_id: str) -> JobRecord:
    """Run a job to its end; any unexpected error ends it as Failed with the error as the reason."""
    job = store.get_job(engine, job_id)
    if job.pid != os.getpid():  # the backend records it too, but may not have yet
        job = store.update_job(engine, job_id, pid=os.getpid())
    try:
        if job.kind not in RUNS:
            raise JobError(f"the runner does not run {job.kind} jobs")
        return RUNS[job.kind](engine, workspace, job)
    except Exception as exc:  # the job must not stay InProgress because the runner crashed
        traceback.print_exc()
        status = "Stopped" if STOP.is_set() else "Failed"
        reason = "stopped on request" if STOP.is_set() else f"{type(exc).__name__}: {exc}"
        return store.finish_job(engine, job_id, status, failure_reason=reason)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.local.runner", description=__doc__.split("\n\n")[0])
    p.add_argument("job_id")
    p.add_argument("--workspace", type=Path, required=True, help="the workspace root")
    p.add_argument("--database-url", required=True, help="SQLAlchemy URL of the project database")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    engine = db.make_engine(args.database_url)
    workspace = Workspace(args.workspace, args.database_url)
    job = run_job(engine, workspace, args.job_id)
    say(f"{job.id}: {job.status}" + (f" ({job.failure_reason})" if job.failure_reason else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
