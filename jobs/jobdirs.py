"""A local job's folder, `<workspace>/jobs/<job id>/`, and the small files in it.

    train.log / tuning.log / transform.log / endpoint.log   the job's log (JobRecord.log_path)
    runner.log       the runner's own messages (a training job's train.py output goes to train.log)
    model/           SM_MODEL_DIR: what train.py writes
    output/          SM_OUTPUT_DATA_DIR
    checkpoints/     train.py's --checkpoint-dir (a training job's, not a trial's): checkpoint.pth every epoch and
                     checkpoint.json with its epoch; deleted once the model is registered, kept to resume otherwise
    exit.json        {"returncode": N}: written by the runner when train.py ends, before the database update
    endpoint.json    {"url": ..., "pid": ...}: written by a local endpoint once it listens
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any

from binaudit.workspace import Workspace

EXIT_FILE = "exit.json"
ENDPOINT_FILE = "endpoint.json"
LOG_FILES = {"training": "train.log", "tuning": "tuning.log", "transform": "transform.log",
             "deployment": "endpoint.log"}


# train.py's names (modeling/checkpoint.py), repeated here because that module imports torch
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "checkpoint.pth"
CHECKPOINT_INFO_FILE = "checkpoint.json"


def job_dir(workspace: Workspace, job_id: str) -> Path:
    return workspace.jobs_dir / job_id


def checkpoint_dir(folder: Path) -> Path:
    return folder / CHECKPOINT_DIR


def checkpoint_info(folder: Path) -> dict[str, Any] | None:
    """{"epoch": N, "epochs": M} of the job folder's resume checkpoint ({} if it predates checkpoint.json); None
    when there is no checkpoint."""
    directory = checkpoint_dir(folder)
    if not (directory / CHECKPOINT_FILE).is_file():
        return None
    return read_json(directory / CHECKPOINT_INFO_FILE) or {}


def remove_checkpoint(folder: Path) -> None:
    """Delete a job's checkpoints (100+ MB for a resnet) once its registered model is what is kept."""
    shutil.rmtree(checkpoint_dir(folder), ignore_errors=True)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_exit_record(folder: Path, returncode: int) -> None:
    write_json_atomic(folder / EXIT_FILE, {"returncode": returncode})


def read_exit_code(folder: Path) -> int | None:
    record = read_json(folder / EXIT_FILE)
    return int(record["returncode"]) if record and "returncode" in record else None


def read_text(path: str | Path | None) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def tail_lines(path: str | Path | None, lines: int = 50) -> str:
    """The last `lines` lines of a text file ("" when it does not exist yet)."""
    if not path or lines <= 0:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except OSError:
        return ""
