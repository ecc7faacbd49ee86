"""CPU scoring of JPEG files end to end with ResNet18 at 224 px: the batched predictor vs a naive loop and vs the
model's own forward pass on ready tensors.

    .venv/bin/python -m bench.bench_model_predict

- naive: for each file, open and decode the full photo, torchvision Resize((224, 224)) + ToTensor + Normalize,
  forward a batch of one (fp32, default memory format, torch.inference_mode).
- predictor: Predictor.predict_paths (DataLoader workers decode in draft mode to uint8 while the model runs;
  BatchNorm folded, channels_last; bf16 autocast on CPUs with native bf16, else fp32), batch --batch-size.
- forward-only: the predictor's own model call (same precision, memory format, batch size) on ready,
  normalised tensors: the ceiling for the predictor.
The same run also measures the predictor and the forward pass in fp32. Each measurement is repeated --rounds
times, interleaved; ratios are given best vs best and as the median of the per-round ratios (the machine is
shared, so single rounds wander by +-10%). Targets: predictor >= 2.5x naive and >= 80% of forward-only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from bench import OUT
from modeling.artifacts import load_model_dir, save_model
from modeling.model import ModelSpec, build_model
from modeling.predictor import Predictor, default_workers
from modeling.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig


def ensure_photos(folder: Path, n: int, width: int, height: int) -> list[Path]:
    from data_tools.synth import SynthOptions, generate

    images = folder / "bin-images"
    if len(list(images.glob("*.jpg"))) < n:
        print(f"generating {n} synthetic {width}x{height} bin photos in {folder} ...", flush=True)
        generate(SynthOptions(n=n, out=folder, seed=3, width=width, height=height, workers=os.cpu_count() or 1),
                 progress=False)
    return sorted(images.glob("*.jpg"))[:n]


def ensure_model(folder: Path, size: int) -> Path:
    torch.manual_seed(0)
    save_model(folder, build_model("resnet18", 6).state_dict(), ModelSpec("resnet18", 5, PreprocessConfig(size)))
    return folder


def naive_loop(model: torch.nn.Module, paths: list[Path], size: int) -> float:
    transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
            model(x).softmax(dim=1)
    return len(paths) / (time.perf_counter() - start)


def predictor_rate(predictor: Predictor, paths: list[Path], batch: int, workers: int) -> float:
    start = time.perf_counter()
    n = sum(1 for r in predictor.predict_paths(paths, batch_size=batch, workers=workers, progress=False)
            if r.probs is not None)
    assert n == len(paths), "every photo must be scored"
    return n / (time.perf_counter() - start)


def forward_rate(predictor: Predictor, n: int, batch: int, size: int) -> float:
    """The predictor's model call (folded, channels_last, same precision) on ready, normalised batches."""
    ready = predictor.inputs(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8))
    batches = max(1, n // batch)
    start = time.perf_counter()
    for _ in range(batches):
        predictor.forward_probabilities(ready)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="photos (default 300)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=450)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the predictor's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=OUT / "model-predict")
    args = parser.parse_args()

    paths = ensure_photos(args.workdir / "photos", args.n, args.width, args.height)
    model_dir = ensure_model(args.workdir / "model", args.image_size)
    workers = default_workers() if args.workers is None else args.workers
    fast = Predictor.load(model_dir, precision="auto")
    exact = Predictor.load(model_dir, precision="fp32")
    naive_model, _ = load_model_dir(model_dir)  # same weights, plain: BatchNorm kept, default memory format

    print(f"{len(paths)} JPEGs of ~{args.width}x{args.height} px, resnet18 at {args.image_size} px, "
          f"batch {args.batch_size}, {workers} decoding worker(s), torch {torch.get_num_threads()} threads, "
          f"predictor precision auto -> {fast.precision}; best of {args.rounds} interleaved rounds", flush=True)
    warm = paths[: 2 * args.batch_size]
    naive_loop(naive_model, warm[:4], args.image_size)
    for p in (fast, exact):
        predictor_rate(p, warm, args.batch_size, workers)
        forward_rate(p, 2 * args.batch_size, args.batch_size, args.image_size)

    rates: dict[str, list[float]] = {k: [] for k in ("naive", "predictor", "forward", "predictor_fp32",
                                                     "forward_fp32")}
    for r in range(args.rounds):
        rates["naive"].append(naive_loop(naive_model, paths, args.image_size))
        rates["predictor"].append(predictor_rate(fast, paths, args.batch_size, workers))
        rates["forward"].append(forward_rate(fast, len(paths), args.batch_size, args.image_size))
        rates["predictor_fp32"].append(predictor_rate(exact, paths, args.batch_size, workers))
        rates["forward_fp32"].append(forward_rate(exact, len(paths), args.batch_size, args.image_size))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    best = {k: max(v) for k, v in rates.items()}

    print(f"naive loop (full decode, batch 1, fp32):        {best['naive']:6.1f} images/s")
    print(f"batched predictor ({fast.precision}):                    {best['predictor']:6.1f} images/s")
    print(f"forward only, ready tensors ({fast.precision}):          {best['forward']:6.1f} images/s")
    print(f"batched predictor (fp32):                      {best['predictor_fp32']:6.1f} images/s")
    print(f"forward only, ready tensors (fp32):            {best['forward_fp32']:6.1f} images/s")
    def median_ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    print(f"predictor / naive:        {best['predictor'] / best['naive']:.2f}x best vs best, "
          f"{median_ratio('predictor', 'naive'):.2f}x median of rounds   (target >= 2.5x)")
    print(f"predictor / forward-only: {best['predictor'] / best['forward']:.0%} best vs best, "
          f"{median_ratio('predictor', 'forward'):.0%} median of rounds   (target >= 80%)")
    print(f"fp32 predictor / naive:   {best['predictor_fp32'] / best['naive']:.2f}x; "
          f"fp32 predictor / fp32 forward-only: {best['predictor_fp32'] / best['forward_fp32']:.0%}")


if __name__ == "__main__":
    main()
