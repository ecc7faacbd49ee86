"""The four SageMaker handlers on a tiny trained model: round trips, and clear errors for bad requests."""

from __future__ import annotations

import base64
import inspect
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from modeling import inference
from modeling.artifacts import load_model_dir
from modeling.predictor import Predictor
from modeling.preprocessing import normalize_batch
from modeling.serving import RequestError, ScoringModel
from tests.modeling_fixtures import jpeg_bytes, png_bytes, tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory):
    return tiny_model(tiny_dataset, tmp_path_factory)


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    return inference.model_fn(str(tiny_model_dir))


def _invoke(model, body, content_type: str, accept: str = "application/json"):
    data = inference.input_fn(body, content_type)
    body, out_type = inference.output_fn(inference.predict_fn(data, model), accept)
    assert out_type == "application/json"
    return json.loads(body)


def test_handlers_take_exactly_the_arguments_the_toolkit_passes():
    # the inference toolkit counts parameters to decide whether to pass a context
    arity = {name: len(inspect.signature(getattr(inference, name)).parameters)
             for name in ("model_fn", "input_fn", "predict_fn", "output_fn")}
    assert arity == {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2}


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/x-image", "image/jpeg; charset=binary"])
def test_raw_jpeg_round_trip(served, content_type):
    answer = _invoke(served, jpeg_bytes(90, 70), content_type)
    assert set(answer) == {"predicted_count", "predicted_label", "probabilities", "counts", "labels", "top_class"}
    # the tiny model is open: its last class is "6+", which has no exact count
    assert answer["counts"] == [0, 1, 2, 3, 4, 5, None] and answer["labels"][-1] == "6+"
    assert answer["top_class"] == "open"
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-6)
    best = int(np.argmax(answer["probabilities"]))
    assert answer["predicted_label"] == answer["labels"][best]
    assert answer["predicted_count"] == (None if best == 6 else best)


def test_png_round_trip(served):
    answer = _invoke(served, png_bytes(64, 80), "image/png")  # half-transparent green
    assert len(answer["probabilities"]) == 7
    best = int(np.argmax(answer["probabilities"]))
    assert answer["predicted_label"] == answer["labels"][best]
    # scored as the photo a viewer shows: the transparent pixels over white, as an RGB PNG of those pixels is
    rgba = Image.open(io.BytesIO(png_bytes(64, 80)))
    shown = Image.new("RGB", rgba.size, (255, 255, 255))
    shown.paste(rgba, mask=rgba.getchannel("A"))
    buf = io.BytesIO()
    shown.save(buf, "PNG")
    assert answer["probabilities"] == pytest.approx(_invoke(served, buf.getvalue(), "image/png")["probabilities"],
                                                    abs=1e-9)
    buf = io.BytesIO()
    rgba.convert("RGB").save(buf, "PNG")  # the alpha channel dropped: other pixels, another answer
    assert not np.allclose(answer["probabilities"], _invoke(served, buf.getvalue(), "image/png")["probabilities"],
                           atol=1e-4)


def test_json_with_expected_count_reports_the_mismatch_probability(served):
    image = jpeg_bytes(80, 60, (30, 90, 160))
    body = json.dumps({"image": base64.b64encode(image).decode(), "expected_count": 2})
    answer = _invoke(served, body, "application/json")
    assert answer["expected_count"] == 2
    assert answer["mismatch_probability"] == pytest.approx(1 - answer["probabilities"][2])
    raw = _invoke(served, image, "image/jpeg")
    assert raw["probabilities"] == pytest.approx(answer["probabilities"])
    # a record above 5 is checked against the open class 6+: 1 - p(6+), not 1.0 by construction
    body = json.dumps({"image": base64.b64encode(image).decode(), "expected_count": 9})
    above = _invoke(served, body, "application/json")
    assert above["beyond_range"] is False
    assert above["mismatch_probability"] == pytest.approx(1 - answer["probabilities"][6])
    assert above["mismatch_probability"] < 1.0


def test_json_instances_answer_in_order(served):
    images = [jpeg_bytes(80, 60, (200, 10, 10)), jpeg_bytes(50, 90, (10, 10, 200))]
    body = {"instances": [{"image": base64.b64encode(images[0]).decode(), "expected_count": 9},
                          {"image": "data:image/jpeg;base64," + base64.b64encode(images[1]).decode()}]}
    answer = _invoke(served, json.dumps(body).encode(), "application/json")
    first, second = answer["predictions"]
    # 9 items: the open model's "6+" class covers it, so the record is wrong by p(not 6+)
    assert first["mismatch_probability"] == pytest.approx(1 - first["probabilities"][6])
    assert "expected_count" not in second
    alone = _invoke(served, images[1], "image/jpeg")["probabilities"]
    assert second["probabilities"] == pytest.approx(alone, abs=1e-5)  # batch of 2 vs 1: float rounding only


def test_handler_and_predictor_share_one_code_path(served, tiny_model_dir):
    image = jpeg_bytes(120, 100, (90, 140, 60))
    local = Predictor.load(tiny_model_dir, precision="fp32").predict_bytes(image, expected_count=3)
    remote = _invoke(served, json.dumps({"image": base64.b64encode(image).decode(), "expected_count": 3}),
                     "application/json")
    assert local["predicted_count"] == remote["predicted_count"]
    assert local["probabilities"] == pytest.approx(remote["probabilities"], abs=1e-9)
    assert local["mismatch_probability"] == pytest.approx(remote["mismatch_probability"], abs=1e-9)


def test_normalisation_is_read_back_from_model_config(tiny_model_dir, tmp_path):
    changed = tmp_path / "model"
    shutil.copytree(tiny_model_dir, changed)
    config = json.loads((changed / "model_config.json").read_text())
    config["mean"], config["std"] = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    (changed / "model_config.json").write_text(json.dumps(config))
    image = jpeg_bytes(70, 70)
    original = _invoke(inference.model_fn(str(tiny_model_dir)), image, "image/jpeg")["probabilities"]
    altered = _invoke(inference.model_fn(str(changed)), image, "image/jpeg")["probabilities"]
    assert not np.allclose(original, altered, atol=1e-4)


@pytest.mark.parametrize(("body", "content_type", "message"), [
    (b"a,b,c", "text/csv", "unsupported content type 'text/csv'; send one of: image/jpeg, image/png"),
    (jpeg_bytes(), None, "unsupported content type None"),
    (b"\x00\x01 not an image", "image/jpeg", "undecodable image: not a recognised image format"),
    (b"", "image/png", "undecodable image: empty input"),
    (b"{not json", "application/json", "body is not valid JSON"),
    (json.dumps({"picture": "x"}), "application/json", 'JSON must be an object with "image"'),
    (json.dumps({"image": "***"}), "application/json", "not valid base64"),
    (json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), "expected_count": -1}), "application/json",
     "expected_count\" must be an integer >= 0"),
    (json.dumps({"instances": []}), "application/json", "non-empty list"),
])
def test_bad_requests_say_what_was_wrong_and_what_is_accepted(body, content_type, message):
    with pytest.raises(RequestError) as info:
        inference.input_fn(body, content_type)
    assert message in str(info.value)


def _with_expected(raw_count: str) -> str:
    """A JSON body whose expected_count is the literal text `raw_count` (NaN, Infinity, 1e400 are Python's JSON)."""
    image = json.dumps(base64.b64encode(jpeg_bytes()).decode())
    return f'{{"image": {image}, "expected_count": {raw_count}}}'


NOT_A_COUNT = '"expected_count" must be an integer >= 0'


@pytest.mark.parametrize(("raw_count", "message_start"), [
    *((raw, NOT_A_COUNT) for raw in ["NaN", "Infinity", "-Infinity", "1e400", "2.5", str(2**31), str(10**30), '"3"',
                                     "true", "[1]"]),
    ("9" * 5000, "body is not valid JSON"),  # beyond Python's integer-parsing limit: the JSON parser refuses it
])
def test_expected_count_out_of_range_or_not_an_integer_is_a_request_error(raw_count, message_start):
    with pytest.raises(RequestError) as info:
        inference.input_fn(_with_expected(raw_count), "application/json")
    message = str(info.value)
    assert message.startswith(message_start), message
    assert len(message) < 400  # a huge number is not echoed in full


@pytest.mark.parametrize(("raw_count", "count"), [("4", 4), ("4.0", 4), ("0", 0), (str(2**31 - 1), 2**31 - 1)])
def test_integral_expected_counts_are_accepted(served, raw_count, count):
    request = inference.input_fn(_with_expected(raw_count), "application/json")
    assert request.expected_counts == [count] and type(request.expected_counts[0]) is int
    answer = _invoke(served, _with_expected(raw_count), "application/json")
    assert answer["expected_count"] == count and 0.0 <= answer["mismatch_probability"] <= 1.0


def test_truncated_jpeg_fails_with_a_clear_message(served):
    data = inference.input_fn(jpeg_bytes(300, 200)[:700], "image/jpeg")  # the header is intact
    with pytest.raises(RequestError, match="undecodable image: truncated image"):
        inference.predict_fn(data, served)


def test_unsupported_accept_is_refused(served):
    prediction = inference.predict_fn(inference.input_fn(jpeg_bytes(), "image/jpeg"), served)
    with pytest.raises(RequestError, match="cannot answer in 'text/csv'; accepted: application/json"):
        inference.output_fn(prediction, "text/csv")
    assert inference.output_fn(prediction, "*/*")[1] == "application/json"


def test_serving_folds_batchnorm_without_changing_the_answer(tiny_model_dir):
    plain, spec = load_model_dir(tiny_model_dir)
    scorer = ScoringModel(plain, spec, precision="fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scorer.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())  # the caller's model is untouched
    batch = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        expected = plain(normalize_batch(batch, spec.preprocess.mean, spec.preprocess.std)).softmax(1).numpy()
    assert np.allclose(scorer.probabilities(batch), expected, atol=1e-5)
