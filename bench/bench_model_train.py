"""CPU training throughput of the counting model: ResNet18/34 at 128 and 224 px, images/s.

    .venv/bin/python -m bench.bench_model_train

Steps: what train_one_epoch does per batch (normalise a uint8 batch, forward, loss, backward, SGD step) with the
optimizer and loss built by train.py's own builders, on ready batches, after warm-up steps; the best of several timed blocks counts, as the machine is shared. Then one epoch end to
end through the real DataLoader (decode, augment, workers) for ResNet18 at 128 px, to show the data pipeline's
share. Ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import os

import torch

from bench import OUT, best_of
from modeling.distributed import DistInfo
from modeling.model import create_model
from modeling.train import (
    Runtime,
    build_criterion,
    build_datasets,
    build_optimizer,
    build_spec,
    build_train_loader,
    parse_args,
    train_one_epoch,
)


def step_throughput(arch: str, size: int, batch: int, warmup: int, steps: int, repeats: int) -> float:
    args, _ = parse_args(["--arch", arch, "--image-size", str(size), "--batch-size", str(batch)])
    spec = build_spec(args)
    model = create_model(arch, spec.num_classes).train()
    optimizer, criterion = build_optimizer(model, args), build_criterion(args, spec)
    rt = Runtime(torch.device("cpu"), spec, DistInfo())
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    targets = torch.randint(0, spec.num_classes, (batch,))

    def step() -> None:
        loss = criterion(model(rt.inputs(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    return steps * batch / best_of(lambda: [step() for _ in range(steps)], repeats)


def end_to_end(dataset: str, size: int, batch: int, workers: int, repeats: int) -> tuple[float, int]:
    args, _ = parse_args(["--train", f"{dataset}/train", "--val", f"{dataset}/val", "--image-size", str(size),
                          "--batch-size", str(batch), "--workers", str(workers)])
    spec = build_spec(args)
    model = create_model(args.arch, spec.num_classes)
    loader = build_train_loader(build_datasets(args, spec)["train"], args, DistInfo(), torch.device("cpu"))
    optimizer, criterion = build_optimizer(model, args), build_criterion(args, spec)
    rt = Runtime(torch.device("cpu"), spec, DistInfo())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    train_one_epoch(model, criterion, optimizer, loader, scaler, rt)  # warm-up: workers, allocator, oneDNN
    n = len(loader) * batch
    return n / best_of(lambda: train_one_epoch(model, criterion, optimizer, loader, scaler, rt), repeats), n


def ensure_dataset(workdir: str, n: int) -> str:
    from pathlib import Path

    from data_tools.build import BuildOptions, build_dataset
    from data_tools.synth import SynthOptions, generate

    root = Path(workdir)
    if not (root / "ds" / "manifest.csv").is_file():
        generate(SynthOptions(n=n, out=root / "raw", seed=11, width=500, height=450, workers=os.cpu_count() or 1),
                 progress=False)
        build_dataset(BuildOptions(source=root / "raw", out=root / "ds", progress=False))
    return str(root / "ds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the fastest counts (shared machine)")
    parser.add_argument("--end-to-end-images", type=int, default=200, help="photos for the DataLoader epoch")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the end-to-end epoch")
    parser.add_argument("--workdir", default=str(OUT / "model-train"))
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.warmup} warm-up steps, best of {args.repeats} blocks of {args.steps} steps, fp32 on CPU")
    rates: dict[tuple[str, int], float] = {}
    for arch in ("resnet18", "resnet34"):
        for size in (128, 224):
            rates[arch, size] = step_throughput(arch, size, args.batch_size, args.warmup, args.steps, args.repeats)
            print(f"  {arch:9s} {size:3d} px: {rates[arch, size]:6.1f} images/s", flush=True)
    print(f"ratio resnet34/resnet18 at 224 px: {rates['resnet34', 224] / rates['resnet18', 224]:.2f}; "
          f"224/128 px for resnet18: {rates['resnet18', 224] / rates['resnet18', 128]:.2f}")

    dataset = ensure_dataset(args.workdir, int(args.end_to_end_images / 0.8) + 1)
    rate, n = end_to_end(dataset, 128, args.batch_size, args.workers, args.repeats)
    print(f"end to end (decode 500x450 JPEGs + augment in {args.workers} worker(s) + train step), resnet18 128 px: "
          f"{rate:.1f} images/s over {n} images = {rate / rates['resnet18', 128]:.2f} of the step-only rate")


if __name__ == "__main__":
    main()
