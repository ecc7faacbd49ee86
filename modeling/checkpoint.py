"""The resume checkpoint: everything needed to continue after a spot interruption, saved every epoch.

Contents (all loadable with `torch.load(..., weights_only=True)`): model, optimizer, scheduler and scaler
state, the last finished epoch, the resolved args, the best epoch so far (its weights and evaluation) and
the history, and the RNG states of torch, CUDA, numpy and Python. Beside it, checkpoint.json holds the epoch
in plain JSON, so the jobs layer and the dashboard can say where a resume continues without importing torch.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pth"
CHECKPOINT_INFO_NAME = "checkpoint.json"  # jobs.jobdirs reads it (names repeated there: no torch import)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used to resume this run; the message says why and what to do."""


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy arrays are not weights_only-safe: store the generator's key as a tensor
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to directory/checkpoint.pth atomically (a kill mid-write leaves the old one intact)."""
    path = Path(directory) / CHECKPOINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    _write_info(path.parent, state)
    return path


def _write_info(directory: Path, state: dict[str, Any]) -> None:
    """The epoch (and the planned epochs) in JSON, written after the checkpoint: at worst one epoch behind it."""
    info = {"epoch": state.get("epoch"), "epochs": (state.get("args") or {}).get("epochs")}
    tmp = directory / (CHECKPOINT_INFO_NAME + ".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, directory / CHECKPOINT_INFO_NAME)


def load_checkpoint(directory: str | os.PathLike | None) -> dict[str, Any] | None:
    """The checkpoint in `directory`, or None when there is none."""
    if not directory:
        return None
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: say which and how to proceed
        raise CheckpointError(f"cannot read checkpoint {path} ({exc}); delete it to start afresh") from None


def check_compatible(saved_args: dict[str, Any], args: dict[str, Any],
                     keys: tuple[str, ...] = ("arch", "max_count", "image_size", "loss")) -> None:
    """Refuse to resume a checkpoint made for another model shape or objective."""
    diffs = [f"{k}: checkpoint {saved_args.get(k)!r}, now {args.get(k)!r}" for k in keys
             if saved_args.get(k) != args.get(k)]
    if diffs:
        raise CheckpointError(
            "the checkpoint in the checkpoint dir was made by a different run (" + "; ".join(diffs)
            + "); use another --checkpoint-dir or delete the checkpoint"
        )
