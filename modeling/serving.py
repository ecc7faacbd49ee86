"""Scoring a trained model on photos: request parsing, the response dict, and `ScoringModel`.

Shared by the SageMaker handlers (modeling.inference), the local Predictor, the local endpoint and the app, so
every caller gets the same JSON:

    {"predicted_count": 3, "predicted_label": "3", "probabilities": [p0..pN], "counts": [0..N],
     "labels": ["0".."N"], "top_class": "closed",
     "expected_count": 4, "mismatch_probability": 0.83, "beyond_range": false}   (last three only with an expected count)

An open model (top_class "open") has one more class, "N+1 or more": its probability ends `probabilities`, its label
("6+" for N = 5) ends `labels`, and its entry in `counts` is null (no exact count); when it is the most likely
class, `predicted_count` is null and `predicted_label` "6+". A record above N is checked against it (mismatch
probability 1 - p("6+")). A closed model has no class for a record above N: its answer has
"mismatch_probability": null, "beyond_range": true and a "note" saying why (any number would be fixed by
construction, whatever the photo shows).

Requests: a raw image body (image/jpeg, image/png, application/x-image), or application/json with
{"image": "<base64>", "expected_count": 4} or {"instances": [{"image": ..., "expected_count": ...}, ...]}
(answered as {"predictions": [...]}).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from modeling.artifacts import load_model_dir
from modeling.counts import CountClasses
from modeling.metrics import mismatch_probability
from modeling.model import ModelSpec
from modeling.preprocessing import (
    EvalTransform,
    ImageDecodeError,
    load_image,
    normalize_batch,
    probe_image,
    stack_images,
)

IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_CONTENT_TYPE = "application/json"
REQUEST_CONTENT_TYPES = (*IMAGE_CONTENT_TYPES, JSON_CONTENT_TYPE)
RESPONSE_CONTENT_TYPES = (JSON_CONTENT_TYPE,)
MAX_INSTANCES = 64
MAX_EXPECTED_COUNT = 2**31 - 1  # far above any bin's record, and safely inside the int64 maths of metrics.py
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class RequestError(ValueError):
    """A request the model cannot answer; the message says what was wrong and what is accepted, `status` the HTTP
    status an endpoint answers with (415: a content type it does not read, 406: one it cannot answer in)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- requests

@dataclass(frozen=True)
class ScoringRequest:
    """Images (raw bytes, header-checked) with optional expected counts; `batch`: answer with {"predictions"}."""

    images: list[bytes]
    expected_counts: list[int | None]
    batch: bool = False


def media_type(content_type: str | None) -> str:
    """"Application/JSON; charset=utf-8" -> "application/json"."""
    return (content_type or "").split(";")[0].strip().lower()


def _as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def parse_request(body: bytes | bytearray | memoryview | str, content_type: str | None) -> ScoringRequest:
    """Turn a request body into images and expected counts; RequestError says what is wrong and what is accepted."""
    kind = media_type(content_type)
    if kind in IMAGE_CONTENT_TYPES:
        request = ScoringRequest([_as_bytes(body)], [None])
    elif kind == JSON_CONTENT_TYPE:
        request = _parse_json(_as_bytes(body))
    else:
        raise RequestError(
            f"unsupported content type {content_type!r}; send one of: {', '.join(REQUEST_CONTENT_TYPES)}", 415)
    for i, image in enumerate(request.images):
        try:
            probe_image(image)
        except ImageDecodeError as exc:
            where = f"instance {i}: " if request.batch else ""
            raise RequestError(f"{where}undecodable image: {exc}") from None
    return request


def _parse_json(raw: bytes) -> ScoringRequest:
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # bad JSON, bad UTF-8, or an integer past Python's 4300-digit conversion limit
        reason = str(exc).split(";")[0]  # not Python's hint to raise sys.set_int_max_str_digits
        raise RequestError(f"body is not valid JSON ({reason}); send {{\"image\": \"<base64>\"}}") from None
    except RecursionError:  # nesting deeper than the interpreter's recursion limit: no image request is that
        raise RequestError("body is not valid JSON (nested too deeply); send {\"image\": \"<base64>\"}") from None
    if isinstance(doc, dict) and "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("\"instances\" must be a non-empty list of {\"image\": \"<base64>\", ...} objects")
        if len(instances) > MAX_INSTANCES:
            raise RequestError(f"{len(instances)} instances in one request; at most {MAX_INSTANCES}")
        parsed = [_parse_instance(item, f"instance {i}: ") for i, item in enumerate(instances)]
        return ScoringRequest([p[0] for p in parsed], [p[1] for p in parsed], batch=True)
    image, expected = _parse_instance(doc, "")
    return ScoringRequest([image], [expected])


def _parse_instance(doc: Any, where: str) -> tuple[bytes, int | None]:
    if not isinstance(doc, dict) or "image" not in doc:
        raise RequestError(f"{where}JSON must be an object with \"image\" (base64 JPEG or PNG) and optionally "
                           f"\"expected_count\" (integer >= 0)")
    return _decode_base64(doc["image"], where), _expected_count(doc.get("expected_count"), where)


def _decode_base64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(f"{where}\"image\" must be a base64 string")
    if value.startswith("data:") and "," in value:  # data URLs from browsers
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}\"image\" is not valid base64") from None


def _expected_count(value: Any, where: str) -> int | None:
    """An integer (or an integral float such as 4.0) in 0..MAX_EXPECTED_COUNT; JSON's NaN, Infinity and 1e400
    are floats that are not integral, so they are refused here rather than crash int() or the metrics."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EXPECTED_COUNT:
        raise RequestError(f"{where}\"expected_count\" must be an integer >= 0 and <= {MAX_EXPECTED_COUNT}, "
                           f"got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A rejected value as the error message shows it: short, whatever its size."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- responses

def prediction_response(probs: np.ndarray, classes: CountClasses, expected_count: int | None = None
                        ) -> dict[str, Any]:
    """The JSON dict for one photo's probabilities (the most likely class; the mismatch probability when an
    expected count is given)."""
    probs = np.asarray(probs, dtype=np.float64)
    best = int(np.argmax(probs))
    out: dict[str, Any] = {
        "predicted_count": None if best == classes.open_index else best,
        "predicted_label": classes.labels[best],
        "probabilities": [float(p) for p in probs],
        "counts": [None if c == classes.open_index else c for c in classes.class_to_count],
        "labels": list(classes.labels),
        "top_class": classes.top_class,
    }
    if expected_count is not None:
        out["expected_count"] = int(expected_count)
        out["beyond_range"] = classes.beyond_range(int(expected_count))
        if out["beyond_range"]:
            out["mismatch_probability"] = None
            out["note"] = (f"the record ({int(expected_count)}) is beyond this closed model's range "
                           f"0..{classes.max_count}: the photo cannot be checked against it")
        else:
            out["mismatch_probability"] = float(mismatch_probability(probs, expected_count, open_top=classes.open_top))
    return out


def encode_response(prediction: dict[str, Any] | list[dict[str, Any]], accept: str | None) -> tuple[str, str]:
    """(JSON body, content type); a list becomes {"predictions": [...]}."""
    kind = media_type(accept)
    if kind not in ("", "*/*", JSON_CONTENT_TYPE):
        raise RequestError(f"cannot answer in {accept!r}; accepted: {', '.join(RESPONSE_CONTENT_TYPES)}", 406)
    body = {"predictions": prediction} if isinstance(prediction, list) else prediction
    return json.dumps(body), JSON_CONTENT_TYPE


# ---------------------------------------------------------------- the scoring model

def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX (where bf16 convolutions run about twice as fast as fp32)."""
    if not sys.platform.startswith("linux") or not os.path.exists("/proc/cpuinfo"):
        return False
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: fp16 on CUDA, bf16 on CPUs with native bf16, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"Invalid precision {precision!r}. Only {', '.join(PRECISIONS)} are supported.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a torchvision ResNet with every BatchNorm folded into the conv before it.

    Same outputs up to float rounding (~1e-6), one pass over each activation fewer; in bf16 autocast it also
    saves the casts around BatchNorm, which autocast runs in fp32.
    """
    folded = copy.deepcopy(model).eval()

    def fuse(parent: nn.Module, conv: str, bn: str) -> None:
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())

    fuse(folded, "conv1", "bn1")
    for layer in (folded.layer1, folded.layer2, folded.layer3, folded.layer4):
        for block in layer:
            for i in (1, 2, 3):
                if hasattr(block, f"conv{i}"):
                    fuse(block, f"conv{i}", f"bn{i}")
            if block.downsample is not None:
                fuse(block.downsample, "0", "1")
    return folded


class ScoringModel:
    """A trained model ready to score: eval mode, BatchNorm folded, channels_last, inference_mode.

    `precision` "auto" runs the convolutions in bf16 on CPUs with native bf16 (about 2x the fp32 throughput;
    probabilities differ from fp32 in the second or third decimal) and in fp16 on CUDA; "fp32" is exact.
    """

    runtime = "torch"

    def __init__(self, model: nn.Module, spec: ModelSpec, device: str | torch.device = "cpu",
                 precision: str = "fp32") -> None:
        self.device = torch.device(device)
        self.spec = spec
        self.precision = resolve_precision(precision, self.device)
        self.model = fold_batchnorm(model).to(self.device).to(memory_format=torch.channels_last)
        self.transform = EvalTransform(spec.preprocess.image_size)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32"):
        """Rebuild the model from model.pth + model_config.json (the head is checked against class_to_count)."""
        model, spec = load_model_dir(model_dir, "cpu")
        return cls(model, spec, device, precision)

    @property
    def class_to_count(self) -> list[int]:
        return list(self.spec.class_to_count)

    def decode(self, data: bytes | str | os.PathLike) -> Image.Image:
        """Bytes or a path -> RGB image, JPEGs in draft mode at the model's size; raises ImageDecodeError."""
        return load_image(data, self.spec.preprocess.image_size)

    def to_input(self, img: Image.Image) -> torch.Tensor:
        return self.transform(img)

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) uint8 -> normalised float32 on the model's device, channels_last."""
        return normalize_batch(batch.to(self.device, non_blocking=True), self.spec.preprocess.mean,
                               self.spec.preprocess.std, torch.channels_last)

    @torch.inference_mode()
    def forward_probabilities(self, x: torch.Tensor) -> np.ndarray:
        """Normalised input (see `inputs`) -> (N, C) float64 probabilities, in the scoring precision."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = self.model(x)
        return logits.float().softmax(dim=1).double().cpu().numpy()

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """(N, 3, S, S) uint8 batch -> (N, C) float64 probabilities."""
        if batch.shape[0] == 0:
            return np.zeros((0, self.spec.num_classes))
        return self.forward_probabilities(self.inputs(batch))

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded RGB images -> (N, C) probabilities, one batch."""
        if not images:
            return np.zeros((0, self.spec.num_classes))
        return self.probabilities(stack_images([self.to_input(img) for img in images]))

    def predict_bytes(self, data: bytes, expected_count: int | None = None) -> dict[str, Any]:
        """One photo's bytes -> the endpoint's JSON dict; raises ImageDecodeError for a bad image."""
        probs = self.predict_images([self.decode(data)])[0]
        return prediction_response(probs, self.spec.classes, expected_count)

    def answer(self, request: ScoringRequest) -> dict[str, Any] | list[dict[str, Any]]:
        """Score a parsed request: a dict for one image, a list for an "instances" request."""
        try:
            images = [self.decode(data) for data in request.images]
        except ImageDecodeError as exc:
            raise RequestError(f"undecodable image: {exc}") from None
        probs = self.predict_images(images)
        answers = [prediction_response(p, self.spec.classes, e)
                   for p, e in zip(probs, request.expected_counts, strict=True)]
        return answers if request.batch else answers[0]
