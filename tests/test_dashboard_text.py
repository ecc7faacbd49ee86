"""What people or files supplied is shown as typed on every page, never as Markdown or HTML (issue 12, item 4), and
the dashboard's own safety settings (item 8): no tracebacks for analysts, no silent fallback from a required login.

The AppTest checks read every Markdown-rendering field of every element on a page (bodies, labels, options, image
captions, help); test_browser.py checks in Chromium that escaped text renders literally and fetches nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.protobuf.json_format import MessageToDict
from streamlit.testing.v1 import AppTest

from app.ui.keys import digits_script
from app.ui.text import plain
from audit.queue import queue_page
from audit.reviews import DISMISS, Decision, bin_state, decide
from binaudit import db
from binaudit.workspace import Workspace
from modeling.registry import active_version
from tests.modeling_fixtures import jpeg_bytes
from tests.test_app_pages import OIDC_SECRETS, seeded_copy

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = str(ROOT / "app" / "dashboard.py")
EVIL = "http://evil.test"
REVIEWER = f"![r]({EVIL}/reviewer.png)"
NOTE = f"[click]({EVIL}/note) :red[alarm] $x^2$"
ITEM = f"<img src={EVIL}/item.png> **bold**"
BIN = "00042](evil.test"  # an id imports refuse today, but an older database may hold one
MARKDOWN_FIELDS = {"body", "label", "options", "caption", "help", "text"}  # read as Markdown by the frontend
PLAIN_ELEMENTS = {"arrow_data_frame", "code", "text_input", "text_area"}  # show text as is (values, cells)
OWN_HTML = {digits_script("Recounted quantity")}  # the queue's keyboard script: our constant, no user text


def _markdown_texts(at: AppTest) -> list[str]:
    """Every string the browser would read as Markdown, from every element of the page and the sidebar."""
    found: list[str] = []

    def collect(value, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                collect(v, k)
        elif isinstance(value, list):
            for v in value:
                collect(v, key)
        elif isinstance(value, str) and key in MARKDOWN_FIELDS and value not in OWN_HTML:
            found.append(value)

    for node in at._tree:
        proto = getattr(node, "proto", None)
        if proto is not None and getattr(node, "type", "") not in PLAIN_ELEMENTS:
            collect(MessageToDict(proto, preserving_proto_field_name=True), None)
    return found


# constructs that would render: a link or image, an HTML tag, a colour directive, a bare URL (GFM links it)
RENDERS = re.compile(r"\]\(|(?<!\\)<[A-Za-z]|(?<!\\):red\[|(?<!\\)\$x|" + re.escape(EVIL))


def _assert_nothing_renders(texts: list[str], *expected_literally: str) -> None:
    for text in texts:
        assert not RENDERS.search(text), text
    for literal in expected_literally:
        assert any(plain(literal) in t for t in texts), (literal, texts)


@pytest.fixture
def ws(seeded_workspace, tmp_path, monkeypatch) -> Workspace:
    """A copy of the seeded demo with a hostile bin (id, item name, problem) at the top of the queue."""
    ws = seeded_copy(seeded_workspace, tmp_path, monkeypatch)
    engine = ws.open()
    version = active_version(engine)
    with db.write_tx(engine) as conn:
        source = conn.execute(sa.select(db.bins).limit(1)).mappings().one()
        conn.execute(db.bins.insert().values({**source, "id": BIN, "decision": None, "decided_by": None,
                                              "decided_at": None, "recounted_count": None, "queued": False,
                                              "items": [{"asin": "B0EVIL", "name": ITEM, "quantity": 1}]}))
        conn.execute(db.predictions.insert().values(
            bin_id=BIN, model_version_id=version.id, predicted_count=0, decoded_count=0,
            probabilities=[1.0, 0, 0, 0, 0, 0], expected_count=source["expected_count"], mismatch_probability=1.0,
            argmax_differs=True, created_at=dt.datetime(2020, 1, 1)))
        conn.execute(db.problems.insert().values(bin_id=BIN, file=f"{ITEM}.jpg", stage="score",
                                                 reason=f"cannot read {ITEM}", created_at=db.utcnow()))
    return ws


def test_queue_page_shows_hostile_ids_names_and_conflicts_as_typed(ws):
    engine = ws.open()
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.run()
    at.sidebar.text_input(key="reviewer_name").set_value("ana").run()
    at.switch_page("app_pages/queue.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="queue_current").value == BIN  # the hostile bin is on top, its detail shown
    _assert_nothing_renders(_markdown_texts(at), BIN, f"cannot read {ITEM}")

    row = queue_page(engine, active_version(engine).id, threshold=0.5, limit=5).set_index("bin_id").loc[BIN]
    decide(engine, Decision(BIN, DISMISS, REVIEWER, int(row.row_version), note=NOTE))  # someone else, meanwhile
    at.button(key="btn-dismiss").click().run()
    assert not at.exception, [e.value for e in at.exception]
    texts = _markdown_texts(at)
    assert any("decided meanwhile" in t for t in texts)
    _assert_nothing_renders(texts, REVIEWER)


def test_browse_detail_shows_hostile_decisions_items_and_problems_as_typed(ws):
    engine = ws.open()
    decide(engine, Decision(BIN, DISMISS, REVIEWER, bin_state(engine, BIN).row_version, note=NOTE))
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.run()
    at.switch_page("app_pages/browse.py").run()
    at.session_state["browse_detail"] = BIN
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    _assert_nothing_renders(_markdown_texts(at), f"Bin {BIN}", f"bin {BIN}", REVIEWER, f"cannot read {ITEM}")


def test_upload_page_shows_hostile_file_names_as_typed(ws):
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.run()
    at.switch_page("app_pages/upload.py").run()
    name = "[x](javascript:alert(1)) <img src=x> :red[r] $x$"  # a file name has no "/"
    at.file_uploader[0].set_value([(f"{name}.jpg", b"not a photo", "image/jpeg"),
                                   (f"{name} 2.jpg", jpeg_bytes(90, 70), "image/jpeg"),
                                   (f"{name}.json", json.dumps({"EXPECTED_QUANTITY": 0}).encode(), "application/json"),
                                   (f"{name} 3.json", b"{}", "application/json")]).run()
    assert not at.exception, [e.value for e in at.exception]
    _assert_nothing_renders(_markdown_texts(at), f"{name}.jpg", f"Expected count for {name} 2.jpg",
                            f"{name} 3")


def test_the_signed_in_name_is_shown_as_typed(ws, monkeypatch):
    monkeypatch.setenv("BINAUDIT_REQUIRE_LOGIN", "true")
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.secrets["auth"] = OIDC_SECRETS
    at.user.update({"is_logged_in": True, "name": REVIEWER, "email": "ana@example.com"})
    at.run()
    _assert_nothing_renders(_markdown_texts(at), REVIEWER)


def test_require_login_without_an_auth_section_refuses_to_start(ws, monkeypatch, tmp_path):
    """The dashboard stops with a clear message (it used to fall back to a typed name), and so does `make run`."""
    monkeypatch.setenv("BINAUDIT_REQUIRE_LOGIN", "true")
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.run()
    errors = [e.value for e in at.error]
    assert any("require_login" in e and "[auth]" in e for e in errors), errors
    assert not any(t.label == "Your name" for t in at.sidebar.text_input)  # no typed-name fallback
    at.switch_page("app_pages/queue.py").run()
    assert not at.radio and not at.button  # no page runs

    launch = subprocess.run([sys.executable, "-m", "app.launch"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**_env_without_binaudit(), "BINAUDIT_WORKSPACE": str(ws.root),
                                              "BINAUDIT_SECRETS": str(tmp_path / "none.toml"), "PYTHONPATH": str(ROOT),
                                              "BINAUDIT_REQUIRE_LOGIN": "true", "BINAUDIT_SKIP_DEMO": "1"})
    assert launch.returncode == 2 and launch.stderr.startswith("error: require_login") and "[auth]" in launch.stderr
    assert "Traceback" not in launch.stderr and "dashboard on http" not in launch.stdout


def _env_without_binaudit() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("BINAUDIT_", "SM_"))}


def test_analysts_see_no_tracebacks_while_the_server_log_keeps_them():
    """client.showErrorDetails = "none" in the project's Streamlit config, and `make run` passes it too."""
    shown = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0
    assert '\nshowErrorDetails = "none"\n' in shown.stdout
    # Streamlit's XSRF protection stays on (its default, shown commented out while nothing overrides it)
    assert re.search(r"^(# )?enableXsrfProtection = true$", shown.stdout, re.M)
    assert not re.search(r"^enableXsrfProtection = false$", shown.stdout, re.M)
    from app.launch import streamlit_args

    args = streamlit_args("8501", "localhost")
    assert args[args.index("--client.showErrorDetails") + 1] == "none"
