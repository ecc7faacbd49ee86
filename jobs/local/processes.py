"""Local job processes. The backend's side: start a runner detached, tell whether a job's process runs, stop it.
The runner's side: its train.py children, and the STOP flag that SIGTERM sets (end what runs as Stopped).

A local job runs in its own session: the dashboard never waits on it, closing the CLI's terminal does not kill it,
and a stop reaches the whole process group (the runner and its train.py) with one signal.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from binaudit.config import PROJECT_ROOT

# Popen objects of the processes this process started: polling them reaps the exited ones (no zombies that
# would look alive to os.kill(pid, 0)) and keeps Python from warning about children it lost track of.
_CHILDREN: dict[int, subprocess.Popen] = {}

STOP = threading.Event()  # in a runner: set by SIGTERM
_RUNNING: set[subprocess.Popen] = set()  # in a runner: its train.py children
_RUNNING_LOCK = threading.Lock()


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without SageMaker's SM_* variables, the project importable, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def spawn_detached(args: Sequence[str], *, log_file: Path, env: Mapping[str, str] | None = None) -> int:
    """Start `python <args>` in a new session with stdout and stderr appended to log_file; returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=PROJECT_ROOT, env=dict(env or child_env()),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _reap(pid: int) -> bool:
    """True if pid was our child and has exited (now reaped)."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: somebody else reaps it
        return False
    return done == pid


def _proc_file(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _runs(pid: int, markers: Sequence[str], job_ids: Sequence[str]) -> bool:
    """Whether the process's command line holds one of `markers` (the module it runs) and names one of `job_ids`:
    as an argument of its own (the runner's JOB_ID, the endpoint's --job-id) or as a folder of a path argument
    (train.py's --model-dir <workspace>/jobs/<id>/model). True where /proc cannot tell, or the command line is
    empty: the process is exiting (its memory, argv included, is already released), still ours, not gone yet."""
    cmdline = _proc_file(pid, "cmdline")
    if not cmdline:
        return True
    tokens = set(re.split(rb"[\0/=]", cmdline))
    return (any(m.encode() in cmdline for m in markers)
            and (not job_ids or any(job_id.encode() in tokens for job_id in job_ids)))


def _alive(pid: int | None, markers: Sequence[str], job_ids: Sequence[str]) -> bool:
    if not pid or pid <= 0 or _reap(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else: not one of ours
        return not markers
    stat = _proc_file(pid, "stat")
    if stat is not None and stat.rsplit(b")", 1)[-1].split()[:1] == [b"Z"]:
        return False
    return not markers or _runs(pid, markers, job_ids)


def process_alive(pid: int | None, marker: str | None = None, *, job_id: str | None = None) -> bool:
    """Whether pid runs (not a zombie) and, where /proc tells, its command line contains `marker` and `job_id`:
    pids are recycled, by other programs and by our other jobs, and a dead job must not look alive."""
    return _alive(pid, (marker,) if marker else (), (job_id,) if job_id else ())


def _group_is_ours(pgid: int, markers: Sequence[str], job_ids: Sequence[str]) -> bool:
    """A live group whose leader or a member runs our code for the job (a marker and a job id in its command line)."""
    if _alive(pgid, markers, job_ids):
        return True
    if not Path("/proc").is_dir():
        return process_alive(pgid)
    for pid in (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        fields = (_proc_file(pid, "stat") or b")").rsplit(b")", 1)[-1].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z" and _runs(pid, markers, job_ids):
            return True
    return False


def terminate(pid: int, *, group: bool, markers: Sequence[str], job_ids: Sequence[str],
              grace_seconds: float = 10.0) -> bool:
    """SIGTERM (the group, or one process), then SIGKILL after the grace period; True if it had to kill. Only a
    process (group) running one of `markers` for one of `job_ids` is signalled: a stale job record (a recycled pid)
    must never stop somebody else's program or another job."""
    def alive() -> bool:
        return _group_is_ours(pid, markers, job_ids) if group else _alive(pid, markers, job_ids)

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(pid, sig)

    if not alive():
        return False
    send(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not alive():
            return False
        time.sleep(0.1)
    send(signal.SIGKILL)
    for _ in range(50):
        if not alive():
            break
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------- inside a runner

def say(message: str) -> None:
    """A runner's own message, in its log at once."""
    print(message, flush=True)


def on_sigterm(signum: int, _frame: Any) -> None:
    """A runner's SIGTERM handler: set STOP and end the children (usually already signalled with the group; a
    SIGTERM to the runner alone is not)."""
    STOP.set()
    with _RUNNING_LOCK:
        for proc in _RUNNING:
            if proc.poll() is None:
                proc.terminate()


def start_child(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a runner's child (train.py) in the runner's process group, output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log, _RUNNING_LOCK:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        _RUNNING.add(proc)
    return proc


def child_ended(proc: subprocess.Popen) -> None:
    with _RUNNING_LOCK:
        _RUNNING.discard(proc)
