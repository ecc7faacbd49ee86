"""The batched predictor on ONNX Runtime: the same decoding workers and answers, another engine for the model.

`OnnxPredictor` is a `Predictor` whose forward pass is an onnxruntime session over model.onnx (fp32) or
model.int8.onnx (int8) from `modeling.onnx_export`; batches go in as the uint8 (N, S, S, 3) memory the workers
produce, probabilities come out as float64 like the torch path's. CPU only. Local tooling: the SageMaker
containers have no onnxruntime, and nothing train.py or inference.py imports may import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from modeling.artifacts import read_model_config
from modeling.model import ModelConfigError, ModelSpec
from modeling.onnx_export import FP32_FILE, INPUT_NAME, INT8_FILE, OUTPUT_NAME, export_fp32
from modeling.predictor import Predictor
from modeling.preprocessing import EvalTransform

ONNX_PRECISIONS = ("fp32", "int8")


def onnxruntime_available() -> bool:
    """Whether onnxruntime imports (not merely whether it is on the path: a broken install counts as absent)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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
