"""The model folder: what training writes and what evaluation, serving and the predictor read.

    model.pth           state_dict only (loaded with weights_only=True)
    model_config.json   ModelSpec (arch, classes -> counts, preprocessing) + run facts and final metrics
    metrics.json        per-epoch history and the final evaluation (both decodings, per-count table, matrix)
    summary.csv         one row per epoch
    args.json           the resolved training arguments
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeling.model import ModelConfigError, ModelSpec, load_trained

MODEL_FILE = "model.pth"
CONFIG_FILE = "model_config.json"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.csv"
ARGS_FILE = "args.json"


def write_json(path: str | os.PathLike, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_summary_csv(path: str | os.PathLike, history: Sequence[Mapping[str, Any]]) -> None:
    """One row per epoch; columns in the order of the first row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(history[0]) if history else ["epoch"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def save_model(model_dir: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], spec: ModelSpec,
               extra: Mapping[str, Any] | None = None) -> None:
    """model.pth and model_config.json (the spec plus `extra`: run facts, metrics)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / (MODEL_FILE + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    os.replace(tmp, model_dir / MODEL_FILE)
    write_json(model_dir / CONFIG_FILE, {**(extra or {}), **spec.to_dict()})


def read_model_config(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise ModelConfigError(f"no {CONFIG_FILE} in {model_dir}: not a model folder written by modeling.train")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5,000-digit integer, absurd nesting
        raise ModelConfigError(f"{path} is not valid JSON ({str(exc).split(';')[0] or 'nested too deeply'})") from None
    if not isinstance(config, dict):
        raise ModelConfigError(f"{path} holds {type(config).__name__}, not an object")
    return config


def load_model_dir(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the trained model (eval mode, on `device`) and its spec; checks the head against class_to_count."""
    spec = ModelSpec.from_dict(read_model_config(model_dir))
    weights = Path(model_dir) / MODEL_FILE
    if not weights.is_file():
        raise ModelConfigError(f"no {MODEL_FILE} in {model_dir}: not a model folder written by modeling.train")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file
        raise ModelConfigError(f"cannot read {weights} ({exc})") from None
    model = load_trained(state, spec)
    return model.to(device).eval(), spec
