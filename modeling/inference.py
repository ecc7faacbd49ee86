"""SageMaker serving handlers for the PyTorch inference container (the source dir's inference.py imports these).

    model_fn(model_dir)                 -> ScoringModel (model.pth + model_config.json, head checked)
    input_fn(body, content_type)        -> ScoringRequest; image/jpeg, image/png, application/x-image, or
                                           application/json {"image": base64, "expected_count": 4}
                                           / {"instances": [...]}
    predict_fn(request, model)          -> dict (or list of dicts for "instances")
    output_fn(prediction, accept)       -> (JSON text, "application/json")

Bad input raises RequestError whose message says what was wrong and what is accepted. In the container, AWS's
inference toolkit answers an exception with 500 unless it is one of its own errors, which carry a status: there a
RequestError is raised as the toolkit's error with its status, 400, 406 or 415 (the toolkit is imported only when
present; it is never needed elsewhere). The toolkit counts each handler's parameters, so none of them may take
optional extras.
Precision: fp32 unless the model's environment sets BINAUDIT_PRECISION (auto, fp32, bf16, fp16).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from modeling.serving import RequestError, ScoringModel, ScoringRequest, encode_response, parse_request

try:  # AWS's inference toolkit, in the serving container only
    from sagemaker_inference.errors import GenericInferenceToolkitError
except ImportError:
    GenericInferenceToolkitError = None

__all__ = ["RequestError", "input_fn", "model_fn", "output_fn", "predict_fn"]


def _client_error(exc: RequestError) -> Exception:
    """The request's fault: its 4xx (400, 406, 415) with the message in the container, the RequestError itself
    elsewhere."""
    return exc if GenericInferenceToolkitError is None else GenericInferenceToolkitError(exc.status, str(exc))


def model_fn(model_dir: str) -> ScoringModel:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return ScoringModel.load(model_dir, device, precision=os.environ.get("BINAUDIT_PRECISION", "fp32"))


def input_fn(request_body: Any, request_content_type: str) -> ScoringRequest:
    try:
        return parse_request(request_body, request_content_type)
    except RequestError as exc:
        raise _client_error(exc) from None


def predict_fn(input_data: ScoringRequest, model: ScoringModel) -> dict[str, Any] | list[dict[str, Any]]:
    try:
        return model.answer(input_data)
    except RequestError as exc:
        raise _client_error(exc) from None


def output_fn(prediction: dict[str, Any] | list[dict[str, Any]], accept: str) -> tuple[str, str]:
    try:
        return encode_response(prediction, accept)
    except RequestError as exc:
        raise _client_error(exc) from None
