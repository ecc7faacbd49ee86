"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright).

Starts `streamlit run app/dashboard.py` on a free port over a copy of the seeded demo workspace, then:
types a reviewer name and reloads (the name stays: it is in the address), uploads photos (a real ABID one where
../shared/abid-sample is present) and reads the predicted count and the batch summary; in the queue two analysts
(two browsers) work on one bin: the second decides while the first has typed a recount and a note, and the first is
told who decided what and keeps her input; decides bins by keyboard (the time per decision goes to
test-artifacts/decision-timing.json) and types a recount with no click into its box; pages to the last queued bin;
browses (a bin decided by a reviewer whose name is Markdown: shown as text, nothing fetched; the activation overlay
on the real ABID photo, else on the uploaded demo photo); opens the evaluation page; and on Retrain a refused
promotion is still on screen after 10 s. Also: an error in a page shows the analyst no details, while the server log
keeps them. Screenshots go to test-artifacts/screenshots/ (git-ignored); docs/screenshots/ come from a run with
BINAUDIT_BROWSER_WORKSPACE set to `make run`'s workspace and BINAUDIT_ABID_SAMPLE to a missing folder (no ABID photo
in the project).
"""

from __future__ import annotations

import contextlib
import json
import math
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
from tests.conftest import ABID_SAMPLE  # optional here: without it the upload and the overlay use a demo photo

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
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    SHOTS.mkdir(parents=True, exist_ok=True)
    # elements still loading show grey placeholders: wait for the page as the analyst sees it once drawn (a picture,
    # not a check: after 10 s it is taken as it is)
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_selector("[data-testid='stSkeleton']", state="detached", timeout=10_000)
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


def _engine(ws: Path):
    from binaudit.workspace import Workspace

    return Workspace(ws, f"sqlite:///{ws / 'binaudit.db'}").open()


def _queue_ids(ws: Path) -> list:
    """The queue's bin ids in rank order, with their records, as the page ranks them (threshold 0.5)."""
    from audit.queue import queue_page
    from modeling.registry import active_version

    engine = _engine(ws)
    try:
        frame = queue_page(engine, active_version(engine).id, threshold=0.5, limit=100_000)
        return list(zip(frame["bin_id"], frame["expected_count"], strict=True))
    finally:
        engine.dispose()


def _make_the_demo_model_lose_a_comparison(ws: Path, tmp_path: Path) -> Path:
    """A twin of the active model that beats it by construction becomes active; the demo's training job's model is
    then the worse candidate. Returns the folder the two are compared on."""
    from binaudit.workspace import Workspace
    from modeling.registry import active_version
    from tests.test_app_pages import _better_twin_and_folder

    workspace = Workspace(ws, f"sqlite:///{ws / 'binaudit.db'}")
    engine = workspace.open()
    try:
        _, folder = _better_twin_and_folder(engine, workspace, active_version(engine), tmp_path)
        return folder
    finally:
        engine.dispose()


def _files_to_upload(ws: Path, tmp_path: Path) -> tuple[list[str], str | None]:
    """A demo photo with metadata (88001), and a real ABID photo with its metadata (88002) when the sample is here."""
    photo = sorted((ws / "demo" / "audit" / "bin-images").glob("*.jpg"))[0]
    shutil.copyfile(photo, tmp_path / "88001.jpg")
    (tmp_path / "88001.json").write_text(json.dumps({"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0}))
    files = [str(tmp_path / "88001.jpg"), str(tmp_path / "88001.json")]
    abid = sorted((ABID_SAMPLE / "bin-images").glob("*.jpg")) if (ABID_SAMPLE / "metadata").is_dir() else []
    if not abid:
        return files, None
    shutil.copyfile(abid[0], tmp_path / "88002.jpg")
    shutil.copyfile(ABID_SAMPLE / "metadata" / f"{abid[0].stem}.json", tmp_path / "88002.json")
    return [*files, str(tmp_path / "88002.jpg"), str(tmp_path / "88002.json")], "88002"


def _two_analysts_on_one_bin(browser, page, url: str, ws: Path) -> None:
    """Ana types a recount and a note; Ben, in his own browser, decides the same bin; Ana presses Enter and is told
    who decided what, her bin, recount and note still on screen. Then she discards hers."""
    from playwright.sync_api import expect

    (bin_id, expected), *_ = _queue_ids(ws)
    options = page.locator("[data-testid='stRadio'] [role='radiogroup'] label")
    expect(page.locator("[data-testid='stRadio'] label:has(input:checked)")).to_contain_text(f"{bin_id} · ")
    note = page.get_by_label("Note (optional)")
    _rerun(page, lambda: (note.fill("two boxes hidden behind the tape"), note.press("Tab")))
    recount = page.get_by_label("Recounted quantity")
    recount.fill(str(int(expected) + 1))  # in a form: nothing is sent before Enter

    ben = browser.new_page(viewport={"width": 1400, "height": 1000})
    _rerun(ben, lambda: ben.goto(f"{url}/queue?reviewer_name=Ben"))  # his name comes with the address
    expect(ben.locator("[data-testid='stRadio'] label:has(input:checked)")).to_contain_text(f"{bin_id} · ")
    _rerun(ben, ben.get_by_role("button", name="Dismiss: record is right").click)
    expect(ben.get_by_text(f"Bin {bin_id}: Dismissed: record is right recorded.")).to_be_visible()
    ben.close()

    _rerun(page, lambda: recount.press("Enter"))
    told = page.get_by_text(re.compile(rf"Bin {bin_id} was decided meanwhile: Ben recorded 'Dismissed: record is "
                                       rf"right'.*\(recount {int(expected) + 1}\) was not recorded"))
    expect(told).to_be_visible()
    expect(page.get_by_role("heading", name=f"Bin {bin_id} · no longer in this list")).to_be_visible()
    expect(recount).to_have_value(str(int(expected) + 1))
    expect(note).to_have_value("two boxes hidden behind the tape")
    _shot(page, "conflict")
    _rerun(page, page.get_by_role("button", name="Discard mine, next bin").click)
    expect(options.filter(has_text=re.compile(rf"^{re.escape(bin_id)} · "))).to_have_count(0)
    expect(note).to_have_value("")


def _decide_by_keyboard(page, n: int) -> list[float]:
    """Dismiss n bins with the D key; the seconds from the key to the next bin on screen, per decision."""
    from playwright.sync_api import expect

    seconds = []
    for _ in range(n):
        current = page.locator("[data-testid='stRadio'] label:has(input:checked)").inner_text().split(" · ")[0]
        page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page: shortcuts
        start = time.perf_counter()
        _rerun(page, lambda: page.keyboard.press("d"))
        seconds.append(time.perf_counter() - start)
        expect(page.get_by_text(f"Bin {current}: Dismissed: record is right recorded.")).to_be_visible()
    return seconds


def _recount_by_keyboard(page) -> None:
    """Digits typed with no field focused land in the recount box; Enter confirms the mismatch with that recount."""
    from playwright.sync_api import expect

    current = page.locator("[data-testid='stRadio'] label:has(input:checked)").inner_text().split(" · ")[0]
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("1")
    page.keyboard.press("2")
    expect(page.get_by_label("Recounted quantity")).to_have_value("12")
    _rerun(page, lambda: page.keyboard.press("Enter"))
    expect(page.get_by_text(f"Bin {current}: Confirmed mismatch recorded (recount 12).")).to_be_visible()


def test_dashboard_end_to_end_in_chromium(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    url, ws = app_url
    uploads, abid_bin = _files_to_upload(ws, tmp_path)
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
        expect(_metric(page, "Bins audited")).to_have_text(re.compile(r"^[\d,]+$"))  # drawn, not a placeholder
        _shot(page, "overview")

        name = page.get_by_role("textbox", name="Your name")
        name.fill("Playwright Analyst")
        _rerun(page, lambda: name.press("Enter"))
        expect(page).to_have_url(re.compile(r"reviewer_name=Playwright(\+|%20)Analyst"))
        page.reload()  # a new session (its run counter starts again at 1): the name comes back from the address
        page.wait_for_selector(RUN_MARK, state="attached", timeout=WAIT_MS)
        page.wait_for_selector(IDLE, timeout=WAIT_MS)
        expect(page.get_by_role("textbox", name="Your name")).to_have_value("Playwright Analyst")

        _go(page, "Upload")
        _rerun(page, lambda: page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(uploads))
        # the demo model's top class is open: "6+"
        expect(_metric(page, "Predicted count")).to_have_text(re.compile(r"^([0-5]|6\+)$"))
        expect(_metric(page, "Expected count")).to_have_text("0")
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        if abid_bin:
            expect(page.get_by_text(re.compile(r"^2 photo\(s\): 2 scored, 0 failed"))).to_be_visible()
        _shot(page, "upload")

        _go(page, "Mismatch queue")
        options = page.locator("[data-testid='stRadio'] [role='radiogroup'] label")
        expect(options.first).to_be_visible()
        _two_analysts_on_one_bin(browser, page, url, ws)
        timings = _decide_by_keyboard(page, 3)
        _recount_by_keyboard(page)
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        (ROOT / "test-artifacts" / "decision-timing.json").write_text(json.dumps(
            {"seconds_per_decision": timings, "how": "D key pressed to the next bin on screen, local Chromium"}))
        print(f"time per keyboard decision: {', '.join(f'{t:.2f} s' for t in timings)}")
        _shot(page, "queue")

        remaining = [b for b, _ in _queue_ids(ws)]
        pages = math.ceil(len(remaining) / 20)
        assert pages >= 2, len(remaining)  # so that paging is needed to reach the last bin
        _rerun(page, page.get_by_label(f"Page {pages}", exact=True).click)
        expect(options.filter(has_text=re.compile(rf"^{re.escape(remaining[-1])} · "))).to_be_visible()

        _go(page, "Browse bins")
        _rerun(page, page.get_by_role("button", name="Details").first.click)
        expect(page.get_by_role("heading", name=f"Bin {hostile_bin}")).to_be_visible()
        # the hostile reviewer's name is text on the page: no image fetched, no link, no HTML (issue 12, item 4)
        shown = page.get_by_text("Latest decision").first.inner_text().replace("\u2060", "")
        assert f"by {HOSTILE_REVIEWER} at" in shown, shown
        assert page.locator("a[href*='hostile'], img[src*='hostile']").count() == 0
        assert not [r for r in requests if "hostile" in r], requests
        _shot(page, "browse")
        # where the model looked: on a real ABID photo when the sample is here, else on the uploaded demo photo
        evidence_bin = abid_bin or "88001"
        search = page.get_by_label("Search bin id, item names, ASINs")
        _rerun(page, lambda: (search.fill(evidence_bin), search.press("Enter")))
        _rerun(page, page.get_by_role("button", name="Details").first.click)
        expect(page.get_by_role("heading", name=f"Bin {evidence_bin}")).to_be_visible()
        _rerun(page, page.get_by_text("Show where the model looked (Grad-CAM)").click)
        expect(page.get_by_text(re.compile(r"items?, for the predicted count")).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Grad-CAM \(layer\d of resnet"))).to_be_visible()
        assert page.locator("[data-testid='stImage'] img").count() >= 2  # the photo and at least one overlay
        _shot(page, "evidence")

        _go(page, "Evaluation")
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        expect(page.locator("[data-testid='stMetric']", has_text="Accuracy").first).to_be_visible()
        _shot(page, "evaluation")

        folder = _make_the_demo_model_lose_a_comparison(ws, tmp_path)
        _go(page, "Retrain")
        expect(page.get_by_role("button", name="Start")).to_be_visible()
        _shot(page, "retrain")
        page.get_by_label("Validation folder").fill(str(folder))  # sent with the click that follows
        page.get_by_role("button", name="Compare").click()  # in the job list's fragment: no full rerun to wait for
        expect(page.get_by_text(re.compile(r"\(active\) accuracy / RMSE"))).to_be_visible()
        _rerun(page, page.get_by_role("button", name="Promote").click)
        refusal = page.get_by_text(re.compile(r"Refused: "))
        expect(refusal).to_be_visible()
        page.wait_for_timeout(10_000)  # the 10 s: the job list refreshes three times meanwhile
        expect(refusal).to_be_visible()
        assert "refused:" not in refusal.inner_text().split("Refused:", 1)[1].lower()
        refusal.scroll_into_view_if_needed()
        _shot(page, "refusal")
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
