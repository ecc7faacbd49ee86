"""The model as ONNX for local CPU scoring: an fp32 copy and an int8 copy, written beside model.pth.

    model.onnx        BatchNorm folded into the convolutions; normalisation inside the graph
    model.int8.onnx   static int8 (QDQ, per-channel weights) calibrated on photos of the model's own training split;
                      the first convolution and the classifier stay fp32 (see quantize_int8)

The input layout is fixed: `images`, uint8, (batch, side, side, 3) — the squashed photos exactly as the decoding
workers hand them over (`preprocessing.stack_images` in channels_last order is this memory), so a batch reaches
ONNX Runtime without a copy; `logits` (batch, classes) comes out. The normalisation in the graph is
`preprocessing.normalize_batch` itself, traced, so the two cannot drift apart.

Local tooling only: onnxruntime, onnx and onnxscript are not in SageMaker's PyTorch containers, so nothing that
train.py or inference.py imports may import this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modeling.artifacts import load_model_dir, read_model_config
from modeling.model import ModelSpec
from modeling.preprocessing import EvalTransform, ImageDecodeError, load_image, normalize_batch
from modeling.serving import fold_batchnorm

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
OPSET = 18
# the calibrator stacks every batch's activations, so all batches must have the same size: 300 photos = 30 batches
CALIBRATION_BATCH = 10
# activations are clipped at this percentile of what the calibration photos produce: the rare extreme values
# would otherwise stretch the int8 scale for every photo (plain min/max moved the mismatch probability 3x more)
CALIBRATION_PERCENTILE = 99.999


class UInt8Input(nn.Module):
    """(N, S, S, 3) uint8 -> the trained model's logits, through the shared normalisation."""

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = spec.preprocess.mean, spec.preprocess.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(normalize_batch(images.permute(0, 3, 1, 2), self.mean, self.std))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_fp32(model_dir: str | os.PathLike) -> Path:
    """Write model_dir/model.onnx from model.pth (replacing it atomically); returns its path."""
    model_dir = Path(model_dir)
    model, spec = load_model_dir(model_dir)
    wrapped = UInt8Input(fold_batchnorm(model), spec).eval()
    side = spec.preprocess.image_size
    example = torch.zeros((2, side, side, 3), dtype=torch.uint8)
    out = model_dir / FP32_FILE
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals say nothing about this model
        staged = Path(tmp) / FP32_FILE
        program = torch.onnx.export(
            wrapped, (example,), dynamo=True, verbose=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
        )
        program.save(str(staged), external_data=False)
        os.replace(staged, out)
    return out


class _PhotoBatches:
    """onnxruntime's CalibrationDataReader over photos: the shared decode and squash, uint8 NHWC batches."""

    def __init__(self, paths: Sequence[str], side: int) -> None:
        self.paths, self.side, self.position = list(paths), side, 0
        self.transform = EvalTransform(side)
        self.used = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next full batch (a short last one is dropped, unless it would be the only one)."""
        images: list[np.ndarray] = []
        while self.position < len(self.paths) and len(images) < CALIBRATION_BATCH:
            path = self.paths[self.position]
            self.position += 1
            try:
                images.append(self.transform(load_image(path, self.side)).permute(1, 2, 0).numpy())
            except ImageDecodeError:
                continue  # a bad training photo calibrates nothing; the others still do
        if not images or (len(images) < CALIBRATION_BATCH and self.used):
            return None
        self.used += len(images)
        return {INPUT_NAME: np.ascontiguousarray(np.stack(images))}


def _kept_in_fp32(model_file: Path) -> list[str]:
    """The first convolution (it sees raw pixels: three channels, 7x7, little compute) and the classifier (it
    makes the logits the counts are read from): quantising these two moved the answers most, for ~7% of the
    work of a ResNet18 at 224 px."""
    import onnx

    nodes = onnx.load(str(model_file), load_external_data=False).graph.node
    first_conv = [n.name for n in nodes if n.op_type == "Conv"][:1]
    return first_conv + [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]


def quantize_int8(model_dir: str | os.PathLike, calibration_paths: Sequence[str]) -> tuple[Path, int]:
    """Write model_dir/model.int8.onnx from model.onnx, calibrated on `calibration_paths`; (path, photos used)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model_dir = Path(model_dir)
    spec = ModelSpec.from_dict(read_model_config(model_dir))
    source = model_dir / FP32_FILE
    if not source.is_file():
        source = export_fp32(model_dir)
    reader = _PhotoBatches(calibration_paths, spec.preprocess.image_size)

    class Reader(CalibrationDataReader):  # the quantizer checks the type
        def get_next(self):
            return reader.get_next()

    out = model_dir / INT8_FILE
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        prepared, staged = Path(tmp) / "prepared.onnx", Path(tmp) / INT8_FILE
        # shape inference and graph folding first, as onnxruntime's quantization guide asks
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator narrates its histograms on stdout
            quantize_static(str(prepared), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
                            nodes_to_exclude=_kept_in_fp32(prepared))
        if reader.used == 0:
            raise ImageDecodeError("no calibration photo could be decoded")
        os.replace(staged, out)
    return out, reader.used

