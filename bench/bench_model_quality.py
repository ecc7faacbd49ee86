"""Counting quality on a fixed synthetic benchmark: a closed 0..5 model against an open one with the class "6+".

    .venv/bin/python -m bench.bench_model_quality                       (CPU: hours at the default size)
    python3 -m bench.bench_model_quality --device cuda --workers 8      (one GPU: a few minutes)

The benchmark: `data_tools synth` with seed 2024 and the generator's default count distribution (ABID-like, 0..15
items, a third above 5), no injected mismatches, so every label is the drawn count. One draw, built twice with the
default seeded 80/10/10 split: `--top-class drop` (the published setting: bins of 0..5 items, the rest left out)
and `--top-class open` (every bin; above 5 in the class "6+"). The split stratifies by class, so the bins of 0..5
items land in the same split in both. Both models: ResNet18 from scratch, identical settings and seed, --loss
ordinal; only the data (and so the head: 6 or 7 classes) differs. Scored in fp32 with both decodings:

    closed model, 0..5 test split         the published setting
    open model, 0..5 test split           the same bins: what the open class costs on them
    open model, whole test split          every bin, counts truncated at 6 (RMSE and MAE over min(count, 6))
    closed model, whole test split        every bin: a closed model's best guess for a bin of 6+ is 5

The always-predict-the-training-majority baseline is given for each split, and how far bf16 scoring moves the open
model's test predictions. Training resumes from checkpoints under the workdir if interrupted; trained models are
reused (`bench.bench_audit_ranking` and `bench.bench_abid_queue` take them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench import OUT
from modeling.data import scan_count_folders
from modeling.evaluate import evaluate_folder
from modeling.metrics import accuracy, mae, rmse, within_one
from modeling.predictor import Predictor
from modeling.train import parse_args, run_training

SYNTH_SEED = 2024
MAX_COUNT = 5


def ensure_datasets(workdir: Path, n: int, width: int, height: int) -> dict[str, Path]:
    """{"drop": ..., "open": ...}: one synthetic draw built both ways."""
    from data_tools.build import BuildOptions, build_dataset
    from data_tools.synth import SynthOptions, generate

    raw = workdir / f"raw-{n}"
    if not (raw / "truth.csv").is_file():
        print(f"generating {n} synthetic bins ({width}x{height}, seed {SYNTH_SEED}) in {raw} ...", flush=True)
        generate(SynthOptions(n=n, out=raw, seed=SYNTH_SEED, max_count=5, counts="uniform", width=width, height=height,
                              workers=os.cpu_count() or 1), progress=False)
    out = {}
    for top in ("drop", "open"):
        out[top] = workdir / f"dataset-{n}-{top}"
        if not (out[top] / "manifest.csv").is_file():
            build_dataset(BuildOptions(source=raw, out=out[top], max_count=MAX_COUNT, top_class=top, progress=False))
    return out


def train(dataset: Path, workdir: Path, name: str, args: argparse.Namespace) -> Path:
    model_dir = workdir / f"model-{name}"
    if (model_dir / "metrics.json").is_file() and (model_dir / "model.pth").is_file():
        print(f"{name}: using the trained model in {model_dir}", flush=True)
        return model_dir
    argv = ["--train", str(dataset / "train"), "--val", str(dataset / "val"), "--model-dir", str(model_dir),
            "--output-data-dir", "", "--checkpoint-dir", str(workdir / f"checkpoint-{name}"),
            "--arch", "resnet18", "--image-size", str(args.image_size), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--loss", "ordinal", "--seed", "0",
            "--workers", str(args.workers), "--best-metric", "val_accuracy", "--max-count", str(MAX_COUNT),
            "--top-class", "open" if name == "open" else "closed", "--device", args.device]
    print(f"{name}: python -m modeling.train {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    run_training(parse_args(argv)[0])
    print(f"{name}: trained in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return model_dir


def row(model: str, split: str, decoding: str, true: np.ndarray, pred: np.ndarray) -> str:
    return (f"| {model} | {split} | {decoding} | {len(true)} | {accuracy(true, pred):.3f} | {rmse(true, pred):.3f} "
            f"| {mae(true, pred):.3f} | {within_one(true, pred):.3f} |")


def scored(predictor: Predictor, folder: Path, args: argparse.Namespace) -> dict[str, dict[str, np.ndarray]]:
    """{bin id: (true class, argmax, expected)} of a model on a folder, counts truncated at 6."""
    metrics, rows = evaluate_folder(predictor, folder, batch_size=64, workers=args.workers, progress=False)
    assert metrics["n_scored"] == metrics["n_images"], metrics["failed"][:3]
    as_count = {str(c): c for c in range(MAX_COUNT + 1)} | {f"{MAX_COUNT + 1}+": MAX_COUNT + 1}
    return {r[0]: tuple(as_count[v] for v in r[1:4]) for r in rows}


def bf16_check(model_dir: Path, folder: Path, args: argparse.Namespace) -> None:
    """How far bf16 scoring (the predictor's default on CPUs with native bf16) moves the test predictions."""
    fast = Predictor.load_torch(model_dir, precision="auto")
    if fast.precision == "fp32":
        return
    paths = [p for p, _ in scan_count_folders(folder, MAX_COUNT, open_top=True)]
    exact = Predictor.load_torch(model_dir, precision="fp32")
    p32 = np.stack([r.probs for r in exact.predict_paths(paths, 32, args.workers, progress=False)])
    p16 = np.stack([r.probs for r in fast.predict_paths(paths, 32, args.workers, progress=False)])
    print(f"{model_dir.name}: {fast.precision} vs fp32 on the test split: argmax agrees on "
          f"{np.mean(p32.argmax(1) == p16.argmax(1)):.1%} of photos, max |p difference| {np.abs(p32 - p16).max():.4f}, "
          f"mean {np.abs(p32 - p16).mean():.5f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8000, help="bins drawn (default 8000)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto", help="training device (auto, cpu, cuda); scoring is fp32")
    parser.add_argument("--workdir", type=Path, default=OUT / "model-quality")
    args = parser.parse_args()

    datasets = ensure_datasets(args.workdir, args.n, args.width, args.height)
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    models = {name: train(datasets["drop" if name == "closed" else "open"], args.workdir, name, args)
              for name in ("closed", "open")}
    for name, model_dir in models.items():
        history = json.loads((model_dir / "metrics.json").read_text())
        print(f"{name}: best epoch {history['best_epoch']} of {len(history['history'])} by "
              f"{history['best_metric']} (the model kept and scored below)", flush=True)
    predictors = {name: Predictor.load_torch(m, device=device, precision="fp32") for name, m in models.items()}
    test = {top: scored(predictors["open"], datasets[top] / "test", args) for top in ("drop", "open")}
    closed = {top: scored(predictors["closed"], datasets[top] / "test", args) for top in ("drop", "open")}

    lines = ["| model | test bins | decoding | n | accuracy | RMSE | MAE | within-one |", "|---|---|---|---|---|---|---|---|"]
    for top, split in (("drop", "0-5"), ("open", "all (6+ as 6)")):
        ids = sorted(test[top])
        true = np.array([test[top][b][0] for b in ids])
        train_counts = np.bincount([c for _, c in scan_count_folders(datasets[top] / "train", MAX_COUNT,
                                                                     open_top=True)], minlength=MAX_COUNT + 2)
        majority = int(np.argmax(train_counts))
        lines.append(row(f"always {majority} (train majority)", split, "-", true, np.full_like(true, majority)))
        for name, results in (("closed (0-5)", closed[top]), ("open (0-5, 6+)", test[top])):
            for i, decoding in ((1, "argmax"), (2, "expected")):
                lines.append(row(name, split, decoding, true, np.array([results[b][i] for b in ids])))
        print(f"test split {split}: {len(ids)} bins, classes {np.bincount(true, minlength=MAX_COUNT + 2).tolist()}; "
              f"train classes {train_counts.tolist()}", flush=True)

    open_ids = sorted(test["open"])
    true = np.array([test["open"][b][0] for b in open_ids])
    pred = np.array([test["open"][b][1] for b in open_ids])
    top_class = true == MAX_COUNT + 1
    bf16_check(models["open"], datasets["open"] / "test", args)
    print(f"open model, class 6+: recall {np.mean(pred[top_class] == MAX_COUNT + 1):.3f}, precision "
          f"{np.mean(true[pred == MAX_COUNT + 1] == MAX_COUNT + 1):.3f} ({top_class.sum()} test bins of 6+)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
