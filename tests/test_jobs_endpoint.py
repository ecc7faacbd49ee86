"""The local endpoint (the container's protocol, the same JSON as modeling.serving) and local batch transform."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from jobs import EndpointError
from jobs.local.endpoint import MAX_BODY_BYTES, InvocationHandler, make_server
from jobs.local.processes import process_alive
from modeling import registry
from modeling.serving import ScoringModel, parse_request
from tests.modeling_fixtures import jpeg_bytes, png_bytes, tiny_model
from tests.test_jobs_support import make_local, stop_leftovers, wait_done


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory):
    return tiny_model(tiny_dataset, tmp_path_factory)


@pytest.fixture
def local(tmp_path, monkeypatch, tiny_model_dir):
    ctx = make_local(tmp_path, monkeypatch)
    ctx.version = registry.register_model(ctx.engine, tiny_model_dir, ctx.workspace.models_dir, actor="ana")
    yield ctx
    stop_leftovers(ctx)


def _post(url: str, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type, "Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _same_answer(got, expected) -> None:
    """Equal keys and counts; probabilities equal to float precision (one forward pass on each side)."""
    if isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            _same_answer(g, e)
        return
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_local_endpoint_speaks_the_container_protocol_with_the_serving_json(local):
    job = local.backend.deploy(local.version.id, actor="ana", wait=True)
    assert job.status == "InProgress" and job.output["endpoint_status"] == "InService"
    url = job.output["endpoint_url"]
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{url}/ping", timeout=60) as ping:
        assert ping.status == 200

    reference = ScoringModel.load(local.version.model_dir, precision="fp32")
    photo, png = jpeg_bytes(), png_bytes()
    single = json.dumps({"image": base64.b64encode(photo).decode(), "expected_count": 2}).encode()
    batch = json.dumps({"instances": [{"image": base64.b64encode(photo).decode()},
                                      {"image": base64.b64encode(png).decode(), "expected_count": 0}]}).encode()
    for body, content_type in ((photo, "image/jpeg"), (png, "image/png"), (single, "application/json"),
                               (batch, "application/json")):
        status, answer = _post(url, body, content_type)
        assert status == 200
        expected = reference.answer(parse_request(body, content_type))
        _same_answer(answer["predictions"] if isinstance(expected, list) else answer, expected)
    status, answer = _post(url, single, "application/json")
    assert {"predicted_count", "predicted_label", "probabilities", "counts", "labels", "top_class", "expected_count",
            "mismatch_probability", "beyond_range"} == set(answer)

    # errors: a 4xx whose message says what was wrong and what is accepted
    status, answer = _post(url, b"hello", "text/plain")
    assert status == 415
    assert "unsupported content type 'text/plain'" in answer["error"] and "image/jpeg" in answer["error"]
    status, answer = _post(url, photo, "image/jpeg", accept="text/csv")
    assert status == 406 and "cannot answer in 'text/csv'" in answer["error"]
    status, answer = _post(url, b"{not json", "application/json")
    assert status == 400 and "not valid JSON" in answer["error"]
    status, answer = _post(url, b"\xff\xd8 not really a jpeg", "image/jpeg")
    assert status == 400 and "undecodable image" in answer["error"]

    # the backend's invoke reaches the same server by job id
    _same_answer(local.backend.invoke(job.id, photo, "image/jpeg"),
                 reference.answer(parse_request(photo, "image/jpeg")))
    with pytest.raises(EndpointError, match="415") as err:
        local.backend.invoke(job.id, b"hello", "text/plain")
    assert err.value.status == 415
    assert [e["job_id"] for e in local.backend.list_endpoints()] == [job.id]

    deleted = local.backend.delete_endpoint(job.id, actor="ana")
    assert deleted.status == "Stopped" and deleted.output["endpoint_status"] == "Deleted"
    assert not process_alive(job.pid)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/ping", timeout=5)
    assert local.backend.list_endpoints() == []


def _raw_post(url: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    """A POST with exactly these headers (http.client adds no Content-Length of its own with putheader)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", "/invocations")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_local_endpoint_answers_a_bad_content_length_with_a_status_not_a_dropped_connection(local):
    url = local.backend.deploy(local.version.id, actor="ana", wait=True).output["endpoint_url"]
    photo = jpeg_bytes()
    for length, status, said in (("abc", 400, "Content-Length must be a number"), ("-5", 400, "got '-5'"),
                                 ("+7", 400, "got '+7'"), ("1" * 5000, 413, f"at most {MAX_BODY_BYTES}"),
                                 (str(MAX_BODY_BYTES + 1), 413, f"at most {MAX_BODY_BYTES}")):
        got, answer = _raw_post(url, {"Content-Type": "image/jpeg", "Content-Length": length}, photo)
        assert (got, said in answer["error"]) == (status, True), (length, answer)
    got, answer = _raw_post(url, {"Content-Type": "image/jpeg"}, photo)
    assert got == 411 and "Content-Length" in answer["error"]
    got, answer = _raw_post(url, {"Content-Type": "image/jpeg", "Content-Length": str(len(photo))}, photo)
    assert got == 200 and "predicted_count" in answer  # the server is still up and answering


class _FailingModel:
    def answer(self, request):
        raise RuntimeError("CUDA error: out of memory")


def test_an_unexpected_error_is_a_500_with_json(tmp_path):
    """The real handler in a real server, its model failing in a way no request check foresees."""
    handler = type("Handler", (InvocationHandler,), {"model": _FailingModel(), "log_message": lambda *a: None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        photo = jpeg_bytes()
        status, answer = _raw_post(f"http://127.0.0.1:{server.server_address[1]}",
                                   {"Content-Type": "image/jpeg", "Content-Length": str(len(photo))}, photo)
    finally:
        server.shutdown()
        server.server_close()
    assert status == 500 and answer == {"error": "RuntimeError: CUDA error: out of memory"}


@pytest.mark.slow
def test_local_transform_writes_json_lines_with_an_error_line_for_a_bad_photo(local, tiny_dataset, tmp_path):
    photos = tmp_path / "photos"
    for count in ("1", "3"):
        (photos / count).mkdir(parents=True)
        for src in sorted((tiny_dataset / "val" / count).glob("*.jpg"))[:2]:
            shutil.copy(src, photos / count / src.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    job = local.backend.start_transform(local.version.id, str(photos), str(tmp_path / "out"), actor="ana",
                                        workers=0)
    job = wait_done(local.backend, job.id)

    assert job.status == "Completed", job.failure_reason
    assert job.output["n_images"] == 5 and job.output["n_scored"] == 4 and job.output["n_failed"] == 1
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == sorted(line["file"] for line in lines)
    broken = [line for line in lines if line["file"] == "broken.jpg"]
    assert len(broken) == 1 and broken[0]["error"] and "predicted_count" not in broken[0]
    reference = ScoringModel.load(local.version.model_dir, precision="fp32")
    for line in lines:
        if "error" in line:
            continue
        assert {"file", "bin_id", "predicted_count", "predicted_label", "probabilities", "counts", "labels",
                "top_class"} == set(line)
        expected = reference.predict_bytes((photos / line["file"]).read_bytes())
        assert line["predicted_count"] == expected["predicted_count"]
        assert line["predicted_label"] == expected["predicted_label"] and line["labels"][-1] == "6+"
        assert line["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)


def test_transform_of_a_missing_folder_fails_with_the_reason(local, tmp_path):
    job = local.backend.start_transform(local.version.id, str(tmp_path / "nothing"), str(tmp_path / "o.jsonl"),
                                        actor="ana", workers=0)
    job = wait_done(local.backend, job.id)
    assert job.status == "Failed" and job.failure_reason == f"input folder not found: {tmp_path / 'nothing'}"


@pytest.fixture
def served(tiny_model_dir):
    """The endpoint's own server (make_server) on the tiny model, in this process: (url, server)."""
    handler = type("Handler", (InvocationHandler,), {"model": ScoringModel.load(tiny_model_dir),
                                                     "log_message": lambda *a: None})
    server = make_server(handler, read_timeout=1.0, max_connections=8)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def test_json_that_breaks_the_parser_is_a_400_with_the_reason_and_the_next_request_is_answered(served):
    """Issue 12, item 1: 100,000-deep nesting was a 500 (RecursionError)."""
    url, _ = served
    for body, said in ((b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
                       (b'{"image": "", "expected_count": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
                       (b'{"image": ' * 50_000 + b"0" + b"}" * 50_000, "nested too deeply")):
        status, answer = _post(url, body, "application/json")
        assert status == 400 and said in answer["error"] and "send {\"image\"" in answer["error"], answer
    status, answer = _post(url, jpeg_bytes(), "image/jpeg")
    assert status == 200 and "predicted_count" in answer


def _threads_settle(limit: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > limit and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes (a head and its body may arrive in separate reads)."""
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


def test_idle_connections_are_bounded_and_timed_out(served):
    """Issue 12, item 8: 500 idle connections made 503 threads and held them forever."""
    url, server = served
    before = threading.active_count()
    idle = [socket.create_connection(server.server_address, timeout=5) for _ in range(500)]
    try:
        time.sleep(0.3)  # let the server accept them all
        assert threading.active_count() <= before + 8  # one thread per served connection, at most 8
        busy = _read_until_closed(idle[-1])  # a connection beyond the bound: a 503 at once, then closed
        assert busy.startswith(b"HTTP/1.0 503") and b"too many open connections" in busy
        assert idle[0].recv(4096) == b""  # a served one that sends nothing is closed after the read timeout (1 s)
        assert _threads_settle(before) <= before
    finally:
        for sock in idle:
            sock.close()
    with urllib.request.urlopen(f"{url}/ping", timeout=10) as ping:  # and the endpoint answers again
        assert ping.status == 200


def test_a_body_that_stops_arriving_is_a_408(served):
    _, server = served
    with socket.create_connection(server.server_address, timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
                     b"only a few bytes")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.0 408") and b"did not arrive within 1 s" in answer
