"""Helpers and fixtures shared by the tests/test_modeling_*.py files.

A tiny model (resnet18 at 32 px, one epoch on `tiny_dataset`) is trained once per test process and cached
(`tiny_model`), because a session fixture imported into several modules would run once per module.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TINY_ARGS = ("--arch", "resnet18", "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "0")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test process's environment without SageMaker variables, the repo importable, one thread, no downloads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_python(args: list[str], cwd: Path, env: dict[str, str] | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def train_cli_args(dataset: Path, model_dir: Path, *extra: str) -> list[str]:
    return ["--train", str(dataset / "train"), "--val", str(dataset / "val"), "--model-dir", str(model_dir),
            "--output-data-dir", str(model_dir.parent / (model_dir.name + "-output")), *TINY_ARGS, *extra]


def jpeg_bytes(width: int = 60, height: int = 40, color: tuple[int, int, int] = (200, 120, 40),
               quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(width: int = 50, height: int = 70, mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), (10, 200, 30, 128) if mode == "RGBA" else (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


_TRAINED: dict[str, Path] = {}


def _train_tiny(dataset: Path, out: Path) -> Path:
    from modeling.train import parse_args, run_training

    model_dir = out / "model"
    args, _ = parse_args(train_cli_args(dataset, model_dir, "--test", str(dataset / "test")))
    run_training(args)
    return model_dir


def tiny_model(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder trained for one epoch at 32 px on `tiny_dataset`, once per test process (read-only).

    Test modules wrap this in their own session fixture (importing a fixture into a module redefines its name).
    """
    key = str(tiny_dataset)
    if key not in _TRAINED:
        _TRAINED[key] = _train_tiny(tiny_dataset, tmp_path_factory.mktemp("tiny_model"))
    return _TRAINED[key]


def closed_model_dir(out: Path, max_count: int = 5, image_size: int = 32) -> Path:
    """A closed 0..max_count model (random weights, no training): for rules that do not depend on what it learnt,
    such as which bins a closed model cannot check."""
    import torch

    from modeling.artifacts import save_model
    from modeling.model import ModelSpec, build_model
    from modeling.preprocessing import PreprocessConfig

    torch.manual_seed(0)
    spec = ModelSpec("resnet18", max_count, PreprocessConfig(image_size))
    save_model(out, build_model("resnet18", spec.num_classes).state_dict(), spec)
    return out
