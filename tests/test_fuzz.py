"""Property-based and fuzz tests (Hypothesis) over what hostile input reaches: the metadata parser, the image checks,
the bin-id rule, the endpoint's request parsing and the decision rules.

The property everywhere: any input gives a result or a reported problem (the module's own error type), never an
unhandled exception, and nothing already stored changes. `make test` runs the "fast" profile (a few dozen examples
per test); `BINAUDIT_FUZZ=long make test` (or `BINAUDIT_FUZZ=long .venv/bin/python -m pytest tests/test_fuzz.py`)
runs thousands. Profiles are registered in tests/conftest.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.ui.text import plain
from audit import imports, reviews
from binaudit import db
from binaudit.csvsafe import FORMULA_STARTS, spreadsheet_safe
from binaudit.workspace import Workspace
from data_tools.images import BadImage, inspect_jpeg
from data_tools.layout import is_safe_bin_id, normalize_bin_id
from data_tools.metadata import MAX_QUANTITY, parse_metadata
from data_tools.problems import ERROR
from modeling.preprocessing import ImageDecodeError, load_image, probe_image
from modeling.serving import MAX_INSTANCES, RequestError, ScoringRequest, parse_request

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # 100,000-deep JSON is the point

# costly examples (a database write, an HTTP round trip) get a quarter of the profile's examples
HEAVY = settings(max_examples=max(5, settings.default.max_examples // 4),
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _jpeg(width: int = 24, height: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (180, 90, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (12, 20), (0, 200, 30, 100)).save(buf, "PNG")
    return buf.getvalue()


JPEG, PNG = _jpeg(), _png()

# ---------------------------------------------------------------- strategies

# JSON values as hostile files hold them: huge integers, deep nesting, odd floats, any text
# (past 4,300 digits Python cannot even print an int, Hypothesis included: raw_metadata writes those as bytes)
json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(4000, 4290).map(lambda n: 10**n)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
                | st.sampled_from(["\x00", "a\x00b", "\ufeff", "\u202e"]))  # NUL: PostgreSQL refuses it in text
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=20)
quantities = st.integers(-5, 8) | st.integers() | st.sampled_from([MAX_QUANTITY, MAX_QUANTITY + 1, 2**63]) | json_values
measures = st.fixed_dictionaries({"unit": st.sampled_from(["IN", "cm", "pounds", "kg", "parsec", 3]),
                                  "value": st.floats(allow_nan=False) | st.integers() | json_values}) | json_values
items = st.fixed_dictionaries({"quantity": quantities}, optional={
    "asin": json_values, "name": json_values, "normalizedName": json_values, "length": measures, "weight": measures})
metadata_docs = st.fixed_dictionaries({}, optional={
    "EXPECTED_QUANTITY": quantities,
    "BIN_FCSKU_DATA": st.dictionaries(st.text(max_size=12), items | json_values, max_size=4) | json_values,
}) | json_values


def _deeply_nested(depth: int, opener: bytes, closer: bytes, inner: bytes = b"0") -> bytes:
    return opener * depth + inner + closer * depth


raw_metadata = st.one_of(
    st.binary(max_size=300),
    metadata_docs.map(lambda d: json.dumps(d).encode()),
    st.integers(1000, 120_000).map(lambda n: _deeply_nested(n, b"[", b"]")),
    st.integers(1000, 120_000).map(lambda n: b'{"EXPECTED_QUANTITY": ' + _deeply_nested(n, b'{"a":', b"}")),
    st.integers(4000, 6000).map(lambda n: b'{"EXPECTED_QUANTITY": ' + b"9" * n + b"}"),
    st.sampled_from([b"NaN", b'{"EXPECTED_QUANTITY": Infinity}', b"1e400", b"\xef\xbb\xbf{}", b"\xff\xfe{", b""]),
)


def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """`base` truncated, with bytes overwritten, or with bytes inserted: almost-valid images."""
    n = len(base)
    return st.one_of(
        st.integers(0, n).map(lambda k: base[:k]),
        st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=8)).map(
            lambda t: base[: t[0]] + t[1] + base[t[0] + len(t[1]):]),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(lambda t: base[: t[0]] + t[1] + base[t[0]:]),
    )


images = st.one_of(st.binary(max_size=200), _mutated(JPEG), _mutated(PNG), st.just(JPEG), st.just(PNG))

# ---------------------------------------------------------------- the metadata parser


@example(raw=_deeply_nested(100_000, b"[", b"]"))
@example(raw=b'{"EXPECTED_QUANTITY": ' + b"9" * 5000 + b"}")
@given(raw=raw_metadata)
def test_the_metadata_parser_gives_a_record_or_problems_never_an_exception(raw):
    result = parse_metadata(raw, "00001", "metadata/00001.json")
    errors = [p for p in result.problems if p.severity == ERROR]
    assert all(p.file == "metadata/00001.json" and p.reason for p in result.problems)
    if result.record is None:
        assert errors  # an unusable file always says why
    else:
        assert not errors
        record = result.record
        assert isinstance(record.expected_quantity, int) and 0 <= record.expected_quantity <= MAX_QUANTITY
        assert sum(i.quantity for i in record.items) == record.expected_quantity


@given(doc=metadata_docs)
def test_a_record_the_parser_accepts_is_exactly_the_document(doc):
    result = parse_metadata(json.dumps(doc).encode(), "00001", "f")
    if result.record is not None:
        assert result.record.expected_quantity == doc["EXPECTED_QUANTITY"]
        assert [i.key for i in result.record.items] == list(doc["BIN_FCSKU_DATA"])


# ---------------------------------------------------------------- the image checks


@given(data=images)
def test_the_image_checks_give_a_size_or_their_own_error(data):
    try:
        info = inspect_jpeg(data)
        assert info.width > 0 and info.height > 0
    except BadImage as exc:
        assert str(exc)
    for check in (probe_image, lambda d: load_image(d, target_side=32)):
        try:
            check(data)
        except ImageDecodeError as exc:
            assert str(exc)


# ---------------------------------------------------------------- bin ids


@given(name=st.text(max_size=120) | st.sampled_from(["..", ".", "a/../b", "00042", "a" * 100, "a" * 101]))
def test_a_bin_id_the_rule_accepts_is_a_plain_file_name(name, tmp_path_factory):
    if is_safe_bin_id(name):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and ".." not in name and len(name) <= 100
        folder = Path("/srv/bins")
        assert (folder / f"{name}.jpg").parent == folder and Path(name).name == name
    try:
        normalized = normalize_bin_id(name)
    except ValueError as exc:
        assert "bin id" in str(exc)
    else:
        assert is_safe_bin_id(normalized)


@given(filename=st.text(max_size=300), data=st.binary(max_size=64))
def test_an_upload_always_gets_an_id_the_rule_accepts(filename, data):
    assert is_safe_bin_id(imports.upload_bin_id(filename, data))


# ---------------------------------------------------------------- request parsing

content_types = st.sampled_from(["image/jpeg", "image/png", "application/x-image", "application/json",
                                 "Application/JSON; charset=utf-8", "text/plain", "", "multipart/form-data"]) \
    | st.text(max_size=40)
b64_images = images.map(lambda b: base64.b64encode(b).decode()) | json_values
instances = st.fixed_dictionaries({"image": b64_images}, optional={"expected_count": quantities}) | json_values
json_requests = st.one_of(
    instances,
    st.fixed_dictionaries({"instances": st.lists(instances, max_size=MAX_INSTANCES + 2) | json_values}),
).map(lambda d: json.dumps(d).encode())
request_bodies = st.one_of(st.binary(max_size=300), json_requests, raw_metadata, images)


DEEP_ARRAY = _deeply_nested(100_000, b"[", b"]")  # issue 12: a RecursionError, and the endpoint's 500
DEEP_OBJECT = _deeply_nested(100_000, b'{"image": ', b"}")
HUGE_COUNT = b'{"image": "", "expected_count": ' + b"9" * 5000 + b"}"


@example(body=DEEP_ARRAY, content_type="application/json")
@example(body=DEEP_OBJECT, content_type="application/json")
@example(body=HUGE_COUNT, content_type="application/json")
@given(body=request_bodies, content_type=content_types)
def test_request_parsing_gives_a_request_or_a_request_error(body, content_type):
    try:
        request = parse_request(body, content_type)
    except RequestError as exc:
        assert str(exc)
        return
    assert isinstance(request, ScoringRequest) and len(request.images) == len(request.expected_counts) >= 1
    assert all(e is None or (isinstance(e, int) and e >= 0) for e in request.expected_counts)


@pytest.fixture(scope="module")
def endpoint_server(tmp_path_factory, tiny_dataset):
    """The local endpoint's server on the tiny model, in this process; `server.statuses` collects every answer's
    status on the server side (a client may not see an early answer: the server closes on a body it did not read,
    and TCP resets the connection)."""
    from jobs.local.endpoint import InvocationHandler, make_server
    from modeling.serving import ScoringModel
    from tests.modeling_fixtures import tiny_model

    statuses: list[int] = []
    handler = type("Handler", (InvocationHandler,), {
        "model": ScoringModel.load(tiny_model(tiny_dataset, tmp_path_factory)), "log_message": lambda *a: None,
        "log_request": lambda self, code="-", size="-": statuses.append(int(code))})
    server = make_server(handler, read_timeout=2.0, max_connections=4)
    server.statuses = statuses
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@HEAVY
@example(body=DEEP_ARRAY, content_type="application/json", length=None)
@example(body=DEEP_OBJECT, content_type="application/json", length=None)
@given(body=request_bodies, content_type=content_types.filter(lambda t: t.isascii() and t.isprintable()),
       length=st.none() | header_values | st.integers(-5, 400).map(str))
def test_the_endpoint_answers_any_request_with_a_status_never_a_500(endpoint_server, body, content_type, length):
    declared = str(len(body)) if length is None else length
    head = f"POST /invocations HTTP/1.0\r\nContent-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n"
    seen = len(endpoint_server.statuses)
    with socket.create_connection(endpoint_server.server_address, timeout=30) as sock:
        try:
            sock.sendall(head.encode("ascii") + body)
            sock.shutdown(socket.SHUT_WR)  # a body shorter than declared ends here, not at the read timeout
            while sock.recv(65536):
                pass
        except OSError:  # reset: answered before the whole body was read (the server-side status is below)
            pass
    deadline = time.monotonic() + 10
    while len(endpoint_server.statuses) == seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert endpoint_server.statuses[seen:] and set(endpoint_server.statuses[seen:]) <= {
        200, 400, 406, 408, 411, 413, 415}, endpoint_server.statuses[seen:]


# ---------------------------------------------------------------- the decision rules

texts = st.text(max_size=60) | st.sampled_from(["ana", " ", "", "x" * 201, "a\nb", "=HYPERLINK(1)", "![r](http://x)",
                                              "a\x00b"])
recounts = st.none() | st.integers() | st.sampled_from([0, 1, 4, MAX_QUANTITY, MAX_QUANTITY + 1, 10**20]) \
    | st.floats() | st.booleans() | st.text(max_size=3)
versions = st.integers(-2, 6) | st.none() | st.text(max_size=3) | st.booleans()


def _stored(engine) -> tuple:
    with engine.connect() as conn:
        return (conn.execute(sa.select(db.bins).order_by(db.bins.c.id)).all(),
                conn.execute(sa.select(db.reviews).order_by(db.reviews.c.id)).all(),
                conn.execute(sa.select(sa.func.count()).select_from(db.audit_log)).scalar_one())


def test_a_decision_is_stored_exactly_as_given_or_refused_with_nothing_changed(tmp_path, database_url):
    ws = Workspace(tmp_path / "ws", database_url)
    engine = ws.open()
    for name, expected in (("00001.jpg", 3), ("00002.jpg", None)):
        imports.import_upload(engine, ws, name, JPEG, actor="t", expected_count=expected)

    @HEAVY
    @example(bin_id="a\x00", decision=reviews.DISMISS, reviewer="ana", note="", recount=None, version=1, current=False)
    @example(bin_id="00001", decision=reviews.DISMISS, reviewer="ana", note="a\x00", recount=None, version=1,
             current=True)
    @given(bin_id=st.sampled_from(["00001", "00002", "nope", "", "a\x00"]) | st.text(max_size=8),
           decision=st.sampled_from(reviews.DECISIONS) | st.text(max_size=20), reviewer=texts, note=texts,
           recount=recounts, version=versions, current=st.booleans())
    def check(bin_id, decision, reviewer, note, recount, version, current):
        if current and bin_id in ("00001", "00002"):
            version = reviews.bin_state(engine, bin_id).row_version  # the version the reviewer saw
        before = _stored(engine)
        try:
            reviews.decide(engine, reviews.Decision(bin_id, decision, reviewer, version, recount, note))
        except (reviews.ReviewError, reviews.ReviewConflict) as exc:
            assert str(exc)
            assert _stored(engine) == before  # a refused decision changes nothing
            return
        state = reviews.bin_state(engine, bin_id)
        assert (state.row_version, state.decision, state.decided_by, state.recounted_count) == (
            version + 1, decision, reviewer, recount)
        assert 0 <= (recount or 0) <= reviews.MAX_RECOUNT and reviewer.strip() and reviewer.isprintable()
        assert decision != reviews.CONFIRM or (recount is not None and recount != state.expected_count)

    check()


@given(decided=st.booleans(), expect=st.none() | st.integers(0, 5), replace=st.booleans(), row_version=st.integers(1, 5))
def test_the_shell_replaces_a_decision_only_when_asked(decided, expect, replace, row_version):
    state = reviews.BinState("00001", row_version, 3, reviews.DISMISS if decided else None, "ana" if decided else None,
                             None, None)
    try:
        seen = reviews.version_to_decide(state, expect_version=expect, replace=replace)
    except reviews.AlreadyDecided as exc:
        assert decided and expect is None and not replace and "ana" in str(exc)
        return
    assert seen == (expect if expect is not None else row_version)


def test_a_fuzzed_metadata_upload_is_stored_or_refused_and_other_bins_never_change(tmp_path, database_url):
    ws = Workspace(tmp_path / "ws", database_url)
    engine = ws.open()
    imports.import_upload(engine, ws, "00001.jpg", JPEG, actor="t", expected_count=2)

    @HEAVY
    @example(raw=b'{"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {"k\\u0000": {"quantity": 1, "name": "a\\u0000"}}}',
             image=JPEG, name="nul")
    @example(raw=b'{"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {"k\\u0000": {"quantity": "x"}}}', image=JPEG, name="k")
    @given(raw=raw_metadata, image=st.sampled_from([JPEG, PNG]) | images, name=st.text(max_size=20))
    def check(raw, image, name):
        assume(imports.upload_bin_id(f"{name}.jpg", image) != "00001")
        with engine.connect() as conn:
            before = conn.execute(sa.select(db.bins).where(db.bins.c.id == "00001")).one()
        try:
            row = imports.import_upload(engine, ws, f"{name}.jpg", image, actor="fuzz", metadata=raw)
        except imports.ImportError_ as exc:
            assert str(exc)
        else:
            assert is_safe_bin_id(row["id"]) and 0 <= row["expected_count"] <= MAX_QUANTITY
        with engine.connect() as conn:
            assert conn.execute(sa.select(db.bins).where(db.bins.c.id == "00001")).one() == before

    check()


# ---------------------------------------------------------------- what leaves the system


@given(text=st.text())
def test_an_exported_cell_never_starts_a_formula(text):
    safe = spreadsheet_safe(text)
    assert not safe.startswith(FORMULA_STARTS)
    assert safe == ("'" + text if text.startswith(FORMULA_STARTS) else text)


@given(text=st.text())
def test_plain_text_leaves_no_markdown_character_unescaped(text):
    shown = plain(text)
    assert not re.search(r"[\x00-\x1f\x7f]", shown)
    unescaped = re.sub(r"\\[!-/:-@\[-`{-~]", "", shown)
    assert not re.search(r"[!-/:-@\[-`{-~]", unescaped), shown
    assert not re.search(r"(?i)(https?|www)\\?[:.]", shown.replace("\\", ""))  # no autolink either
