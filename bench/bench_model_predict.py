"""CPU scoring of JPEG files end to end, ResNet18 at 224 px, on every scoring path in one run: a naive loop, torch
fp32, torch bf16, ONNX Runtime fp32 and ONNX Runtime int8, each end to end and forward-only.

    .venv/bin/python -m bench.bench_model_predict --rounds 5

- naive: for each file, open and decode the full photo, torchvision Resize((224, 224)) + ToTensor + Normalize,
  forward a batch of one (fp32, plain model, torch.inference_mode).
- end to end, per path: Predictor.predict_paths (decoding workers at low priority hand over uint8 batches;
  torch: BatchNorm folded, channels_last; ONNX: model.onnx / model.int8.onnx from modeling.onnx_export).
- forward-only, per path: the same model call on a ready batch (the ceiling for that path).
- agreement, per path, against torch fp32 (modeling.path_check.agreement) on labelled photos: by default the
  quality benchmark's 300 test photos with a ResNet18 trained at 224 px on its training split
  (bench/out/model-quality/model-ordinal-224, see docs/benchmarks.md), int8 calibrated on 300 of its training photos.

Speed does not depend on the weights; agreement does, so it needs a trained model (--model-dir). Without one the
run uses random weights and says the agreement figures mean nothing. Each speed is measured --rounds times,
interleaved; the best of each is reported (the machine is shared, so single rounds wander). The last line is
`speedup_vs_torch_forward=X.XX agreement=0.XXX`: ONNX int8 end to end over the best torch forward-only rate, and
int8's count agreement with torch fp32. Goal: >= 1.50 with agreement >= 0.990.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from bench import OUT
from modeling.artifacts import load_model_dir, read_model_config, save_model
from modeling.data import scan_count_folders
from modeling.model import ModelSpec, build_model
from modeling.onnx_export import export_fp32, quantize_int8
from modeling.path_check import agreement, evenly_spaced
from modeling.predictor import OnnxPredictor, Predictor, default_workers
from modeling.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from modeling.scoring_paths import this_machine

QUALITY = OUT / "model-quality"
PATHS = ("torch fp32", "torch bf16", "onnx fp32", "onnx int8")


def ensure_photos(folder: Path, n: int, width: int, height: int) -> list[Path]:
    from data_tools.synth import SynthOptions, generate

    images = folder / "bin-images"
    if len(list(images.glob("*.jpg"))) < n:
        print(f"generating {n} synthetic {width}x{height} bin photos in {folder} ...", flush=True)
        generate(SynthOptions(n=n, out=folder, seed=3, width=width, height=height, workers=os.cpu_count() or 1),
                 progress=False)
    return sorted(images.glob("*.jpg"))[:n]


def prepare_model(source: Path | None, folder: Path, size: int) -> Path:
    """A copy of the trained model (or random weights) in the work folder, where the ONNX copies are written."""
    if folder.exists():
        shutil.rmtree(folder)
    if source is not None:
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.onnx", "scoring_paths.json"))
    else:
        torch.manual_seed(0)
        save_model(folder, build_model("resnet18", 6).state_dict(), ModelSpec("resnet18", 5, PreprocessConfig(size)))
    return folder


def load_paths(model_dir: Path) -> dict[str, Predictor]:
    return {"torch fp32": Predictor.load_torch(model_dir, precision="fp32"),
            "torch bf16": Predictor.load_torch(model_dir, precision="bf16"),
            "onnx fp32": OnnxPredictor.open(model_dir, "fp32"),
            "onnx int8": OnnxPredictor.open(model_dir, "int8")}


def naive_loop(model: torch.nn.Module, paths: list[Path], size: int) -> float:
    transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
            model(x).softmax(dim=1)
    return len(paths) / (time.perf_counter() - start)


def end_to_end_rate(predictor: Predictor, paths: list[Path], batch: int, workers: int) -> float:
    start = time.perf_counter()
    n = sum(1 for r in predictor.predict_paths(paths, batch_size=batch, workers=workers, progress=False)
            if r.probs is not None)
    assert n == len(paths), "every photo must be scored"
    return n / (time.perf_counter() - start)


def forward_rate(predictor: Predictor, n: int, batch: int, size: int) -> float:
    """The path's model call on ready batches (normalised tensors for torch, the uint8 array for ONNX)."""
    ready = predictor.inputs(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
                             .contiguous(memory_format=torch.channels_last))
    batches = max(1, n // batch)
    start = time.perf_counter()
    for _ in range(batches):
        predictor.forward_probabilities(ready)
    return batches * batch / (time.perf_counter() - start)


def agreement_table(predictors: dict[str, Predictor], data: Path, workers: int) -> dict[str, dict]:
    samples = scan_count_folders(data, predictors["torch fp32"].spec.max_count, open_top=True)
    photos, labels = [p for p, _ in samples], np.array([c for _, c in samples])
    probs = {name: np.stack([r.probs for r in p.predict_paths(photos, workers=workers, progress=False)])
             for name, p in predictors.items()}
    table = {name: agreement(probs["torch fp32"], probs[name], labels) for name in predictors}
    for name in predictors:
        table[name]["accuracy"] = float((probs[name].argmax(1) == labels).mean())
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="photos (default 300)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=450)
    parser.add_argument("--image-size", type=int, default=224, help="for random weights (a trained model has its own)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the predictor's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=QUALITY / "model-ordinal-224",
                        help="a trained model (default: the quality benchmark's 224 px model, when present)")
    parser.add_argument("--dataset", type=Path, default=QUALITY / "dataset-3000",
                        help="its dataset: int8 calibrates on train/, agreement is measured on test/")
    parser.add_argument("--calibration", type=int, default=300, help="training photos to calibrate int8 on")
    parser.add_argument("--workdir", type=Path, default=OUT / "model-predict")
    args = parser.parse_args()

    trained = args.model_dir if (args.model_dir / "model.pth").is_file() else None
    paths = ensure_photos(args.workdir / "photos", args.n, args.width, args.height)
    model_dir = prepare_model(trained, args.workdir / "model", args.image_size)
    size = ModelSpec.from_dict(read_model_config(model_dir)).preprocess.image_size
    train = args.dataset / "train" if trained and (args.dataset / "train").is_dir() else None
    found = scan_count_folders(train, 5, open_top=True) if train else []
    calibration = [p for p, _ in evenly_spaced(found, args.calibration)] if train else \
        [str(p) for p in paths[: args.calibration]]
    start = time.perf_counter()
    export_fp32(model_dir)
    _, used = quantize_int8(model_dir, calibration)
    print(f"exported and quantised in {time.perf_counter() - start:.0f} s (int8 calibrated on {used} "
          f"{'training' if train else 'benchmark'} photos)", flush=True)
    workers = default_workers() if args.workers is None else args.workers
    predictors = load_paths(model_dir)
    naive_model, _ = load_model_dir(model_dir)  # same weights, plain: BatchNorm kept, default memory format

    machine = this_machine()
    print(f"machine: {machine['cpu']}, flags {' '.join(machine['flags']) or '-'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; /proc/loadavg {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"{len(paths)} JPEGs of ~{args.width}x{args.height} px, resnet18 at {size} px "
          f"({'trained: ' + str(trained) if trained else 'random weights'}), batch {args.batch_size}, "
          f"{workers} decoding worker(s); best of {args.rounds} interleaved rounds", flush=True)
    warm = paths[: 2 * args.batch_size]
    naive_loop(naive_model, warm[:4], size)
    for p in predictors.values():
        end_to_end_rate(p, warm, args.batch_size, workers)
        forward_rate(p, 2 * args.batch_size, args.batch_size, size)

    rates: dict[str, list[float]] = {"naive": []}
    for r in range(args.rounds):
        rates["naive"].append(naive_loop(naive_model, paths, size))
        for name, p in predictors.items():
            rates.setdefault(name, []).append(end_to_end_rate(p, paths, args.batch_size, workers))
            rates.setdefault(name + " forward", []).append(forward_rate(p, len(paths), args.batch_size, size))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    best = {k: max(v) for k, v in rates.items()}

    data = args.dataset / "test" if trained and (args.dataset / "test").is_dir() else None
    table = agreement_table(predictors, data, workers) if data else {}
    print(f"\n{'path':<12} {'end to end':>11} {'forward':>9} {'e2e/fwd':>8}   agreement with torch fp32"
          + (f" on {data}" if data else " (no labelled photos: none measured)"))
    print(f"{'naive loop':<12} {best['naive']:>9.1f}/s")
    for name in PATHS:
        a = table.get(name)
        figures = (f"counts {a['count_agreement']:.3f}, mismatch p within 0.02 on {a['mismatch_within']:.3f} "
                   f"(p99 {a['p99_mismatch_diff']:.3f}, worst {a['max_mismatch_diff']:.3f}), accuracy "
                   f"{a['accuracy']:.3f}") if a else ""
        print(f"{name:<12} {best[name]:>9.1f}/s {best[name + ' forward']:>7.1f}/s "
              f"{best[name] / best[name + ' forward']:>7.0%}   {figures}")
    torch_forward = max(best["torch fp32 forward"], best["torch bf16 forward"])
    print(f"onnx int8 end to end / naive loop: {best['onnx int8'] / best['naive']:.2f}x; "
          f"/ best torch forward-only ({torch_forward:.1f}/s): {best['onnx int8'] / torch_forward:.2f}x "
          f"(goal >= 1.50x)")
    if not trained:
        print("random weights: the agreement figure below means nothing (pass --model-dir with a trained model)")
    int8_agreement = table["onnx int8"]["count_agreement"] if table else float("nan")
    print(f"speedup_vs_torch_forward={best['onnx int8'] / torch_forward:.2f} agreement={int8_agreement:.3f}")


if __name__ == "__main__":
    main()
