"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright).

Starts `streamlit run app/dashboard.py` on a free port over a copy of the seeded demo workspace, then:
uploads a photo and reads its predicted count, decides the top queue item and sees it leave, browses (a bin decided
by a reviewer whose name is Markdown: shown as text, nothing fetched), opens the evaluation page. Also: an error in
a page shows the analyst no details, while the server log keeps them. Screenshots go to test-artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.ui.run_counter import ATTRIBUTE as RUN_ATTRIBUTE
from app.ui.run_counter import ENV as RUN_COUNTER_ENV

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "screenshots"
IDLE = "[data-testid='stApp'][data-test-connection-state='CONNECTED'][data-test-script-state='notRunning']"
RUN_MARK = f"[{RUN_ATTRIBUTE}]"
WAIT_MS = 90_000  # generous: a deadline for a condition, not a pause (the machine may be loaded)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("BINAUDIT_SKIP_BROWSER") == "1":
            pytest.skip("BINAUDIT_SKIP_BROWSER=1 and no chromium")
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")


@pytest.fixture
def app_url(seeded_workspace, tmp_path):
    _require_chromium()
    ws = tmp_path / "ws"
    # BINAUDIT_BROWSER_WORKSPACE: run against a copy of another workspace (e.g. the full demo, for the README's
    # screenshots: docs/screenshots/ come from this test run over `make run`'s workspace)
    shutil.copytree(os.environ.get("BINAUDIT_BROWSER_WORKSPACE") or seeded_workspace, ws, symlinks=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "BINAUDIT_"))}
    env.update(BINAUDIT_WORKSPACE=str(ws), BINAUDIT_SECRETS=str(tmp_path / "none.toml"), PYTHONPATH=str(ROOT),
               **{RUN_COUNTER_ENV: "1"})
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "dashboard.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180  # a deadline, not a pause: a loaded machine starts streamlit slowly
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text()) from None
                time.sleep(0.2)
        yield url, ws
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:  # a slow shutdown on a loaded machine is not the test's failure
            proc.kill()
            proc.wait()
        log.close()


def _run_number(page) -> int:
    """The number of the app's latest script run (app/ui/run_counter.py; 0 before the first run drew it)."""
    return page.evaluate("s => Math.max(0, ...[...document.querySelectorAll(s)].map(e => +e.getAttribute('"
                         + RUN_ATTRIBUTE + "')))", RUN_MARK)


def _rerun(page, action) -> None:
    """Do `action`, then wait until the script run it triggers has been seen to start (the run counter moved past
    its number before the action) and the app is idle again: conditions, never a fixed wait."""
    before = _run_number(page)
    action()
    page.wait_for_function("([s, n]) => [...document.querySelectorAll(s)].some(e => +e.getAttribute('"
                           + RUN_ATTRIBUTE + "') > n)", arg=[RUN_MARK, before], timeout=WAIT_MS)
    page.wait_for_selector(IDLE, timeout=WAIT_MS)


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _go(page, title: str) -> None:
    """Navigate like a user, through the sidebar (a fresh page load would start a new session)."""
    _rerun(page, page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click)


def _metric(page, label: str):
    return page.locator("[data-testid='stMetric']", has_text=label).first.locator("[data-testid='stMetricValue']")


HOSTILE_REVIEWER = "![r](http://127.0.0.1:9/hostile.png) [see](http://127.0.0.1:9/hostile) <b>x</b>"


def _decide_first_bin_as_a_hostile_reviewer(ws: Path) -> str:
    """The first bin by id (the first the Browse grid shows) decided by a reviewer whose name is Markdown."""
    import sqlalchemy as sa

    from audit.reviews import UNSURE, Decision, bin_state, decide
    from binaudit import db
    from binaudit.workspace import Workspace

    engine = Workspace(ws, f"sqlite:///{ws / 'binaudit.db'}").open()
    with engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(db.bins.c.id))).scalar_one()
    decide(engine, Decision(first, UNSURE, HOSTILE_REVIEWER, bin_state(engine, first).row_version,
                            note="![n](http://127.0.0.1:9/hostile-note.png)"))
    engine.dispose()
    return first


def test_dashboard_end_to_end_in_chromium(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    url, ws = app_url
    photo = sorted((ws / "demo" / "audit" / "bin-images").glob("*.jpg"))[0]
    upload = tmp_path / "88001.jpg"
    shutil.copyfile(photo, upload)
    meta = tmp_path / "88001.json"
    meta.write_text(json.dumps({"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0}))

    hostile_bin = _decide_first_bin_as_a_hostile_reviewer(ws)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        _rerun(page, lambda: page.goto(url))
        expect(page.get_by_role("heading", name="BinAudit")).to_be_visible()
        _shot(page, "overview")

        name = page.get_by_role("textbox", name="Your name")
        name.fill("Playwright Analyst")
        _rerun(page, lambda: name.press("Enter"))

        _go(page, "Upload")
        _rerun(page, lambda: page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(upload), str(meta)]))
        # the demo model's top class is open: "6+"
        expect(_metric(page, "Predicted count")).to_have_text(re.compile(r"^([0-5]|6\+)$"))
        expect(_metric(page, "Expected count")).to_have_text("0")
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        _shot(page, "upload")

        _go(page, "Mismatch queue")
        options = page.locator("[data-testid='stRadio'] [role='radiogroup'] label")
        expect(options.first).to_be_visible()
        first = options.first.inner_text().split(" · ")[0]
        before = options.count()
        _rerun(page, page.get_by_role("button", name="Dismiss: record is right").click)
        expect(page.get_by_text(f"Bin {first}: dismiss recorded.")).to_be_visible()
        expect(options.filter(has_text=re.compile(rf"^{re.escape(first)} · "))).to_have_count(0)
        assert options.count() <= before
        _shot(page, "queue")

        _go(page, "Browse bins")
        _rerun(page, page.get_by_role("button", name="Details").first.click)
        expect(page.get_by_role("heading", name=f"Bin {hostile_bin}")).to_be_visible()
        # the hostile reviewer's name is text on the page: no image fetched, no link, no HTML (issue 12, item 4)
        shown = page.get_by_text("Latest decision").first.inner_text().replace("\u2060", "")
        assert f"by {HOSTILE_REVIEWER} at" in shown, shown
        assert page.locator("a[href*='hostile'], img[src*='hostile']").count() == 0
        assert not [r for r in requests if "hostile" in r], requests
        _shot(page, "browse")

        _go(page, "Evaluation")
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        expect(page.locator("[data-testid='stMetric']", has_text="Accuracy").first).to_be_visible()
        _shot(page, "evaluation")

        _go(page, "Retrain")
        expect(page.get_by_role("button", name="Start")).to_be_visible()
        _shot(page, "retrain")
        browser.close()


def test_an_error_shows_no_details_to_the_analyst_and_is_logged_on_the_server(tmp_path):
    """The project's Streamlit config (run from the repository root, as `make run` does) hides tracebacks."""
    from playwright.sync_api import sync_playwright

    _require_chromium()
    script = tmp_path / "crash.py"
    script.write_text("import streamlit as st\nst.title('page')\nraise RuntimeError('db password is hunter2')\n")
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("BINAUDIT_")}, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                        break
                except OSError:
                    assert time.time() < deadline and proc.poll() is None, log_path.read_text()
                    time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}")
                page.wait_for_selector(IDLE, timeout=90_000)
                page.get_by_test_id("stException").first.wait_for(timeout=30_000)
                shown = page.locator("[data-testid='stApp']").inner_text()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    assert "hunter2" not in shown and "Traceback" not in shown and "crash.py" not in shown, shown
    assert "hunter2" in log_path.read_text()  # the server keeps the details
