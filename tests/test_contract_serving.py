"""Contract: the model.tar.gz a deployment repacks is served by AWS's PyTorch inference toolkit on TorchServe.

The CreateModel request moto received names the archive (ModelDataUrl, in moto's S3) and the container environment
(SAGEMAKER_PROGRAM, ...). The archive is unpacked where SageMaker puts it (/opt/ml/model, in a private mount
namespace: see tests/sagemaker_container.py) and the inference image's entry (`serve`: sagemaker-pytorch-inference,
which writes TorchServe's config and starts it) runs under .venv-container with Java. The requests are those an
endpoint and a batch transform send. TorchServe starts once for the module (it takes tens of seconds). What this
cannot show: SageMaker's front end (its own limits and retries), GPUs, and the real image's exact package versions.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import tarfile
import time

import pytest
from PIL import Image

from jobs.sagemaker.aws import split_s3_uri
from modeling.registry import register_model
from tests.aws_shims import record_requests
from tests.conftest import point_boto3_at
from tests.modeling_fixtures import jpeg_bytes, png_bytes, tiny_model
from tests.sagemaker_container import _Reader, container_env, opt_ml, start_container, stop, ts_config
from tests.sagemaker_fixtures import moto_sagemaker

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    def __init__(self, port: int, reader: _Reader) -> None:
        self.port, self.reader = port, reader

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                accept: str = "application/json") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Accept": accept, **({"Content-Type": content_type} if content_type else {})}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def invoke(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        try:
            return self.request("POST", "/invocations", body, content_type)
        except OSError as exc:
            raise AssertionError(f"no answer ({exc}); the server's log:\n{self.reader.text()[-8000:]}") from None


@pytest.fixture(scope="module")
def deployed(moto_server, request, tmp_path_factory, tiny_dataset):
    """A real (tiny) model deployed through the backend against moto: the CreateModel request and the archive."""
    tmp = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(moto_server, mp, tmp)
        sm = moto_sagemaker(moto_server, mp, request, tmp)
        version = register_model(sm.engine, tiny_model(tiny_dataset, tmp_path_factory), sm.workspace.models_dir,
                                 actor="tester")
        with record_requests() as sent:
            sm.make().deploy(version.id, actor="tester")
        model = sent.one("CreateModel")
        bucket, key = split_s3_uri(model["PrimaryContainer"]["ModelDataUrl"])
        archive = sm.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return model, archive


@pytest.fixture(scope="module")
def endpoint(deployed, tmp_path_factory):
    model, archive = deployed
    tmp = tmp_path_factory.mktemp("ts")
    with opt_ml(tmp) as ml, ts_config():
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(ml / "model", filter="data")
        port = _free_port()
        env = container_env("serving", model["PrimaryContainer"].get("Environment"), "http://127.0.0.1:9",
                            SAGEMAKER_BIND_TO_PORT=str(port), SAGEMAKER_MODEL_SERVER_WORKERS="1", LOG_LOCATION=str(tmp / "logs"),
                            METRICS_LOCATION=str(tmp / "logs"))
        proc = start_container(ml, ["serve"], env, cwd=tmp)
        reader = _Reader(proc)
        ep = Endpoint(port, reader)
        try:
            deadline = time.monotonic() + 240
            while True:
                assert proc.poll() is None, "the model server exited:\n" + reader.text()[-6000:]
                assert time.monotonic() < deadline, "the model server did not answer /ping:\n" + reader.text()[-6000:]
                try:
                    if ep.request("GET", "/ping")[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(1)
            yield ep
        finally:
            stop(proc)
            reader.join()


def _answer(status: int, body: bytes) -> dict:
    assert status == 200, body[:2000]
    return json.loads(body)


def test_ping(endpoint):
    assert endpoint.request("GET", "/ping")[0] == 200


def test_the_archive_holds_the_model_and_the_code_the_handler_needs(deployed):
    model, archive = deployed
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert {"model.pth", "model_config.json", "code/inference.py", "code/modeling/serving.py"} <= names
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/x-image"])
def test_a_jpeg_is_counted(endpoint, content_type):
    answer = _answer(*endpoint.invoke(jpeg_bytes(90, 70), content_type))
    # the tiny training set has a 6+ folder, so the served model is open: its last class has no exact count
    assert answer["counts"] == [0, 1, 2, 3, 4, 5, None] and answer["labels"][-1] == "6+"
    assert answer["predicted_label"] in answer["labels"] and answer["predicted_count"] in answer["counts"]
    assert abs(sum(answer["probabilities"]) - 1) < 1e-4


def test_a_png_is_counted(endpoint):
    answer = _answer(*endpoint.invoke(png_bytes(), "image/png"))
    assert len(answer["probabilities"]) == 7  # 0..5 and 6+


def test_json_with_an_expected_count_gets_a_mismatch_probability(endpoint):
    body = json.dumps({"image": base64.b64encode(jpeg_bytes()).decode(), "expected_count": 3}).encode()
    answer = _answer(*endpoint.invoke(body, "application/json"))
    assert answer["expected_count"] == 3
    assert answer["mismatch_probability"] == pytest.approx(1 - answer["probabilities"][3], abs=1e-6)


@pytest.mark.parametrize(("body", "content_type", "said", "expected_status"), [
    (b"\xff\xd8\xff\xe0 this is no JPEG", "image/jpeg", "undecodable image", 400),
    (b'{"image": 12}', "application/json", "must be a base64 string", 400),
    (b"not json", "application/json", "not valid JSON", 400),
    (b"1,2,3", "text/csv", "unsupported content type", 415),  # the local endpoint's status too
])
def test_a_bad_request_is_a_4xx_that_says_what_was_wrong(endpoint, body, content_type, said, expected_status):
    status, answer = endpoint.invoke(body, content_type)
    assert status == expected_status, (status, answer[:1000])
    assert said in answer.decode("utf-8", "replace")


def test_an_answer_in_a_format_the_handler_cannot_write_is_a_406(endpoint):
    status, answer = endpoint.request("POST", "/invocations", jpeg_bytes(), "image/jpeg", accept="text/csv")
    assert status == 406, (status, answer[:1000])
    assert "cannot answer in 'text/csv'" in answer.decode("utf-8", "replace")


def test_what_batch_transform_sends_a_large_photo_whole(endpoint, tmp_path):
    """Batch transform POSTs each object as it is (SplitType None) with the job's content type; a 7 MB photo must
    pass TorchServe's request limit (SageMaker's endpoint caps invocations at 6 MB, a transform at max_payload)."""
    noise = Image.effect_noise((2400, 2400), 100).convert("RGB")
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=100)
    big = buf.getvalue()
    assert len(big) > 7_000_000, len(big)
    answer = _answer(*endpoint.invoke(big, "application/x-image"))
    assert answer["predicted_label"] in answer["labels"]


def test_real_abid_photos_are_counted_by_the_served_model(endpoint, abid_sample):
    """Real bin photos (the ABID sample, where present) through the container's decoding path, as sent raw and as
    JSON with their record's expected count."""
    for path in sorted((abid_sample / "bin-images").glob("*.jpg"))[:5]:
        record = json.loads((abid_sample / "metadata" / f"{path.stem}.json").read_text())
        answer = _answer(*endpoint.invoke(path.read_bytes(), "image/jpeg"))
        assert answer["predicted_count"] in answer["counts"]
        body = json.dumps({"image": base64.b64encode(path.read_bytes()).decode(),
                           "expected_count": record["EXPECTED_QUANTITY"]}).encode()
        assert 0 <= _answer(*endpoint.invoke(body, "application/json"))["mismatch_probability"] <= 1
