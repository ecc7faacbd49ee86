"""Check a model's faster scoring paths against torch fp32 on its validation photos, on this machine.

    python -m modeling check --model-dir D [--train T --val V]        (T, V default to the model's own folders)

Exports model.onnx, quantises model.int8.onnx on a few hundred photos of the training split, then scores the
validation photos with every path this machine has (torch fp32, torch bf16 where the CPU has native bf16, ONNX
fp32 and int8 where onnxruntime is installed) and compares each with torch fp32:

- count agreement: the share of photos whose argmax count is the same;
- mismatch-probability difference: |p(e) - p_fp32(e)| with e the photo's labelled count, i.e. how far the
  audit's mismatch probability 1 - p(e) moves for a bin whose record is right (worst photo and 99th percentile).

A path passes with counts agreeing on at least 99% of the photos and the mismatch probability within 0.02 on at
least 99% of them (the worst photo is recorded too: bf16 and int8 both move a rare photo by a little more). Each path's forward pass is timed on a batch of the model's size. The result is added to
scoring_paths.json (`modeling.scoring_paths` reads it to pick a path); a path that fails keeps the model on the
others and the check says so.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling.artifacts import read_model_config, write_json
from modeling.data import scan_count_folders
from modeling.model import ModelConfigError, ModelSpec
from modeling.predictor import OnnxPredictor, Predictor
from modeling.scoring_paths import (
    MAX_MISMATCH_DIFF,
    MIN_COUNT_AGREEMENT,
    PATH_NAMES,
    RECORD_FILE,
    onnxruntime_available,
    read_record,
    same_machine,
    this_machine,
)
from modeling.serving import cpu_has_native_bf16

CALIBRATION_PHOTOS = 300
MAX_CHECK_PHOTOS = 2000
TIMING_BATCH = 16


def model_folders(model_dir: Path) -> tuple[str | None, str | None]:
    """The training and validation folders the model was trained on, from model_config.json, if recorded."""
    args = read_model_config(model_dir).get("resolved_args") or {}
    return args.get("train") or None, args.get("val") or None


def evenly_spaced(items: list, n: int) -> list:
    """n items spread over the whole (sorted) list: every class folder contributes, deterministically."""
    if len(items) <= n:
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


def agreement(reference: np.ndarray, probs: np.ndarray, labels: np.ndarray,
              min_agreement: float = MIN_COUNT_AGREEMENT) -> dict[str, Any]:
    """Count agreement and mismatch-probability differences of `probs` against `reference` (both (N, C)); passed
    when both hold on at least `min_agreement` of the photos."""
    same = reference.argmax(axis=1) == probs.argmax(axis=1)
    rows = np.arange(len(labels))
    in_range = labels < reference.shape[1]
    diff = np.abs(reference[rows[in_range], labels[in_range]] - probs[rows[in_range], labels[in_range]])
    within = float((diff <= MAX_MISMATCH_DIFF).mean()) if diff.size else 1.0
    result = {"count_agreement": float(same.mean()) if same.size else 1.0, "photos_disagreeing": int((~same).sum()),
              "mismatch_within": within, "max_mismatch_diff": float(diff.max()) if diff.size else 0.0,
              "p99_mismatch_diff": float(np.quantile(diff, 0.99)) if diff.size else 0.0}
    reasons = []
    if result["count_agreement"] < min_agreement:
        reasons.append(f"counts agree on {result['count_agreement']:.1%} < {min_agreement:.0%}")
    if within < min_agreement:
        reasons.append(f"mismatch probability within {MAX_MISMATCH_DIFF} on {within:.1%} < "
                       f"{min_agreement:.0%} of photos")
    result["passed"] = not reasons
    result["why"] = "; ".join(reasons) or (
        f"counts agree on {result['count_agreement']:.1%}, mismatch probability within {MAX_MISMATCH_DIFF} on "
        f"{within:.1%} (worst {result['max_mismatch_diff']:.3f})")
    return result


def forward_rate(predictor: Predictor, side: int, rounds: int = 3) -> float:
    """Best-of-`rounds` forward-only images/s on one ready batch (decoding excluded: the same for every path)."""
    x = predictor.inputs(torch.randint(0, 256, (TIMING_BATCH, 3, side, side), dtype=torch.uint8)
                         .contiguous(memory_format=torch.channels_last))
    predictor.forward_probabilities(x)  # warm-up: first-run allocations, oneDNN/ORT kernel selection
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        predictor.forward_probabilities(x)
        best = min(best, time.perf_counter() - start)
    return TIMING_BATCH / best


def _score(predictor: Predictor, paths: list[str], workers: int | None) -> np.ndarray:
    results = list(predictor.predict_paths(paths, batch_size=TIMING_BATCH, workers=workers, progress=False))
    return np.stack([r.probs if r.probs is not None else np.full(predictor.spec.num_classes, np.nan)
                     for r in results])


def _candidates(model_dir: Path, train_photos: list[str], say: Callable[[str], None]
                ) -> dict[str, Callable[[], Predictor]]:
    """The paths this machine can run besides torch fp32, as loaders (the int8 copy is quantised first)."""
    loaders: dict[str, Callable[[], Predictor]] = {}
    if cpu_has_native_bf16():
        loaders[PATH_NAMES["torch", "bf16"]] = lambda: Predictor.load_torch(model_dir, precision="bf16")
    if not onnxruntime_available():
        say("onnxruntime is not installed: only the torch paths are checked")
        return loaders
    from modeling.onnx_export import export_fp32, quantize_int8

    start = time.perf_counter()
    export_fp32(model_dir)
    say(f"exported model.onnx ({time.perf_counter() - start:.1f} s)")
    loaders[PATH_NAMES["onnx", "fp32"]] = lambda: OnnxPredictor.open(model_dir, "fp32")
    if train_photos:
        start = time.perf_counter()
        _, used = quantize_int8(model_dir, train_photos)
        say(f"quantised model.int8.onnx on {used} training photos ({time.perf_counter() - start:.1f} s)")
        loaders[PATH_NAMES["onnx", "int8"]] = lambda: OnnxPredictor.open(model_dir, "int8")
    else:
        say("no training photos to calibrate int8 on: the int8 copy is not made")
    return loaders


def check_scoring_paths(model_dir: str | os.PathLike, train_dir: str | os.PathLike | None = None,
                        val_dir: str | os.PathLike | None = None, *, calibration: int = CALIBRATION_PHOTOS,
                        max_photos: int = MAX_CHECK_PHOTOS, workers: int | None = None,
                        min_agreement: float = MIN_COUNT_AGREEMENT,
                        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Check every path this machine has against torch fp32 (see the module docstring); returns the new entry."""
    model_dir = Path(model_dir)
    spec = ModelSpec.from_dict(read_model_config(model_dir))
    own_train, own_val = model_folders(model_dir)
    train_dir, val_dir = train_dir or own_train, val_dir or own_val
    if not val_dir or not Path(val_dir).is_dir():
        raise ModelConfigError(f"no validation folder to check {model_dir} on ({val_dir or 'none recorded'}): "
                               f"pass --val (and --train, for the int8 calibration)")
    samples = evenly_spaced(scan_count_folders(val_dir, spec.max_count, open_top=True), max_photos)
    paths, labels = [p for p, _ in samples], np.array([c for _, c in samples], dtype=np.int64)
    train_photos = []
    if train_dir and Path(train_dir).is_dir():
        found = scan_count_folders(train_dir, spec.max_count, open_top=True)
        train_photos = [p for p, _ in evenly_spaced(found, calibration)]
    side = spec.preprocess.image_size

    exact = Predictor.load_torch(model_dir, precision="fp32")
    reference = _score(exact, paths, workers)
    ok = ~np.isnan(reference).any(axis=1)  # photos that failed to decode are left out of every comparison
    results: dict[str, Any] = {PATH_NAMES["torch", "fp32"]: {
        "passed": True, "why": "the reference", "images_per_s": round(forward_rate(exact, side), 1)}}
    for name, load in _candidates(model_dir, train_photos, say).items():
        predictor = load()
        result = agreement(reference[ok], _score(predictor, paths, workers)[ok], labels[ok], min_agreement)
        result["images_per_s"] = round(forward_rate(predictor, side), 1)
        results[name] = result
        say(f"{name}: {'passed' if result['passed'] else 'FAILED'}: {result['why']}; "
            f"{result['images_per_s']:.0f} images/s forward")
    if "onnx int8" in results and not results["onnx int8"]["passed"]:
        say(f"the int8 copy failed its agreement check: {model_dir.name} keeps fp32")
    entry = {"machine": this_machine(), "threads": torch.get_num_threads(),
             "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "val": str(val_dir), "photos": int(ok.sum()), "labels": "the validation folders' counts",
             "calibration": {"train": str(train_dir) if train_photos else None, "photos": len(train_photos)},
             "criteria": {"min_count_agreement": min_agreement, "max_mismatch_diff": MAX_MISMATCH_DIFF},
             "paths": results}
    record = read_record(model_dir)
    record["checks"] = [c for c in record["checks"] if not same_machine(c.get("machine", {}), entry["machine"])]
    record["checks"].append(entry)
    write_json(model_dir / RECORD_FILE, record)
    return entry

