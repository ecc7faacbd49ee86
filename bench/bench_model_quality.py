"""Counting quality on a fixed synthetic benchmark: cross-entropy vs the ordinal loss, argmax vs expected decoding.

    .venv/bin/python -m bench.bench_model_quality            (about 30-60 minutes on 2 CPU cores)

The benchmark: `data_tools synth` with seed 2024, 3,000 bins of about 160x144 px (counts 0-5, uniform, no
injected mismatches, so every label is the drawn count), built with the default seeded 80/10/10 split. Both runs
train ResNet18 from scratch with identical settings and seed; only --loss differs. Each model is then scored on
the test split in fp32 with both decodings; the always-predict-the-majority baseline comes from the training
split's most common count. The run also reports how far bf16 scoring (the predictor's default on CPUs with
native bf16) moves the test predictions. Training resumes from bench/out checkpoints if interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench import OUT
from modeling.data import scan_count_folders
from modeling.evaluate import evaluate_folder
from modeling.metrics import accuracy, mae, rmse, within_one
from modeling.predictor import Predictor
from modeling.train import parse_args, run_training

SYNTH_SEED = 2024


def ensure_dataset(workdir: Path, n: int, width: int, height: int) -> Path:
    from data_tools.build import BuildOptions, build_dataset
    from data_tools.synth import SynthOptions, generate

    raw, dataset = workdir / f"raw-{n}", workdir / f"dataset-{n}"
    if not (raw / "truth.csv").is_file():
        print(f"generating {n} synthetic bins ({width}x{height}, seed {SYNTH_SEED}) in {raw} ...", flush=True)
        generate(SynthOptions(n=n, out=raw, seed=SYNTH_SEED, max_count=5, counts="uniform", width=width, height=height,
                              workers=os.cpu_count() or 1), progress=False)
    if not (dataset / "manifest.csv").is_file():
        build_dataset(BuildOptions(source=raw, out=dataset, progress=False))
    return dataset


def train(dataset: Path, workdir: Path, loss: str, args: argparse.Namespace) -> Path:
    model_dir = workdir / f"model-{loss}"
    if (model_dir / "metrics.json").is_file() and (model_dir / "model.pth").is_file():
        print(f"{loss}: using the trained model in {model_dir}", flush=True)
        return model_dir
    argv = ["--train", str(dataset / "train"), "--val", str(dataset / "val"), "--model-dir", str(model_dir),
            "--output-data-dir", "", "--checkpoint-dir", str(workdir / f"checkpoint-{loss}"),
            "--arch", "resnet18", "--image-size", str(args.image_size), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--loss", loss, "--seed", "0",
            "--workers", str(args.workers), "--best-metric", "val_accuracy"]
    print(f"{loss}: python -m modeling.train {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    run_training(parse_args(argv)[0])
    print(f"{loss}: trained in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return model_dir


def row(name: str, true: np.ndarray, pred: np.ndarray) -> str:
    return (f"| {name} | {accuracy(true, pred):.3f} | {rmse(true, pred):.3f} | {mae(true, pred):.3f} "
            f"| {within_one(true, pred):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="bins (default 3000)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=OUT / "model-quality")
    args = parser.parse_args()

    dataset = ensure_dataset(args.workdir, args.n, args.width, args.height)
    samples = scan_count_folders(dataset / "test", 5)
    true = np.array([count for _, count in samples])
    train_counts = np.bincount([c for _, c in scan_count_folders(dataset / "train", 5)], minlength=6)
    majority = int(np.argmax(train_counts))

    lines = ["| model | decoding | accuracy | RMSE | MAE | within-one |", "|---|---|---|---|---|---|"]
    lines.append(row(f"always {majority} (train majority) | -", true, np.full_like(true, majority)))
    for loss in ("ce", "ordinal"):
        model_dir = train(dataset, args.workdir, loss, args)
        history = json.loads((model_dir / "metrics.json").read_text())
        print(f"{loss}: best epoch {history['best_epoch']} of {len(history['history'])} by "
              f"{history['best_metric']} (the model kept and scored below)", flush=True)
        exact = Predictor.load_torch(model_dir, precision="fp32")
        metrics, rows = evaluate_folder(exact, dataset / "test", batch_size=32, workers=args.workers, progress=False)
        assert metrics["n_scored"] == len(samples)
        pred = {"argmax": np.array([r[2] for r in rows]), "expected": np.array([r[3] for r in rows])}
        for decoding in ("argmax", "expected"):
            lines.append(row(f"resnet18 {loss} | {decoding}", true, pred[decoding]))
        fast = Predictor.load_torch(model_dir, precision="auto")  # bf16 on CPUs with native bf16
        if fast.precision != "fp32":
            paths = [p for p, _ in samples]
            p32 = np.stack([r.probs for r in exact.predict_paths(paths, 32, args.workers, progress=False)])
            p16 = np.stack([r.probs for r in fast.predict_paths(paths, 32, args.workers, progress=False)])
            print(f"{loss}: {fast.precision} vs fp32 on the test split: argmax agrees on "
                  f"{np.mean(p32.argmax(1) == p16.argmax(1)):.1%} of photos, max |p difference| "
                  f"{np.abs(p32 - p16).max():.4f}, mean {np.abs(p32 - p16).mean():.5f}", flush=True)

    print(f"\ntest split: {len(true)} bins, counts {np.bincount(true, minlength=6).tolist()}; "
          f"train split counts {train_counts.tolist()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
