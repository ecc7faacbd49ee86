"""Every dashboard page under Streamlit's AppTest, on a seeded (tiny) demo workspace, on SQLite and PostgreSQL.

The two Retrain tests that train a model run on SQLite only (their job-store work runs on both in
tests/test_jobs_*.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app.demo_recipe import REAL_PHOTO_CHECK, DemoPlan
from app.ui.text import plain
from audit.overview import overview
from audit.queue import queue_page, queue_size
from audit.reviews import DISMISS, Decision, decide
from binaudit import db
from binaudit.workspace import Workspace
from modeling.registry import active_version, get_version
from tests.conftest import DATABASES
from tests.modeling_fixtures import jpeg_bytes

DASHBOARD = str(Path(__file__).resolve().parent.parent / "app" / "dashboard.py")
# an [auth] section st.login accepts (never contacted: AppTest's user is set by the test)
OIDC_SECRETS = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x", "client_id": "id",
                "client_secret": "s", "server_metadata_url": "https://issuer.example/.well-known/openid-configuration"}


def seeded_copy(seeded_workspace: Path, tmp_path: Path, monkeypatch, database_url: str | None = None) -> Workspace:
    """A private copy of the seeded workspace, and the environment pointing the app at it."""
    root = tmp_path / "ws"
    shutil.copytree(seeded_workspace, root)
    monkeypatch.setenv("BINAUDIT_WORKSPACE", str(root))
    monkeypatch.setenv("BINAUDIT_SECRETS", str(tmp_path / "no-secrets.toml"))
    if database_url:
        monkeypatch.setenv("BINAUDIT_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("BINAUDIT_DATABASE_URL", raising=False)
    return Workspace(root, database_url or f"sqlite:///{root / 'binaudit.db'}")


@pytest.fixture(params=DATABASES)
def ws(request, seeded_workspace, tmp_path, monkeypatch) -> Workspace:
    """The seeded workspace on SQLite, and with its database copied into PostgreSQL."""
    if request.param == "sqlite":
        return seeded_copy(seeded_workspace, tmp_path, monkeypatch)
    server = request.getfixturevalue("pg_server")
    name = server.create_database(template=request.getfixturevalue("seeded_pg_template"))
    request.addfinalizer(lambda: server.drop_database(name))
    return seeded_copy(seeded_workspace, tmp_path, monkeypatch, server.url(name))


@pytest.fixture
def sqlite_ws(seeded_workspace, tmp_path, monkeypatch) -> Workspace:
    """SQLite only, for the tests that train a model (the database work they add is covered on both)."""
    return seeded_copy(seeded_workspace, tmp_path, monkeypatch)


def open_page(page: str | None = None, reviewer: str | None = None) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.run()
    if reviewer:
        at.sidebar.text_input(key="reviewer_name").set_value(reviewer)
        at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_shows_the_workspace_figures(ws):
    at = open_page()
    engine = ws.open()
    version = active_version(engine)
    o = overview(engine, version.id, threshold=0.5)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Bins audited"] == f"{o.scored:,}"
    assert metrics["Queued bins"] == f"{o.open_queue:,}"
    assert metrics["Version"] == version.name
    assert metrics["Validation accuracy (synthetic bins)"] == f"{version.val_accuracy:.1%}"
    assert "Accuracy on real ABID photos" not in metrics  # the tiny demo is not the measured recipe
    assert not any("precision" in d.value.columns for d in at.dataframe)  # no decisions yet: no table

    top = queue_page(engine, version.id, threshold=0.5, limit=2)
    decide(engine, Decision(top.bin_id[0], DISMISS, "ana", int(top.row_version[0]), model_version_id=version.id))
    at.run()
    precision = next(d.value for d in at.dataframe if "precision" in d.value.columns)
    assert precision[["model", "decided", "dismissed", "precision"]].values.tolist() == [[version.name, 1, 1, 0.0]]
    per_day = next(d.value for d in at.dataframe if "reviewer" in d.value.columns)
    assert per_day[["reviewer", "decisions"]].values.tolist() == [["ana", 1]]


def test_the_demo_recipe_shows_its_real_photo_figure_beside_the_synthetic_one(ws):
    engine = ws.open()
    version = active_version(engine)
    args = {**version.config["resolved_args"], **DemoPlan().training_args()}  # as if trained by the full recipe
    with engine.begin() as conn:
        conn.execute(sa.update(db.model_versions).where(db.model_versions.c.id == version.id)
                     .values(config={**version.config, "resolved_args": args}))
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Accuracy on real ABID photos"] == f"{REAL_PHOTO_CHECK.accuracy:.1%}"
    assert metrics["Validation accuracy (synthetic bins)"] == f"{version.val_accuracy:.1%}"
    assert any(REAL_PHOTO_CHECK.sentence() in c.value for c in at.caption)
    at.switch_page("app_pages/evaluation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("synthetic validation bins" in i.value and REAL_PHOTO_CHECK.sentence() in i.value for i in at.info)


def test_upload_scores_good_files_and_names_bad_ones(ws):
    at = open_page("upload")
    meta = json.dumps({"BIN_FCSKU_DATA": {"B0TEST": {"asin": "B0TEST", "name": "Tea", "quantity": 2}},
                       "EXPECTED_QUANTITY": 2}).encode()
    at.file_uploader[0].set_value([("77001.jpg", jpeg_bytes(120, 100), "image/jpeg"),
                                   ("77001.json", meta, "application/json"),
                                   ("notes.jpg", b"this is not a photo", "image/jpeg")]).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith(plain("notes.jpg:")) for e in errors), errors  # file names are shown as typed
    assert not any("notes.jpg" in n.label for n in at.number_input)  # a file that failed gets no count box
    batch = next(d.value for d in at.dataframe if "File" in d.value.columns or "file" in d.value.columns)
    assert batch.iloc[:, 0].tolist() == ["77001.jpg", "notes.jpg"] and "None" not in batch.astype(str).to_string()
    assert any(c.value.startswith("2 photo(s): 1 scored, 1 failed") for c in at.caption)
    assert any(b.label == "Batch CSV" for b in at.get("download_button"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Expected count"] == "2" and "Predicted count" in metrics and "Mismatch probability" in metrics
    engine = ws.open()
    with engine.connect() as conn:
        pred = conn.execute(sa.select(db.predictions.c.expected_count, db.predictions.c.mismatch_probability)
                            .where(db.predictions.c.bin_id == "77001")).one()
    assert pred.expected_count == 2 and metrics["Mismatch probability"] == f"{pred.mismatch_probability:.0%}"

    at.button(key=next(b.key for b in at.button if b.key and b.key.startswith("queue-77001"))).click().run()
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.bins.c.queued).where(db.bins.c.id == "77001")).scalar() is True


def test_upload_with_a_typed_expected_count(ws):
    at = open_page("upload")
    at.file_uploader[0].set_value(("shelf.png", jpeg_bytes(90, 80), "image/jpeg")).run()
    assert not at.exception
    at.number_input[0].set_value(4).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Expected count"] == "4"
    engine = ws.open()
    with engine.connect() as conn:
        stored = conn.execute(sa.select(db.bins.c.expected_count).where(db.bins.c.id.like("shelf-%"))).scalar()
    assert stored == 4


def test_browse_filters_grid_table_and_detail(ws):
    at = open_page("browse")
    total = at.caption[0].value if at.caption[0].value.endswith("bin(s)") else next(
        c.value for c in at.caption if c.value.endswith("bin(s)"))
    assert total == "30 bin(s)"
    at.multiselect(key="f_expected").set_value([3]).run()
    captions = [c.value for c in at.caption if " · expected " in c.value]
    assert captions and all(" · expected 3 · " in c for c in captions)
    at.multiselect(key="f_expected").set_value([]).run()
    at.text_input(key="f_text").set_value("50007").run()
    assert next(c.value for c in at.caption if c.value.endswith("bin(s)")) == "1 bin(s)"
    at.button(key="open-50007").click().run()
    assert any(h.value == "Bin 50007" for h in at.subheader)
    assert not at.exception
    images = len(at.get("image"))
    at.toggle(key="browse-detail-evidence").set_value(True).run()  # Grad-CAM, for the predicted and the record's count
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("image")) - images in (1, 2)  # one map when the record's count is the predicted one
    assert any("Grad-CAM (layer2 of resnet18, a 4×4 map" in c.value for c in at.caption)
    at.segmented_control(key="f_view").set_value("Table").run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "Bin" in d.value.columns)  # not the detail view's items
    assert table["Bin"].tolist() == ["50007"]  # the text filter still applies
    assert "None" not in table.astype(str).to_string() and "Predicted count differs" in table.columns


def test_browse_filters_cover_every_value_persist_across_pages_and_cards_show_decisions(ws):
    engine = ws.open()
    with engine.connect() as conn:
        records = sorted(set(conn.execute(sa.select(db.bins.c.expected_count)).scalars()) - {None})
        splits = set(conn.execute(sa.select(db.bins.c.split)).scalars())
    first = "50001"
    decide(engine, Decision(first, "confirm_mismatch", "ben", 1, recounted_count=11))
    at = open_page("browse")
    assert at.multiselect(key="f_expected").options == [str(r) for r in records] and max(records) > 7
    assert splits == {None} and not any(m.key == "f_split" for m in at.multiselect)  # no split: no split filter
    assert any("Confirmed mismatch · recount 11" in m.value for m in at.markdown), [m.value for m in at.markdown]
    at.multiselect(key="f_expected").set_value([max(records)]).run()
    at.switch_page("app_pages/overview.py").run()
    at.switch_page("app_pages/browse.py").run()
    assert at.multiselect(key="f_expected").value == [max(records)]  # kept while she looked elsewhere


def test_queue_decision_leaves_the_queue(ws):
    engine = ws.open()
    version = active_version(engine)
    before = queue_size(engine, version.id, threshold=0.5)
    assert before >= 2  # so a queue is left to show after the decision
    at = open_page("queue", reviewer="ana")
    first = queue_page(engine, version.id, threshold=0.5, limit=1).iloc[0].bin_id
    assert at.radio(key="queue_current").value == first
    at.text_input(key="queue_note").set_value("looks fine").run()
    at.button(key="btn-dismiss").click().run()
    assert not at.exception
    assert any("recorded" in s.value for s in at.success)
    assert first not in at.radio(key="queue_current").options  # the queue had two or more bins: it still shows
    assert queue_size(engine, version.id, threshold=0.5) == before - 1
    with engine.connect() as conn:
        review = conn.execute(sa.select(db.reviews.c.reviewer, db.reviews.c.note, db.reviews.c.decision)
                              .where(db.reviews.c.bin_id == first)).one()
    assert tuple(review) == ("ana", "looks fine", DISMISS)


def _shown_bin(at: AppTest) -> str:
    """The heading of the bin the queue page works on."""
    return next(h.value for h in at.subheader if h.value.startswith("Bin "))


def _confirm(at: AppTest) -> None:
    at.button[[b.label for b in at.button].index("Confirm mismatch")].click().run()


def test_a_bin_decided_by_another_analyst_stays_on_screen_with_her_recount_and_note(ws):
    """Issue 13: ana types a recount and a note for a bin ben decides meanwhile. She is told who decided what, the bin
    stays, her input stays; she applies it anyway (replacing ben's decision, both kept in the history)."""
    engine = ws.open()
    version = active_version(engine)
    at = open_page("queue", reviewer="ana")
    current = at.radio(key="queue_current").value
    row = queue_page(engine, version.id, threshold=0.5, limit=50).set_index("bin_id").loc[current]
    recount = 0 if row.expected_count != 0 else 1
    at.text_input(key="queue_note").set_value("two boxes behind the tape").run()
    decide(engine, Decision(current, DISMISS, "ben", int(row.row_version)))  # after the page showed the bin
    at.number_input(key=f"recount-{current}").set_value(recount)  # a form: the value goes with the submit, one run
    _confirm(at)
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any("decided meanwhile" in w and "ben" in w and "Dismissed: record is right" in w
               and f"(recount {recount}) was not recorded" in w for w in warnings), warnings
    assert _shown_bin(at) == f"Bin {current} · no longer in this list"  # the bin did not move under her hands
    assert at.number_input(key=f"recount-{current}").value == recount
    assert at.text_input(key="queue_note").value == "two boxes behind the tape"
    assert at.button(key="btn-dismiss").disabled  # no decision on a state she has not seen
    with engine.connect() as conn:
        reviewers = conn.execute(sa.select(db.reviews.c.reviewer).where(db.reviews.c.bin_id == current)).scalars().all()
    assert reviewers == ["ben"]  # nothing overwritten yet

    at.button(key="conflict-apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with engine.connect() as conn:
        decision = conn.execute(sa.select(db.bins.c.decision, db.bins.c.recounted_count, db.bins.c.decided_by)
                                .where(db.bins.c.id == current)).one()
        notes = conn.execute(sa.select(db.reviews.c.reviewer, db.reviews.c.note).where(db.reviews.c.bin_id == current)
                             .order_by(db.reviews.c.id)).all()
    assert tuple(decision) == ("confirm_mismatch", recount, "ana")
    assert [tuple(n) for n in notes] == [("ben", ""), ("ana", "two boxes behind the tape")]
    assert _shown_bin(at) != f"Bin {current}" and not _shown_bin(at).startswith(f"Bin {current} ")


def test_queue_is_told_before_acting_and_may_discard_her_input(ws):
    engine = ws.open()
    version = active_version(engine)
    at = open_page("queue", reviewer="ana")
    current = at.radio(key="queue_current").value
    at.text_input(key="queue_note").set_value(f"note for {current}").run()
    row = queue_page(engine, version.id, threshold=0.5, limit=50).set_index("bin_id").loc[current]
    decide(engine, Decision(current, DISMISS, "ben", int(row.row_version)))
    at.run()  # any rerun (a filter, a key) shows the change before she acts
    assert any("decided meanwhile" in w.value and "ben" in w.value for w in at.warning)
    assert _shown_bin(at) == f"Bin {current} · no longer in this list"
    assert not any(b.key == "conflict-apply" for b in at.button)  # she had not decided: nothing to apply
    at.button(key="conflict-discard").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="queue_current").value != current and at.text_input(key="queue_note").value == ""


def test_queue_pages_to_its_last_bin_filters_and_undoes_a_decision(ws):
    from audit.reviews import bin_state

    engine = ws.open()
    version = active_version(engine)
    order = queue_page(engine, version.id, threshold=0.5, limit=1000)
    ids = order["bin_id"].tolist()
    at = open_page("queue", reviewer="ana")
    legend = next(d.value for d in at.dataframe if "meaning" in d.value.columns)  # beside the CSV downloads
    assert {"queued", "sent_by_hand", "predicted_count_differs", "decision", "undone_at"} <= set(legend["column"])
    at.selectbox(key="q_page_size").set_value(10).run()
    pages = -(-len(ids) // 10)
    assert pages >= 2, len(ids)
    at.pagination[0].set_value(pages).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [o.split(" · ")[0] for o in at.radio(key="queue_current").options] == ids[(pages - 1) * 10:]
    assert ids[-1] in at.radio(key="queue_current").options[-1]  # the last queued bin can be reached

    record = int(order["expected_count"].mode()[0])
    at.multiselect(key="q_expected").set_value([record]).run()
    options = at.radio(key="queue_current").options
    assert options and all(f" · record {record} · " in o for o in options), options
    assert len(options) == (order["expected_count"] == record).sum() or len(options) == 10

    current = at.radio(key="queue_current").value
    at.button(key="btn-dismiss").click().run()
    assert bin_state(engine, current).decision == DISMISS
    assert current not in at.radio(key="queue_current").options
    at.button(key="btn-undo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert bin_state(engine, current).decision is None and at.radio(key="queue_current").value == current
    assert any("undone" in s.value for s in at.success)
    assert not any(b.key == "btn-undo" for b in at.button)  # nothing left to undo


def test_queue_needs_a_reviewer_name(ws):
    at = open_page("queue")
    assert any("Enter your name" in w.value for w in at.warning)
    assert at.button(key="btn-dismiss").disabled


def test_evaluation_shows_charts_and_tables(ws):
    at = open_page("evaluation")
    labels = {m.label for m in at.metric}
    assert {"Accuracy", "RMSE", "MAE", "Within one"} <= labels
    charts = at.get("plotly_chart")
    assert len(charts) >= 4  # confusion matrix and three training curves
    per_count = next(d.value for d in at.dataframe if "count" in d.value.columns)
    assert per_count["count"].tolist() == ["0", "1", "2", "3", "4", "5", "6+"]  # the demo model is open
    assert any("synthetic" in c.value for c in at.caption)


def _wait_for_job(engine, job_id: str, timeout: float = 240.0):
    import time

    from jobs import get_job, refresh_active

    deadline = time.time() + timeout
    while time.time() < deadline:
        refresh_active(engine)
        job = get_job(engine, job_id)
        if job.is_final:
            return job
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _better_twin_and_folder(engine, ws: Workspace, candidate, tmp_path: Path):
    """An active model that beats `candidate` on a folder by construction, whatever the two tiny trainings learned.

    The twin is the candidate with its head's rows rolled by one (it predicts count c+1 mod 6 wherever the candidate
    predicts c); the folder files real photos under the twin's prediction, so the twin is right on each one and the
    candidate wrong. Returns the folder.
    """
    import torch

    from modeling.predictor import Predictor
    from modeling.registry import activate, register_model

    twin_dir = tmp_path / "twin"
    shutil.copytree(candidate.model_dir, twin_dir)
    for stale in ("model.onnx", "model.int8.onnx", "scoring_paths.json"):  # exported from the candidate's weights
        (twin_dir / stale).unlink(missing_ok=True)
    state = torch.load(twin_dir / "model.pth", weights_only=True)
    state["fc.weight"], state["fc.bias"] = state["fc.weight"].roll(1, 0), state["fc.bias"].roll(1, 0)
    torch.save(state, twin_dir / "model.pth")
    twin = register_model(engine, twin_dir, ws.models_dir, actor="test")
    activate(engine, twin.id, actor="test")

    folder = tmp_path / "judge"
    photos = sorted((ws.root / "demo" / "dataset" / "val").glob("*/*.jpg"))
    for result in Predictor.load(twin.model_dir, precision="fp32").predict_paths(photos, workers=0, progress=False):
        target = folder / twin.classes.labels[int(result.probs.argmax())] / Path(result.path).name  # "6+", not 6
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.path, target)
    return twin, folder


@pytest.mark.slow
def test_retrain_starts_a_local_job_and_promotion_is_guarded(sqlite_ws, tmp_path, monkeypatch):
    from jobs import list_jobs
    from modeling import registry
    from modeling.registry import get_version

    ws = sqlite_ws
    engine = ws.open()
    before = {j.id for j in list_jobs(engine, kind="training")}
    assert len(before) == 1  # the demo's own training job
    at = open_page("retrain", reviewer="ana")
    form = at.get("form")[0]
    assert form is not None
    at.number_input(key="setting-epochs").set_value(1)
    at.number_input(key="setting-image_size").set_value(64)
    at.number_input(key="setting-batch_size").set_value(16)
    at.button[[b.label for b in at.button].index("Start")].click().run()
    assert not at.exception, [e.value for e in at.exception]
    jobs = [j for j in list_jobs(engine, kind="training") if j.id not in before]
    sent = jobs[0].params["training"]
    assert len(jobs) == 1 and sent["epochs"] == 1 and sent["image_size"] == 64 and sent["batch_size"] == 16
    assert Path(sent["recounts"]).parent == ws.exports_dir and Path(sent["recounts"]).is_dir()  # recounts included
    assert any(i.value.startswith("Analysts' recounts: 0 added to the training data, 0 left out") for i in at.info)

    job = _wait_for_job(engine, jobs[0].id)
    assert job.status == "Completed", job.failure_reason
    assert job.model_version_id is not None and len(job.metrics) == 1
    candidate = get_version(engine, job.model_version_id)
    twin, folder = _better_twin_and_folder(engine, ws, candidate, tmp_path)

    at.run()  # the job list and the detail view of the finished job
    assert not at.exception, [e.value for e in at.exception]
    assert any("is registered" in m.value for m in at.markdown)
    assert any(c.value.startswith("Analysts' recounts: 0 handed to the job") and "training used 0" in c.value
               for c in at.caption), [c.value for c in at.caption]
    assert any(c.value.startswith("epoch 1 of 1 · ") for c in at.caption)
    assert "None" not in str(next(d.value for d in at.dataframe if "val accuracy" in d.value.columns).to_dict())
    at.text_input(key=f"cmp-val-{candidate.id}").set_value(str(folder))
    at.button(key=f"cmp-{candidate.id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = {m.label: float(m.value.split("%")[0]) for m in at.metric if m.label.endswith("accuracy / RMSE")}
    # 0% and 100% unless a near-tie of two logits decodes differently in the comparison's batches
    assert shown[f"{candidate.name} accuracy / RMSE"] < 50 < shown[f"{twin.name} (active) accuracy / RMSE"], shown
    assert any(f"vs active {twin.name}" in w.value for w in at.warning), [w.value for w in at.warning]  # not info

    at.button(key=f"promote-{candidate.id}").click().run()  # worse: refused
    refusals = [e.value for e in at.error if "Refused:" in e.value]
    assert refusals and not any("refused:" in r.lower().split("refused:", 1)[1] for r in refusals), refusals
    at.run()  # the job list's refresh (every 3 s in a browser): the refusal stays until dismissed
    assert [e.value for e in at.error if "Refused:" in e.value] == refusals
    assert active_version(engine).id == twin.id
    at.checkbox(key=f"force-{candidate.id}").check()
    with monkeypatch.context() as m:  # every activation loses its race: promote gives up, the page says so
        def lose_race(*args, **kwargs):
            raise registry.ActiveVersionChanged("another version was activated meanwhile")

        m.setattr(registry, "activate", lose_race)
        at.button(key=f"promote-{candidate.id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Not promoted: the active model version kept changing" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert active_version(engine).id == twin.id
    at.button(key=f"promote-{candidate.id}").click().run()  # forced: promoted
    assert any("Promoted:" in s.value for s in at.success), [s.value for s in at.success]
    assert active_version(engine).id == candidate.id


def test_reviewer_comes_from_the_login_when_oidc_is_configured(ws, monkeypatch):
    monkeypatch.setenv("BINAUDIT_REQUIRE_LOGIN", "true")
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.secrets["auth"] = OIDC_SECRETS
    at.run()
    assert any(b.label == "Log in to review" for b in at.sidebar.button)  # not signed in: no name prompt
    assert not any(t.label == "Your name" for t in at.sidebar.text_input)
    at.switch_page("app_pages/queue.py").run()
    assert at.button(key="btn-dismiss").disabled

    at.user.update({"is_logged_in": True, "name": "Ana Analyst", "email": "ana@example.com"})
    at.run()
    assert any("Signed in as **Ana Analyst**" in c.value for c in at.sidebar.caption)
    current = at.radio(key="queue_current").value
    at.button(key="btn-dismiss").click().run()
    assert not at.exception
    with ws.open().connect() as conn:
        decided_by = conn.execute(sa.select(db.bins.c.decided_by).where(db.bins.c.id == current)).scalar()
    assert decided_by == "Ana Analyst"


def test_pages_show_bins_without_a_mismatch_probability(ws):
    at = open_page("upload", reviewer="ana")
    at.file_uploader[0].set_value([("shelf.png", jpeg_bytes(90, 80), "image/jpeg"),
                                   ("shelf.png", jpeg_bytes(90, 80), "image/jpeg")]).run()  # picked twice
    assert not at.exception, [e.value for e in at.exception]
    assert [m.label for m in at.metric].count("Predicted count") == 1
    at.button(key=next(b.key for b in at.button if b.key and b.key.startswith("queue-shelf"))).click().run()

    at.switch_page("app_pages/browse.py").run()
    at.text_input(key="f_text").set_value("shelf").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value.startswith(plain("shelf-")) and "predicted" in c.value for c in at.caption)

    engine = ws.open()
    version = active_version(engine)
    for row in queue_page(engine, version.id, threshold=0.0, limit=1000).itertuples():  # hand-queued bins rank last
        if not row.bin_id.startswith("shelf-"):
            decide(engine, Decision(row.bin_id, DISMISS, "ben", int(row.row_version)))
    at.switch_page("app_pages/queue.py").run()
    assert not at.exception, [e.value for e in at.exception]
    labels = at.radio(key="queue_current").options
    assert any(label.startswith(plain("shelf-")) and label.endswith("sent by hand") for label in labels), labels


def test_queue_confirm_needs_a_typed_recount(ws):
    engine = ws.open()
    at = open_page("queue", reviewer="ana")
    current = at.radio(key="queue_current").value
    assert at.number_input(key=f"recount-{current}").value is None  # never the model's guess by default
    _confirm(at)
    assert any("needs the recounted quantity" in w.value for w in at.warning)
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.bins.c.decision).where(db.bins.c.id == current)).scalar() is None


def test_evaluation_side_by_side_shows_every_count_and_the_same_data_kind(ws, tmp_path):
    """Issue 13: two versions side by side showed ticks 0, 2, 4 only; one said "data: unknown" for the folder the
    other called synthetic (its training folder was a copy, its validation folder the dataset's)."""
    from modeling.registry import register_model

    engine = ws.open()
    first = active_version(engine)
    copy = tmp_path / "copy"
    shutil.copytree(first.model_dir, copy)
    config = json.loads((copy / "model_config.json").read_text())
    config["resolved_args"]["train"] = str(tmp_path / "elsewhere" / "train")  # no stats.json beside it
    (copy / "model_config.json").write_text(json.dumps(config))
    second = register_model(engine, copy, ws.models_dir)
    at = open_page("evaluation")
    at.selectbox(key="eval_compare").set_value(second.name).run()
    assert not at.exception, [e.value for e in at.exception]
    kinds = [c.value.split("data: ")[1].split(" ·")[0] for c in at.caption if "data: " in c.value]
    assert kinds == ["synthetic", "synthetic"], kinds
    labels = list(first.classes.labels)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    matrices = [spec for spec in specs if spec["data"][0]["type"] == "heatmap"]
    assert len(matrices) == 2
    for spec in matrices:
        assert spec["layout"]["xaxis"]["tickvals"] == labels and spec["layout"]["yaxis"]["tickvals"] == labels


def test_evaluation_of_a_version_without_a_confusion_matrix(ws):
    version = active_version(ws.open())
    path = version.model_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    for result in [metrics["final"], *metrics["final"].get("decodings", {}).values()]:
        result.pop("confusion_matrix", None)
        result.pop("per_class", None)
        result.pop("within_one", None)
    path.write_text(json.dumps(metrics))
    at = open_page("evaluation")
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Within one"] == "–"
    assert any("no confusion matrix" in c.value for c in at.caption)


def test_retrain_lists_training_jobs_behind_many_other_jobs(ws):
    from jobs.store import create_job

    engine = ws.open()
    for _ in range(35):  # newer than the demo's training job
        create_job(engine, kind="transform", backend="local", params={}, actor="t", status="Completed")
    sagemaker_job = create_job(engine, kind="training", backend="sagemaker", params={}, actor="t", status="InProgress")
    at = open_page("retrain", reviewer="ana")
    assert not at.exception, [e.value for e in at.exception]
    options = at.selectbox(key="retrain_job").options
    assert sagemaker_job.id in options and any(o.startswith("train-") and o != sagemaker_job.id for o in options)
    # the newest job is SageMaker's and AWS is not configured here: a warning, not a broken fragment
    assert any("not configured here" in w.value for w in at.warning)


@pytest.mark.slow
def test_retrain_resumes_a_stopped_job_from_its_checkpoint(sqlite_ws):
    ws = sqlite_ws
    from jobs import TrainingParams, get_job
    from jobs.jobdirs import checkpoint_dir, job_dir
    from jobs.store import create_job

    engine = ws.open()
    data = ws.root / "demo" / "dataset"
    params = TrainingParams(train=str(data / "train"), val=str(data / "val"), arch="resnet18", image_size=32,
                            epochs=3, batch_size=16, workers=0)
    stopped = create_job(engine, kind="training", backend="local", params={"training": params.to_dict()},
                         actor="ana", status="Stopped", log_path=str(job_dir(ws, "x") / "train.log"))
    saved = checkpoint_dir(job_dir(ws, stopped.id))
    saved.mkdir(parents=True)
    (saved / "checkpoint.pth").write_bytes(b"not a checkpoint")  # train.py refuses it: the new job fails fast
    (saved / "checkpoint.json").write_text('{"epoch": 2, "epochs": 3}')

    at = open_page("retrain", reviewer="ana")
    assert at.selectbox(key="retrain_job").value == stopped.id  # the newest job
    assert any("continues this job after epoch 2 of 3" in i.value for i in at.info)
    at.button(key=f"resume-{stopped.id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    new_id = at.selectbox(key="retrain_job").value
    assert new_id != stopped.id and get_job(engine, new_id).params["resumed_from"] == stopped.id
    assert any(c.value.startswith(f"Resumed from {stopped.id} after epoch 2") for c in at.caption)
    assert (checkpoint_dir(job_dir(ws, new_id)) / "checkpoint.pth").is_file() and not saved.exists()

    job = _wait_for_job(engine, new_id)  # the runner handed train.py the moved checkpoint
    assert job.status == "Failed" and "cannot read checkpoint" in job.failure_reason


def test_the_training_settings_agree_in_train_py_the_job_params_the_cli_and_the_form(ws):
    """One definition (modeling.settings), four consumers: every setting is a train.py flag with its default, and
    every job setting a TrainingParams field, a `python -m jobs train` flag and a Retrain input with that default."""
    from jobs import TrainingParams
    from jobs.cli import build_parser
    from modeling.settings import BY_NAME, JOB_SETTINGS, SETTINGS
    from modeling.train import get_args_parser

    train_py = {a.option_strings[0]: a for a in get_args_parser()._actions if a.option_strings}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    cli = {a.option_strings[0]: a for a in sub.choices["train"]._actions if a.option_strings}
    params = TrainingParams()
    at = open_page("retrain")
    for s in SETTINGS:
        assert train_py[s.flag].default == s.train_default and train_py[s.flag].dest == s.name, s.name
        assert tuple(train_py[s.flag].choices or ()) == s.choices, s.name
    for s in JOB_SETTINGS:
        assert getattr(params, s.name) == s.default, s.name
        assert cli[s.flag].dest == s.name and tuple(cli[s.flag].choices or ()) == s.choices, s.name
        widget = (at.selectbox if s.choices else at.number_input)(key=f"setting-{s.name}")
        assert widget.value == s.default and widget.label == s.label, s.name
        if s.choices:
            assert tuple(widget.options) == tuple(map(str, s.choices)), s.name
    # the drift that one definition ended: the form's learning rate was 0.05, train.py's 0.01
    assert at.number_input(key="setting-lr").value == BY_NAME["lr"].default == train_py["--lr"].default == 0.01


@pytest.mark.slow
def test_a_recount_of_a_test_bin_made_on_the_queue_page_never_reaches_a_job_started_on_the_retrain_page(ws, tmp_path):
    """Three recounts made in the dashboard: of a bin the database knows is in the test split, of a bin whose photo
    is in the test folder the job uses, and of an ordinary audited bin. Only the last reaches training."""
    from jobs import list_jobs

    engine = ws.open()
    version = active_version(engine)
    at = open_page("queue", reviewer="ana")
    decided = []
    for _ in range(3):
        current = at.radio(key="queue_current").value
        expected = queue_page(engine, version.id, threshold=0.5, limit=50).set_index("bin_id").loc[current,
                                                                                                   "expected_count"]
        at.number_input(key=f"recount-{current}").set_value(0 if expected != 0 else 1)
        at.button[[b.label for b in at.button].index("Confirm mismatch")].click().run()
        assert not at.exception, [e.value for e in at.exception]
        decided.append(current)
    in_test_split, in_test_folder, ordinary = decided
    with db.write_tx(engine) as conn:  # as `python -m audit import --dataset` records a test bin
        conn.execute(db.bins.update().where(db.bins.c.id == in_test_split).values(split="test"))
    test_folder = tmp_path / "test"
    shutil.copytree(Path(version.config["resolved_args"]["test"]), test_folder)
    (test_folder / "2" / f"{in_test_folder}.jpg").write_bytes(jpeg_bytes(64, 56))
    with engine.connect() as conn:
        confirmed = conn.execute(sa.select(db.bins.c.id).where(db.bins.c.decision == "confirm_mismatch")).scalars()
        assert set(confirmed) == set(decided)

    before = {j.id for j in list_jobs(engine, kind="training")}
    at = open_page("retrain", reviewer="ana")
    at.number_input(key="setting-epochs").set_value(1)
    at.number_input(key="setting-image_size").set_value(32)
    at.number_input(key="setting-batch_size").set_value(16)
    at.text_input(key="retrain_test").set_value(str(test_folder))
    assert at.checkbox[[c.label for c in at.checkbox].index("Include analysts' recounts")].value
    at.button[[b.label for b in at.button].index("Start")].click().run()
    assert not at.exception, [e.value for e in at.exception]
    (job,) = [j for j in list_jobs(engine, kind="training") if j.id not in before]
    channel = Path(job.params["training"]["recounts"])
    assert job.params["training"]["test"] == str(test_folder)
    assert {p.stem for p in channel.rglob("*.jpg")} == {ordinary}  # the folder the job got as its recounts channel

    job = _wait_for_job(engine, job.id)
    assert job.status == "Completed", job.failure_reason
    trained = get_version(engine, job.model_version_id)
    assert trained.config["resolved_args"]["recounts"] == str(channel)
    assert trained.metrics["recounts"] == {"folder": str(channel), "used": 1, "replaced": 0, "left_out": 0,
                                           "left_out_bins": [], "beyond_range": 0}
    assert ("recounts: 1 used (0 replacing their photo in --train), 0 left out of training"
            in Path(job.log_path).read_text())


def _activate_a_closed_model(ws: Workspace, tmp_path: Path):
    """A closed 0..5 model made active and every bin scored with it (the demo's bins hold up to 8 items)."""
    from audit.scorers import local_scorer
    from audit.scoring import score_bins
    from modeling.registry import activate, register_model
    from tests.modeling_fixtures import closed_model_dir

    engine = ws.open()
    version = register_model(engine, closed_model_dir(tmp_path / "closed"), ws.models_dir)
    activate(engine, version.id, actor="test")
    score_bins(engine, ws, version, local_scorer(version.model_dir, workers=0), progress=False)
    with engine.connect() as conn:
        beyond = set(conn.execute(sa.select(db.predictions.c.bin_id).where(
            db.predictions.c.model_version_id == version.id, db.predictions.c.expected_count > 5)).scalars())
    assert beyond  # the demo draws bins of 6 to 8 items
    return engine, version, beyond


def test_the_open_demo_model_shows_its_top_class_as_6_plus(ws):
    engine = ws.open()
    version = active_version(engine)
    assert version.classes.open_top and version.classes.labels[-1] == "6+"  # the demo builds an open dataset
    at = open_page("browse")
    at.multiselect(key="f_predicted").set_value([6]).run()  # the open class is index 6, shown as "6+"
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption if " · predicted " in c.value]
    assert all(" · predicted 6+" in c for c in captions) and not any(" · predicted 6 " in c for c in captions)
    assert at.toggle(key="f_beyond").disabled  # an open model checks every bin
    at = open_page("evaluation")
    assert any("truncated at 6" in c.value for c in at.caption)


def test_a_closed_model_leaves_bins_above_5_out_of_the_queue_and_says_why(ws, tmp_path):
    engine, version, beyond = _activate_a_closed_model(ws, tmp_path)
    queued = set(queue_page(engine, version.id, threshold=0.0, limit=1000)["bin_id"])
    assert queued and not queued & beyond  # at threshold 0 every checkable bin is in, no beyond-range one

    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Beyond the model's range"] == f"{len(beyond):,}"
    assert metrics["Queued bins"] == f"{queue_size(engine, version.id, threshold=0.5):,}"

    at = open_page("browse")
    at.toggle(key="f_beyond").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert next(c.value for c in at.caption if c.value.endswith("bin(s)")) == f"{len(beyond)} bin(s)"
    captions = [c.value for c in at.caption if " · expected " in c.value]
    assert captions and all(c.endswith("· beyond range") for c in captions)
    first = sorted(beyond)[0]
    at.button(key=f"open-{first}").click().run()
    assert any("beyond this model's range" in i.value for i in at.info)
    assert {m.label: m.value for m in at.metric}["Mismatch probability"] == "–"

    at.button(key="detail-queue").click().run()  # an analyst may still send it by hand
    for row in queue_page(engine, version.id, threshold=0.0, limit=1000).itertuples():  # hand-queued bins rank last
        if row.bin_id != first:
            decide(engine, Decision(row.bin_id, DISMISS, "ben", int(row.row_version)))
    at = open_page("queue", reviewer="ana")
    labels = at.radio(key="queue_current").options
    assert any(label.startswith(f"{first} · record ") and label.endswith(" · sent by hand · beyond range")
               for label in labels), labels


def test_the_published_reference_shows_only_beside_a_closed_0_to_5_model(ws, tmp_path):
    from app.ui.model_facts import shows_published_reference
    from modeling.registry import activate, register_model
    from tests.modeling_fixtures import closed_model_dir

    engine = ws.open()
    opened = active_version(engine)
    closed_dir = closed_model_dir(tmp_path / "closed")
    shutil.copy(opened.model_dir / "metrics.json", closed_dir / "metrics.json")  # figures to show beside it
    closed = register_model(engine, closed_dir, ws.models_dir, extra_config={"data_source": "abid"})
    assert shows_published_reference(closed) and not shows_published_reference(opened)
    open_abid = register_model(engine, opened.model_dir, ws.models_dir, extra_config={"data_source": "abid"})
    for version, shown in ((open_abid, False), (closed, True)):
        activate(engine, version.id, actor="test")
        at = open_page("evaluation")
        assert not at.exception, [e.value for e in at.exception]
        deltas = [m.delta for m in at.metric if m.label in ("Accuracy", "RMSE")]
        assert any("ABID ref." in (d or "") for d in deltas) == shown, version.name
        assert any("Published ABID results" in e.label for e in at.expander) == shown


def test_the_reviewer_name_is_kept_in_the_address_so_a_reload_keeps_it(ws):
    """The browser writes the typed name into the address (the browser test checks that); a new session opened
    at that address starts with the name."""
    reloaded = AppTest.from_file(DASHBOARD, default_timeout=120)  # a new session, as after a reload
    reloaded.query_params["reviewer_name"] = "Ana Analyst"
    reloaded.run()
    reloaded.switch_page("app_pages/queue.py").run()
    assert not reloaded.exception, [e.value for e in reloaded.exception]
    assert reloaded.sidebar.text_input(key="reviewer_name").value == "Ana Analyst"
    assert not reloaded.button(key="btn-dismiss").disabled
