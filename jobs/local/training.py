"""One local train.py run (a training job, or a tuning trial): start it as the runner's child with SageMaker's
variables pointing at local folders, watch it, record how it ended. A failed or stopped run keeps its checkpoint (a
training job can be resumed from it); a completed one's is deleted once its model is registered.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from binaudit.workspace import Workspace
from jobs import store
from jobs.jobdirs import checkpoint_dir, job_dir, read_text, remove_checkpoint, write_exit_record
from jobs.local.processes import STOP, child_ended, child_env, say, start_child
from jobs.params import TrainingParams
from jobs.records import JobRecord
from modeling import registry
from modeling.metric_log import parse_metric_log

TRAIN_MODULE = "modeling.train"
POLL_SECONDS = 0.5
_ERROR_LINE = re.compile(r"^(?:\S+: )?error: (.+)$")
TAIL_LINES = 8

EarlyStopRule = Callable[[list[dict[str, Any]]], str | None]  # metrics so far -> why to stop, or None


def train_env(params: TrainingParams, folder: Path) -> dict[str, str]:
    """SageMaker's variables, pointing at local folders: train.py takes its defaults from them."""
    channels = params.channels()
    env = {f"SM_CHANNEL_{name.upper()}": str(Path(path).resolve()) for name, path in channels.items()}
    env.update(SM_MODEL_DIR=str(folder / "model"), SM_OUTPUT_DATA_DIR=str(folder / "output"),
               SM_CHANNELS=json.dumps(sorted(channels)), SM_HPS=json.dumps(params.to_hyperparameters()))
    return child_env(env)


def run_train_process(engine: Engine, workspace: Workspace, job: JobRecord,
                      *, early_stop: EarlyStopRule | None = None) -> JobRecord:
    """Run train.py for `job` (a training job or a tuning trial) and record the outcome."""
    params = TrainingParams.from_dict(job.params["training"])
    folder = job_dir(workspace, job.id)
    log_path = Path(job.log_path or folder / "train.log")
    # --model-dir repeats SM_MODEL_DIR so the job id is in train.py's command line: a stop checks it (pid reuse)
    cmd = [sys.executable, "-m", TRAIN_MODULE, *params.to_cli_args(), "--model-dir", str(folder / "model")]
    if not job.parent_id:  # a trial is never resumed: 100+ MB of checkpoint writes per epoch would buy nothing
        cmd += ["--checkpoint-dir", str(checkpoint_dir(folder))]
    proc = start_child(cmd, train_env(params, folder), log_path)
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
    child_ended(proc)
    write_exit_record(folder, proc.returncode)
    return finish_training_run(engine, workspace, job.id, proc.returncode, stop_reason=stop_reason)


# ---------------------------------------------------------------- how it ended

def failure_reason(log_text: str, returncode: int) -> str:
    """train.py's last `error: ...` line, else the last lines of the log (a traceback's end), else the code."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match.group(1)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"train.py was killed by {name}"
    tail = " | ".join(lines[-TAIL_LINES:])
    return f"train.py exited with status {returncode}" + (f": {tail}" if tail else "")


def _register(engine: Engine, workspace: Workspace, job: JobRecord, model_dir: Path) -> registry.ModelVersion:
    return registry.register_model(
        engine, model_dir, workspace.models_dir, job_id=job.id, actor=job.output.get("requested_by", "system"),
        extra_config={"job": {"id": job.id, "backend": job.backend, "parent_id": job.parent_id,
                              "recounts": job.params.get("training", {}).get("recounts") or None}},
    )


def check_scoring_paths(version: registry.ModelVersion) -> None:
    """Export the new version to ONNX and check its faster scoring paths on its validation photos (the setting
    `check_scoring_paths`); a failure leaves the version on torch and never fails the job."""
    from binaudit.config import load_settings

    try:
        if not load_settings().check_scoring_paths:
            return
        from modeling.path_check import check_scoring_paths as check

        say(f"checking the scoring paths of {version.name} on its validation photos")
        check(version.model_dir, say=say)
    except Exception as exc:  # noqa: BLE001 - the model is registered; scoring falls back to torch
        say(f"{version.name}: scoring paths not checked ({type(exc).__name__}: {exc}); it scores with torch")


def finish_training_run(engine: Engine, workspace: Workspace, job_id: str, returncode: int,
                        *, stop_reason: str | None = None) -> JobRecord:
    """Record how a local train.py run ended (the runner, or a refresh that found it gone after it wrote the exit
    record); registers a model version when it completed."""
    job = store.get_job(engine, job_id)
    if not job.is_active:
        return job
    folder = job_dir(workspace, job.id)
    metrics = parse_metric_log(read_text(job.log_path))
    if returncode != 0 and (job.stop_requested or stop_reason):
        return store.finish_job(engine, job.id, "Stopped", metrics=metrics,
                                failure_reason=stop_reason or "stopped on request")[0]
    if returncode != 0:
        return store.finish_job(engine, job.id, "Failed", metrics=metrics,
                                failure_reason=failure_reason(read_text(job.log_path), returncode))[0]

    def keep(version: registry.ModelVersion) -> None:
        if not job.parent_id:  # a tuning trial's version is checked when wanted (python -m modeling check)
            check_scoring_paths(version)
        # the registered model is what is kept (a Failed or Stopped run keeps its checkpoint to resume); deleted
        # before the job reads Completed, so whoever sees it Completed sees the space freed
        remove_checkpoint(folder)

    return store.finish_with_model(engine, job.id, lambda: _register(engine, workspace, job, folder / "model"),
                                   failure="train.py finished but its model could not be registered",
                                   metrics=metrics, before_completed=keep)
