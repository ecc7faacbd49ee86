"""A local endpoint: `python -m jobs.local.endpoint --job-id J --model-dir D --ready-file F`.

Speaks the SageMaker PyTorch container's protocol on 127.0.0.1 with the container's own handlers
(modeling.inference), on the scoring path --runtime / --precision choose (modeling/scoring_paths.py):

    GET  /ping          200 once the model is loaded
    POST /invocations   a photo or JSON -> 200 application/json; a request the model cannot answer -> 4xx with
                        {"error": "<what was wrong and what is accepted>"}; no or a malformed Content-Length ->
                        411 / 400, a body over MAX_BODY_BYTES -> 413, a body that stops arriving -> 408

Once listening it writes {"url", "pid", "model_dir"} to the ready file; SIGTERM shuts it down. Slow clients cannot
pile up: a socket read waits at most --read-timeout seconds, and one connection over --max-connections gets a 503.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jobs.jobdirs import write_json_atomic
from modeling.cli import add_path_arguments

MAX_BODY_BYTES = 20 * 1024 * 1024
READ_TIMEOUT_S = 30.0  # per socket read: far above a 20 MB body on a local link
MAX_CONNECTIONS = 32  # forward passes run one at a time anyway (InvocationHandler.lock)


class InvocationHandler(BaseHTTPRequestHandler):
    server_version = "BinAuditLocalEndpoint/1"
    model: Any = None  # set by serve(): the loaded ScoringModel
    lock = threading.Lock()  # one forward pass at a time: torch already uses every core for one

    def log_message(self, fmt: str, *args: Any) -> None:  # one short line per request in endpoint.log
        sys.stderr.write(f"{self.command} {self.path} {fmt % args}\n")

    def _send(self, status: HTTPStatus, body: str, content_type: str = "application/json") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}))

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/ping":
            self._send(HTTPStatus.OK, "{}")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}; use GET /ping or POST /invocations")

    def do_POST(self) -> None:
        # whatever goes wrong, the client gets a JSON answer: a dropped connection tells it nothing
        try:
            self._invoke()
        except TimeoutError:  # the body stopped arriving: free the thread for someone else
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._error(HTTPStatus.REQUEST_TIMEOUT, f"the request body did not arrive within {self.timeout:g} s")
        except Exception as exc:
            traceback.print_exc()  # into endpoint.log
            with contextlib.suppress(OSError):  # the client hung up: nobody is left to answer
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _body_length(self) -> int | None:
        """The declared body length; None after answering 411/400/413 for a missing, malformed or too large one."""
        declared = self.headers.get("Content-Length")
        digits = (declared or "").strip()
        if declared is None:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length header")
        elif not re.fullmatch(r"[0-9]+", digits):  # int() would take "-5", "1_000", "+7"
            self._error(HTTPStatus.BAD_REQUEST, f"Content-Length must be a number of bytes, got {declared[:40]!r}")
        # a digit string too long for int() (Python refuses 4300+ digits) is too large anyway
        elif len(digits) > 18 or int(digits) > MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body of {digits[:18]}{'...' if len(digits) > 18 else ''} bytes; at most {MAX_BODY_BYTES}")
        else:
            return int(digits)
        return None

    def _invoke(self) -> None:
        from modeling.inference import input_fn, output_fn, predict_fn
        from modeling.serving import RequestError

        if self.path.split("?")[0] != "/invocations":
            self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}; use POST /invocations")
            return
        length = self._body_length()
        if length is None:
            return
        try:
            request = input_fn(self.rfile.read(length), self.headers.get("Content-Type", ""))
            with self.lock:
                prediction = predict_fn(request, self.model)
            text, content_type = output_fn(prediction, self.headers.get("Accept") or "application/json")
        except RequestError as exc:
            self._error(HTTPStatus(exc.status), str(exc))
            return
        self._send(HTTPStatus.OK, text, content_type)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_connections` of them; one more is answered 503 and closed by the
    accepting thread, which never waits on a client."""

    daemon_threads = True
    request_queue_size = 128  # connections the kernel holds until accepted (socketserver's default is 5)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request) -> None:
        body = json.dumps({"error": "busy: too many open connections; retry shortly"}).encode()
        head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        with contextlib.suppress(OSError):
            request.setblocking(False)  # a few hundred bytes fit any socket buffer; never wait on this client
            request.send(head + body)
        self.shutdown_request(request)


def make_server(handler: type[InvocationHandler], host: str = "127.0.0.1", port: int = 0, *,
                read_timeout: float = READ_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> BoundedHTTPServer:
    """The endpoint's server for `handler` (its `model` set), not yet serving."""
    bounded = type(handler.__name__, (handler,), {"timeout": read_timeout})  # StreamRequestHandler sets it per socket
    return BoundedHTTPServer((host, port), bounded, max_connections)


def load_model(model_dir: Path, runtime: str = "auto", precision: str = "auto"):
    """The container handlers' model, on the scoring path chosen for this machine (torch or ONNX Runtime)."""
    import torch

    from modeling.predictor import Predictor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Predictor.load(model_dir, device=device, precision=precision, runtime=runtime)


def serve(model_dir: Path, ready_file: Path, host: str = "127.0.0.1", port: int = 0, runtime: str = "auto",
          precision: str = "auto", *, read_timeout: float = READ_TIMEOUT_S,
          max_connections: int = MAX_CONNECTIONS) -> None:
    InvocationHandler.model = load_model(model_dir, runtime, precision)
    server = make_server(InvocationHandler, host, port, read_timeout=read_timeout, max_connections=max_connections)
    url = f"http://{host}:{server.server_address[1]}"
    write_json_atomic(ready_file, {"url": url, "pid": os.getpid(), "model_dir": str(model_dir),
                                   "scoring_path": InvocationHandler.model.path})
    print(f"serving {model_dir} on {url} with {InvocationHandler.model.path}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.local.endpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("--job-id", default=None,
                   help="the deployment job served (in the command line so a pid check can tell jobs apart)")
    p.add_argument("--model-dir", type=Path, required=True, help="a registered model version's folder")
    p.add_argument("--ready-file", type=Path, required=True, help="where to write the URL once listening")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    p.add_argument("--read-timeout", type=float, default=READ_TIMEOUT_S,
                   help=f"seconds one socket read may wait before the connection is closed (default {READ_TIMEOUT_S:g})")
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                   help=f"connections served at once; more are answered 503 (default {MAX_CONNECTIONS})")
    add_path_arguments(p)
    args = p.parse_args(argv)
    serve(args.model_dir, args.ready_file, args.host, args.port, args.runtime, args.precision,
          read_timeout=args.read_timeout, max_connections=args.max_connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
