"""`python -m jobs.local.runner JOB_ID --workspace W --database-url URL`: runs one local job to its end.

The local backend starts this detached (its own session) and returns at once. The runner runs the work as child
processes in its process group (train.py for training and for each tuning trial; the predictor in-process for a
batch transform) and writes the outcome to the database itself, so a job finishes correctly with no dashboard or
CLI open. SIGTERM (a stop request, sent to the whole group) ends the children; the runner then records the job as
Stopped and registers nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from binaudit import db
from binaudit.config import PROJECT_ROOT
from binaudit.workspace import Workspace
from jobs import store
from jobs.jobdirs import checkpoint_dir, job_dir, read_text, write_exit_record
from jobs.local.processes import child_env
from jobs.local.training import finish_training_run
from jobs.params import TrainingParams
from jobs.records import JobError, JobRecord
from modeling.metric_log import parse_metric_log

STOP = threading.Event()  # set by SIGTERM: finish what runs as Stopped, start nothing new
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()
POLL_SECONDS = 0.5

EarlyStopRule = Callable[[list[dict[str, Any]]], str | None]


def _on_sigterm(signum: int, _frame: Any) -> None:
    STOP.set()
    with _RUNNING_LOCK:
        for proc in _RUNNING:  # usually already signalled with the group; a SIGTERM to the runner alone is not
            if proc.poll() is None:
                proc.terminate()


def say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- data

def prepare_channels(engine: Engine, workspace: Workspace, job_id: str, params: TrainingParams) -> dict[str, str]:
    """The job's local channels; with include_recounts the train channel is a merged folder in the job's data/."""
    channels = params.channels()
    if params.include_recounts:
        from jobs.recounts import merge_training_folder

        merged = merge_training_folder(engine, workspace, Path(params.train),
                                       job_dir(workspace, job_id) / "data" / "train", max_count=params.max_count,
                                       held_out=[Path(p) for p in (params.val, params.test) if p])
        say(f"training data: {merged['base_images']} base images + {merged['recounts']} recounts "
            f"({merged['replaced_by_recount']} base images replaced by their recount)")
        if merged["recounts_held_out"]:
            say(f"{len(merged['recounts_held_out'])} recounts left out of training because their bins are in "
                f"val/test (training on them would leak held-out photos): {', '.join(merged['recounts_held_out'][:10])}")
        store.merge_output(engine, job_id, recounts=merged)
        channels["train"] = merged["train_folder"]
    return channels


def train_env(channels: Mapping[str, str], params: TrainingParams, folder: Path) -> dict[str, str]:
    """SageMaker's variables, pointing at local folders: train.py takes its defaults from them."""
    env = {f"SM_CHANNEL_{name.upper()}": str(Path(path).resolve()) for name, path in channels.items()}
    env.update(SM_MODEL_DIR=str(folder / "model"), SM_OUTPUT_DATA_DIR=str(folder / "output"),
               SM_CHANNELS=json.dumps(sorted(channels)), SM_HPS=json.dumps(params.to_hyperparameters()))
    return child_env(env)


# ---------------------------------------------------------------- one training run

def _start_child(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log, _RUNNING_LOCK:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        _RUNNING.add(proc)
    return proc


def _checkpoint_args(job: JobRecord, folder: Path) -> list[str]:
    """A training job checkpoints every epoch so a stopped or dead run can be resumed (LocalBackend.resume_training);
    a tuning trial does not: it is never resumed, and 100+ MB of writes per epoch per trial would buy nothing."""
    if job.parent_id:
        return []
    return ["--checkpoint-dir", str(checkpoint_dir(folder))]


def run_train_process(engine: Engine, workspace: Workspace, job: JobRecord, channels: Mapping[str, str],
                      *, early_stop: EarlyStopRule | None = None) -> JobRecord:
    """Run train.py for `job` (a training job or a tuning trial) and record the outcome."""
    params = TrainingParams.from_dict(job.params["training"])
    folder = job_dir(workspace, job.id)
    log_path = Path(job.log_path or folder / "train.log")
    # --model-dir repeats SM_MODEL_DIR so the job id is in train.py's command line: a stop checks it (pid reuse)
    cmd = [sys.executable, "-m", "modeling.train", *params.to_cli_args(), "--model-dir", str(folder / "model"),
           *_checkpoint_args(job, folder)]
    proc = _start_child(cmd, train_env(channels, params, folder), log_path)
    if job.parent_id:  # a trial: its pid is train.py's, so a stop of the trial alone can reach it
        store.mark_started(engine, job.id, pid=proc.pid)
    stop_reason = None
    while True:
        try:
            proc.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if STOP.is_set():
            stop_reason = "stopped on request"
            proc.terminate()
        elif early_stop is not None and stop_reason is None:
            stop_reason = early_stop(parse_metric_log(read_text(log_path)))
            if stop_reason:
                proc.terminate()
    with _RUNNING_LOCK:
        _RUNNING.discard(proc)
    write_exit_record(folder, proc.returncode)
    return finish_training_run(engine, workspace, job.id, proc.returncode, stop_reason=stop_reason)


def run_training(engine: Engine, workspace: Workspace, job: JobRecord) -> JobRecord:
    params = TrainingParams.from_dict(job.params["training"])
    channels = prepare_channels(engine, workspace, job.id, params)
    return run_train_process(engine, workspace, job, channels)


# ---------------------------------------------------------------- entry

def _dispatch(engine: Engine, workspace: Workspace, job: JobRecord) -> JobRecord:
    if job.kind == "training":
        return run_training(engine, workspace, job)
    if job.kind == "tuning":
        from jobs.local.tuner import run_tuning

        return run_tuning(engine, workspace, job)
    if job.kind == "transform":
        from jobs.local.transform import run_transform

        return run_transform(engine, workspace, job)
    raise JobError(f"the runner does not run {job.kind} jobs")


def run_job(engine: Engine, workspace: Workspace, job_id: str) -> JobRecord:
    """Run a job to its end; any unexpected error ends it as Failed with the error as the reason."""
    job = store.get_job(engine, job_id)
    if job.pid != os.getpid():  # the backend records it too, but may not have yet
        job = store.update_job(engine, job_id, pid=os.getpid())
    try:
        return _dispatch(engine, workspace, job)
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
    signal.signal(signal.SIGTERM, _on_sigterm)
    engine = db.make_engine(args.database_url)
    workspace = Workspace(args.workspace, args.database_url)
    job = run_job(engine, workspace, args.job_id)
    say(f"{job.id}: {job.status}" + (f" ({job.failure_reason})" if job.failure_reason else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
