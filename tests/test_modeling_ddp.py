"""Two CPU processes under torchrun with gloo: real DDP, metrics reduced over ranks, one writer."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from modeling.predictor import Predictor
from tests.modeling_fixtures import REPO, run_python, train_cli_args

pytestmark = pytest.mark.slow  # two training processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training_reduces_metrics_over_the_whole_val_set(tiny_dataset, tmp_path):
    model_dir = tmp_path / "m"
    result = run_python(
        ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
         str(_free_port()), str(REPO / "modeling" / "train.py"),
         *train_cli_args(tiny_dataset, model_dir, "--batch-size", "8", "--test", str(tiny_dataset / "test"))],
        cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("epoch=1 ") == 1  # only rank 0 prints
    assert "2 process(es)" in result.stdout
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "args.json", "metrics.json", "model.pth", "model_config.json", "summary.csv"]
    assert json.loads((model_dir / "args.json").read_text())["world_size"] == 2

    metrics = json.loads((model_dir / "metrics.json").read_text())
    val_images = sorted((tiny_dataset / "val").glob("*/*.jpg"))
    test_images = sorted((tiny_dataset / "test").glob("*/*.jpg"))
    assert len(val_images) % 2 == 1 or len(test_images) % 2 == 1  # an uneven split: padding would double-count
    assert metrics["final"]["n"] == len(val_images) == np.sum(metrics["final"]["confusion_matrix"])
    assert metrics["test"]["n"] == len(test_images)

    # the reduced confusion matrix equals a single process scoring the saved model on the same photos
    predictor = Predictor.load(model_dir, precision="fp32")
    probs = np.stack([r.probs for r in predictor.predict_paths(val_images, batch_size=8, workers=0)])
    true = [int(p.parent.name.rstrip("+")) for p in val_images]  # the open class folder "6+" is class 6
    single = np.zeros((7, 7), dtype=int)
    np.add.at(single, (true, probs.argmax(1)), 1)
    assert single.tolist() == metrics["final"]["confusion_matrix"]
