"""Which engine and precision score a model on this machine: `--runtime {auto,torch,onnx}` x `--precision`.

A scoring path is a (runtime, precision) pair: torch fp32 (the reference: what training measured and SageMaker
serves), torch bf16 (autocast, fast on CPUs with native bf16), ONNX fp32 (model.onnx), ONNX int8
(model.int8.onnx). `modeling.path_check` scores the model's validation photos on each path available, compares
the counts and probabilities with torch fp32, times each, and writes the result to `scoring_paths.json` beside
model.pth, one entry per machine (CPU model and instruction-set flags), since both speed and int8 arithmetic
depend on the CPU.

`auto` picks the fastest path that passed its agreement check on this machine; where the model was never checked
here, it scores with torch fp32 (exact) and says how to check it. Asked for by name, a path is used as asked,
except int8, which needs a passing check. A machine without onnxruntime scores with torch and says so once.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_FILE = "scoring_paths.json"
RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
# the agreement an approximate path needs with torch fp32 on the validation photos: the same count on 99% of them,
# and the mismatch probability within 0.02 on 99% of them
MIN_COUNT_AGREEMENT = 0.99
MAX_MISMATCH_DIFF = 0.02
# the instruction-set flags that decide how fast (and, for int8, how exactly) each path runs
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
PATH_NAMES = {("torch", "fp32"): "torch fp32", ("torch", "bf16"): "torch bf16", ("onnx", "fp32"): "onnx fp32",
              ("onnx", "int8"): "onnx int8"}

_told: set[str] = set()


class ScoringPathError(ValueError):
    """A runtime/precision request this model or machine cannot honour; the message says why and what can."""


@dataclass(frozen=True)
class Choice:
    runtime: str
    precision: str
    reason: str

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.precision}"


def tell_once(message: str) -> None:
    """A note on stderr, once per process (a warehouse scoring run meets the same condition for every page)."""
    if message not in _told:
        _told.add(message)
        print(message, file=sys.stderr, flush=True)


def this_machine() -> dict[str, Any]:
    """{"cpu": model name, "flags": [the CPU_FLAGS it has]} from /proc/cpuinfo (empty on other systems)."""
    cpu, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not cpu:
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu": cpu or "unknown", "flags": [f for f in CPU_FLAGS if f in flags]}


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("cpu") == b.get("cpu") and sorted(a.get("flags", [])) == sorted(b.get("flags", []))


def read_record(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"checks": []}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScoringPathError(f"{path} is not valid JSON ({exc}); run `python -m modeling check` again") from None
    if not isinstance(record, dict) or not isinstance(record.get("checks"), list):
        raise ScoringPathError(f"{path} has no list of checks; run `python -m modeling check` again")
    return record


def check_here(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The latest check of this model made on a machine like this one, if any."""
    here = this_machine()
    checks = [c for c in read_record(model_dir)["checks"] if isinstance(c, dict) and same_machine(c["machine"], here)]
    return checks[-1] if checks else None


def int8_verdict(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The int8 copy's latest check result on any machine (None when it was never checked)."""
    checks = [c for c in read_record(model_dir)["checks"] if "onnx int8" in c.get("paths", {})]
    return checks[-1]["paths"]["onnx int8"] if checks else None


def _validate(runtime: str, precision: str, device: str) -> None:
    if runtime not in RUNTIMES:
        raise ScoringPathError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if precision not in (*PRECISIONS, "fp16"):
        raise ScoringPathError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime == "torch":
        raise ScoringPathError("int8 scoring runs on ONNX Runtime: use --runtime onnx (or auto)")
    if precision in ("bf16", "fp16") and runtime == "onnx":
        raise ScoringPathError(f"{precision} scoring runs on torch: use --runtime torch (or auto)")
    if device != "cpu" and (runtime == "onnx" or precision == "int8"):
        raise ScoringPathError(f"the ONNX paths run on the CPU; with --device {device} use --runtime torch")


def onnxruntime_available() -> bool:
    """Whether onnxruntime imports (not merely whether it is on the path: a broken install counts as absent)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_usable(runtime: str, precision: str) -> bool:
    if onnxruntime_available():
        return True
    if runtime == "onnx" or precision == "int8":
        raise ScoringPathError("onnxruntime is not installed, so the ONNX paths are not available: "
                               "`pip install -r requirements.txt`, or score with --runtime torch")
    tell_once("onnxruntime is not installed: scoring with torch (`pip install -r requirements.txt` adds the "
              "faster ONNX paths)")
    return False


def choose_path(model_dir: str | os.PathLike, runtime: str = "auto", precision: str = "auto",
                device: str = "cpu") -> Choice:
    """The scoring path for this request on this machine (see the module docstring); ScoringPathError if none."""
    device = str(device).split(":")[0]
    _validate(runtime, precision, device)
    if device != "cpu":  # CUDA: torch, fp16 for auto (as the training container does)
        return Choice("torch", "fp16" if precision == "auto" else precision, f"torch on {device}")
    if runtime != "auto" and precision != "auto":
        if precision == "int8":
            _onnx_usable(runtime, precision)
            _require_passed_int8(model_dir)
        elif runtime == "onnx":
            _onnx_usable(runtime, precision)
        return Choice(runtime, precision, "as asked")
    onnx_ok = runtime != "torch" and _onnx_usable(runtime, precision)
    wanted = [(r, p) for r, p in PATH_NAMES
              if runtime in ("auto", r) and precision in ("auto", p) and (r == "torch" or onnx_ok)]
    if not wanted:
        raise ScoringPathError(f"no scoring path is {runtime} {precision}")
    return _fastest_checked(model_dir, wanted)


def _fastest_checked(model_dir: str | os.PathLike, wanted: list[tuple[str, str]]) -> Choice:
    check = check_here(model_dir)
    exact = ("torch", "fp32") if ("torch", "fp32") in wanted else ("onnx", "fp32")
    if check is None:
        return Choice(*exact, f"auto: {PATH_NAMES[exact]}, exact (the model was never checked on this machine; "
                              f"`python -m modeling check --model-dir {model_dir}` measures the faster paths)")
    passed = [(check["paths"][PATH_NAMES[p]]["images_per_s"], p) for p in wanted
              if check["paths"].get(PATH_NAMES[p], {}).get("passed")]
    if not passed:
        return Choice(*exact, f"auto: {PATH_NAMES[exact]}, exact (no faster path passed its agreement check here)")
    rate, best = max(passed)
    failed = [n for n, v in check["paths"].items() if not v.get("passed")]
    note = f"; failed their check: {', '.join(failed)}" if failed else ""
    return Choice(*best, f"auto: {PATH_NAMES[best]}, the fastest path that passed its agreement check on this "
                         f"machine ({rate:.0f} images/s forward{note})")


def _require_passed_int8(model_dir: str | os.PathLike) -> None:
    verdict = int8_verdict(model_dir)
    if verdict is None:
        raise ScoringPathError(f"the int8 copy of {model_dir} was never checked: run `python -m modeling check "
                               f"--model-dir {model_dir}` first")
    if not verdict.get("passed"):
        raise ScoringPathError(f"the int8 copy of {model_dir} failed its agreement check ({verdict.get('why')}); "
                               f"this model keeps fp32")
