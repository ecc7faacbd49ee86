"""Batched local scoring of many photos: the app, the local endpoint, `evaluate` and `predict` call this.

Two engines run the model: torch (`Predictor`) and ONNX Runtime (`OnnxPredictor`, CPU, over the copies that
`modeling.onnx_export` writes); `Predictor.load` picks the scoring path (modeling.scoring_paths).

DataLoader worker processes decode JPEGs (draft mode) and resize them to uint8 tensors while the main process
runs the model on the previous batch (BatchNorm folded, channels_last, inference_mode, bf16 on CPUs that have
it natively). The workers run at low priority, so on a small machine they use what the model leaves idle. A
photo that cannot be decoded is reported with its error and skipped; the rest are scored, in input order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from binaudit.csvsafe import spreadsheet_safe
from modeling.artifacts import read_model_config
from modeling.counts import CountClasses
from modeling.model import ModelConfigError, ModelSpec
from modeling.onnx_export import FP32_FILE, INPUT_NAME, INT8_FILE, OUTPUT_NAME, export_fp32
from modeling.preprocessing import EvalTransform, ImageDecodeError, load_image, stack_images
from modeling.serving import ScoringModel

ONNX_PRECISIONS = ("fp32", "int8")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class PathResult(NamedTuple):
    path: str
    probs: np.ndarray | None  # (C,) over the classes (0..N, and N+1 or more if open), None when the photo failed
    error: str | None


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given; folders replaced by their *.jpg/*.jpeg/*.png files, recursively, in sorted order."""
    out: list[str] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(str(path))  # a missing file is reported per path, not fatal for the rest
    return out


def default_workers() -> int:
    """One decoding process per core, at most four (they run at low priority; see _lower_priority)."""
    return max(1, min(4, os.cpu_count() or 1))


def _lower_priority(_worker_id: int) -> None:
    """Decoding workers yield to the model: they fill the cores its threads leave idle instead of preempting one
    of its OpenMP threads, which would stall the whole team (on 2 cores: ~8% more photos/s than normal priority).
    """
    if hasattr(os, "nice"):
        os.nice(19)


class _DecodeDataset(Dataset):
    """Path i -> (i, uint8 tensor or None, error or None); runs in DataLoader workers."""

    def __init__(self, paths: Sequence[str], scorer: ScoringModel) -> None:
        self.paths = paths
        self.side = scorer.spec.preprocess.image_size
        self.transform = scorer.transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.transform(load_image(self.paths[index], self.side)), None
        except ImageDecodeError as exc:
            return index, None, str(exc)


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]
             ) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, t) for i, t, _ in items if t is not None]
    errors = [(i, e) for i, t, e in items if t is None]
    batch = stack_images([t for _, t in good]) if good else None
    return [i for i, _ in good], batch, errors


class Predictor(ScoringModel):
    """`Predictor.load(model_dir)`, then `predict_images`, `predict_bytes` or `predict_paths`.

    `path` says which scoring path it runs and why (see modeling.scoring_paths).
    """

    path: str = ""

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "auto",
             runtime: str = "auto") -> Predictor:
        """The scoring path for runtime x precision on this machine (`modeling.scoring_paths.choose_path`):
        "auto" is the fastest path that passed its agreement check here (torch fp32 where none did)."""
        from modeling.scoring_paths import choose_path

        choice = choose_path(model_dir, runtime, precision, str(device))
        if choice.runtime == "onnx":
            predictor: Predictor = OnnxPredictor.open(model_dir, choice.precision)
        else:
            predictor = cls.load_torch(model_dir, device, choice.precision)
        predictor.path = f"{choice.name} ({choice.reason})"
        return predictor

    @classmethod
    def load_torch(cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32"
                   ) -> Predictor:
        """The torch path as asked, no choice made: "auto" is bf16 on CPUs with native bf16, fp16 on CUDA."""
        return super().load(model_dir, device, precision)

    def predict_paths(self, paths: Sequence[str | os.PathLike], batch_size: int = 16, workers: int | None = None,
                      progress: bool | None = None) -> Iterator[PathResult]:
        """Score image files in batches; yields one PathResult per path, in input order.

        workers: decoding processes at low priority (None: one per core, at most 4; 0: decode in this process).
        progress: tqdm bar; None shows it on a terminal only.
        """
        paths = [str(p) for p in paths]
        if not paths:
            return
        workers = default_workers() if workers is None else workers
        loader = DataLoader(_DecodeDataset(paths, self), batch_size=batch_size, num_workers=workers,
                            collate_fn=_collate, prefetch_factor=2 if workers else None,
                            worker_init_fn=_lower_priority if workers else None,
                            pin_memory=self.device.type == "cuda")
        bar = _progress_bar(len(paths), progress)
        try:
            for indices, batch, errors in loader:
                probs = self.probabilities(batch) if batch is not None else np.zeros((0, self.spec.num_classes))
                results = {i: PathResult(paths[i], p, None) for i, p in zip(indices, probs, strict=True)}
                results.update({i: PathResult(paths[i], None, e) for i, e in errors})
                for i in sorted(results):
                    yield results[i]
                if bar is not None:
                    bar.update(len(results))
        finally:
            if bar is not None:
                bar.close()


class OnnxPredictor(Predictor):
    """Scores with onnxruntime's CPU provider; `precision` "fp32" (model.onnx) or "int8" (model.int8.onnx)."""

    runtime = "onnx"

    def __init__(self, model_file: Path, spec: ModelSpec, precision: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        if precision not in ONNX_PRECISIONS:
            raise ValueError(f"ONNX Runtime scores in {' or '.join(ONNX_PRECISIONS)}, not {precision!r}")
        self.device = torch.device("cpu")
        self.spec = spec
        self.precision = precision
        self.transform = EvalTransform(spec.preprocess.image_size)
        self.model_file = model_file
        options = ort.SessionOptions()
        # as many threads as torch would use (OMP_NUM_THREADS, or one per core), one operator at a time
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: a spinning pool takes the CPU the decoding workers need between
        # batches (measured: int8 end to end 90/s with spinning, 108/s without, forward-only unchanged)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for a bad file
            raise ModelConfigError(f"cannot load {model_file} ({exc})") from None

    @classmethod
    def open(cls, model_dir: str | os.PathLike, precision: str = "fp32", threads: int | None = None
             ) -> OnnxPredictor:
        """model.onnx (exported now when missing, cached beside model.pth) or model.int8.onnx (must exist)."""
        model_dir = Path(model_dir)
        spec = ModelSpec.from_dict(read_model_config(model_dir))
        if precision == "int8":
            model_file = model_dir / INT8_FILE
            if not model_file.is_file():
                raise ModelConfigError(f"no {INT8_FILE} in {model_dir}: run `python -m modeling check "
                                       f"--model-dir {model_dir}` to quantise and check it")
        else:
            model_file = model_dir / FP32_FILE
            if not model_file.is_file():
                export_fp32(model_dir)
        return cls(model_file, spec, precision, threads)

    def inputs(self, batch: torch.Tensor) -> np.ndarray:
        """(N, 3, S, S) uint8 (channels_last memory from the workers) -> the (N, S, S, 3) uint8 array ONNX takes."""
        return np.ascontiguousarray(batch.permute(0, 2, 3, 1).numpy())

    def forward_probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return torch.from_numpy(logits).float().softmax(dim=1).double().numpy()


def _progress_bar(total: int, enabled: bool | None):
    if enabled is False:
        return None
    from tqdm import tqdm  # local tool only; the SageMaker container never imports this module

    return tqdm(total=total, unit="img", desc="scoring", disable=None if enabled is None else not enabled)


def write_predictions_csv(results: Iterable[PathResult], out: str | os.PathLike, classes: CountClasses
                          ) -> tuple[int, int]:
    """path, bin_id, predicted_count (argmax, as its label: "6+" for the open class), p<label>..., error;
    returns (scored, failed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scored = failed = 0
    labels = classes.labels
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "bin_id", "predicted_count", *(f"p{label}" for label in labels), "error"])
        for r in results:
            path, bin_id = spreadsheet_safe(str(r.path)), spreadsheet_safe(Path(r.path).stem)  # names are anyone's
            if r.probs is None:
                failed += 1
                writer.writerow([path, bin_id, "", *([""] * len(labels)), spreadsheet_safe(r.error)])
            else:
                scored += 1
                writer.writerow([path, bin_id, labels[int(np.argmax(r.probs))], *(f"{p:.6f}" for p in r.probs), ""])
    os.replace(tmp, out)
    return scored, failed
