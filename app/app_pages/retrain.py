"""Retrain: start a training (or tuning) job, watch it live, compare the result with the active model, promote.

Jobs run through `jobs` on the configured backend (local by default, SageMaker when chosen); the form has one
input per training setting (modeling.settings: the defaults train.py has). With "Include analysts' recounts" the
audit core writes the recounts of bins outside val and test into a folder, which the job gets as its "recounts"
channel; the job's detail says how many it used and how many were left out (bins in val or test). The job list
refreshes itself every few seconds without rerunning the rest of the page: a running job shows epoch k of n, the time
elapsed and an estimate of the time left; what the analyst asked for (a started job's recounts, a promotion's
outcome) stays on screen until she dismisses it. Before Start the form says what a SageMaker job would run on and
about what it costs; with the SageMaker backend configured, idle endpoints (which bill every hour) are named at the
top.
"""

from __future__ import annotations

import streamlit as st

from app.ui.charts import curves_figure
from app.ui.context import app_context, current_model
from app.ui.identity import current_reviewer
from app.ui.text import plain
from audit.export import recount_summary, recounts_for_training, stored_recount_summary
from audit.scorers import local_scorer
from audit.scoring import count_pending, score_bins
from audit.vocabulary import value_text
from binaudit.config import ConfigError
from jobs import (
    Categorical,
    Continuous,
    Integer,
    JobError,
    TrainingParams,
    TuningParams,
    get_backend,
    get_job,
    list_jobs,
    refresh_active,
)
from jobs.sagemaker.prices import paid_work_summary
from modeling.promotion import compare_with_active, promote
from modeling.registry import RegistryError, get_version
from modeling.settings import ARCHS, BY_NAME, GROUPS, JOB_SETTINGS, LOSSES, Setting

SELECTED, COMPARISON = "retrain_job", "retrain_comparison"
NOTICES = "retrain_notices"  # (kind, text) shown until dismissed: a started job's recounts, a promotion's outcome
SELECT_NEXT = "retrain_select_next"  # a job to select on the next run (the selectbox's own key is locked by then)
UP_FRONT = ("arch", "epochs", "image_size", "lr", "batch_size", "loss")  # the settings shown first; the rest folded

ctx = app_context()
active = current_model(ctx)
st.title("Retrain")


def default_data() -> tuple[str, str, str]:
    """The folders the active model was trained on, else the demo dataset (test: only a folder that exists)."""
    args = (active.config.get("resolved_args") or {}) if active else {}
    demo = ctx.workspace.root / "demo" / "dataset"
    test = args.get("test") or (str(demo / "test") if (demo / "test").is_dir() else "")
    return str(args.get("train") or demo / "train"), str(args.get("val") or demo / "val"), test


def setting_input(column, setting: Setting):
    """One training setting's input, keyed `setting-<name>`: a select box for a choice, else a number or text box."""
    key = f"setting-{setting.name}"
    if setting.choices:
        return column.selectbox(setting.label, setting.choices, index=setting.choices.index(setting.default),
                                key=key, help=setting.help)
    if setting.kind is str:
        return column.text_input(setting.label, setting.default, key=key, help=setting.help)
    # no bounds here: the job refuses a value train.py would, with train.py's message (TrainingParams.check)
    return column.number_input(setting.label, value=setting.default, step=1 if setting.kind is int else None,
                               format="%d" if setting.kind is int else "%g", key=key, help=setting.help,
                               placeholder="train.py decides" if setting.default is None else None)


def settings_ui() -> dict:
    """Every job setting: the UP_FRONT ones in two rows, the others folded away by group."""
    values = {}
    first = [BY_NAME[name] for name in UP_FRONT]
    for row in (first[:3], first[3:]):
        for column, setting in zip(st.columns(3), row, strict=False):
            values[setting.name] = setting_input(column, setting)
    with st.expander("More training settings"):
        for group in GROUPS:
            rest = [s for s in JOB_SETTINGS if s.group == group and s.name not in UP_FRONT]
            for start in range(0, len(rest), 4):
                for column, setting in zip(st.columns(4), rest[start:start + 4], strict=False):
                    values[setting.name] = setting_input(column, setting)
    return values


def with_recounts(params: TrainingParams) -> TrainingParams:
    """The analysts' recounts as the job's "recounts" folder, written by the audit core without any bin of the
    job's val or test (nor any bin the database knows to be in val or test)."""
    folder, report = recounts_for_training(ctx.engine, ctx.workspace, max_count=params.max_count,
                                           held_out=[params.val, params.test])
    summary = recount_summary(report)
    notice("info", f"Analysts' recounts: {summary['written']} added to the training data, {summary['left_out']} left "
                   f"out (bins in val or test), {summary['skipped']} skipped (photo missing)")
    return params.replace(recounts=str(folder))


def notice(kind: str, text: str) -> None:
    st.session_state.setdefault(NOTICES, []).append((kind, text))


def notices_ui() -> None:
    """Messages the analyst asked for, kept through the job list's refreshes until she dismisses them."""
    kept = st.session_state.get(NOTICES) or []
    for i, (kind, text) in enumerate(kept):
        row = st.columns([6, 1], vertical_alignment="center")
        getattr(row[0], kind)(text)
        row[1].button("Dismiss", key=f"notice-{i}-{hash(text)}", on_click=lambda i=i: kept.pop(i))


def training_form() -> None:
    train_dir, val_dir, test_dir = default_data()
    with st.form("retrain_form"):
        backend = st.selectbox("Backend", ["local", "sagemaker"], index=0 if ctx.settings.backend == "local" else 1)
        values = settings_ui()
        c = st.columns(3)
        train = c[0].text_input("Training data (folder or s3:// prefix)", train_dir, key="retrain_train")
        val = c[1].text_input("Validation data", val_dir, key="retrain_val")
        test = c[2].text_input("Test data (optional)", test_dir, key="retrain_test")
        include_recounts = st.checkbox("Include analysts' recounts", value=True,
                                       help="confirmed mismatches with a recounted quantity become training examples; "
                                            "never a bin of the validation or test data")
        with st.expander("Tune hyperparameters instead (several trials)"):
            tune = st.checkbox("Run a tuning job", key="tune_on")
            t = st.columns(4)
            lr_range = t[0].select_slider("Learning rate range", [1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3],
                                          value=(1e-3, 0.1))
            bs_range = t[1].slider("Batch size range", 8, 128, (16, 64))
            archs = t[2].multiselect("Architectures", ARCHS, default=[ARCHS[0]])
            max_jobs = t[3].number_input("Max trials", 1, 50, 3)
            u = st.columns(4)
            losses = u[0].multiselect("Losses", LOSSES, default=list(LOSSES))
            objective = u[1].selectbox("Objective", ["val_accuracy", "val_rmse"])
            parallel = u[2].selectbox("Trials at a time", [1, 2])
            strategy = u[3].selectbox("Strategy", ["bayesian", "random"])
        st.caption(f"With the sagemaker backend this starts {paid_work_summary(ctx.settings, 'training')} "
                   f"(a tuning job: that, for each trial).")
        submitted = st.form_submit_button("Start", type="primary", icon=":material/play_arrow:")
    if not submitted:
        return
    actor = current_reviewer() or "dashboard"
    try:
        params = TrainingParams(train=train, val=val, test=test, **values)
        params.check()
        if include_recounts:
            params = with_recounts(params)
        runner = get_backend(backend, settings=ctx.settings, workspace=ctx.workspace, engine=ctx.engine)
        if tune:
            space = {"lr": Continuous(lr_range[0], lr_range[1], log=True),
                     "batch_size": Integer(bs_range[0], bs_range[1]), "arch": Categorical(tuple(archs or ARCHS[:1])),
                     "loss": Categorical(tuple(losses or [params.loss]))}
            job = runner.start_tuning(TuningParams(base=params, search_space=space, objective=objective,
                                                   max_jobs=int(max_jobs), max_parallel_jobs=int(parallel),
                                                   strategy=strategy), actor=actor)
        else:
            job = runner.start_training(params, actor=actor)
    except (JobError, ConfigError, ValueError, OSError) as exc:
        st.error(f"Not started: {plain(exc)}")
        return
    st.session_state[SELECTED] = job.id
    notice("success", f"Started {job.kind} job {job.id}.")


STATUS_COLOURS = {"Completed": "green", "Failed": "red", "Stopped": "gray", "InProgress": "orange", "Pending": "gray"}


def coloured(status: str) -> str:
    """Markdown colour, not emoji: emoji fonts are missing on many analysts' machines."""
    return f":{STATUS_COLOURS.get(status, 'gray')}[**{status}**]"


@st.fragment(run_every="3s")
def jobs_ui() -> None:
    notices_ui()
    refresh_active(ctx.engine, settings=ctx.settings, workspace=ctx.workspace)
    # filtered in the query: transform jobs or tuning trials must not push training jobs off the list
    jobs = sorted((j for kind in ("training", "tuning") for j in list_jobs(ctx.engine, kind, 30, top_level=True)),
                  key=lambda j: (j.created_at, j.id), reverse=True)[:30]
    if not jobs:
        st.caption("No training jobs yet.")
        return
    st.dataframe([job_row(j) for j in jobs], hide_index=True, width="stretch")
    ids = [j.id for j in jobs]
    if st.session_state.get(SELECT_NEXT) in ids:
        st.session_state[SELECTED] = st.session_state.pop(SELECT_NEXT)
    if st.session_state.get(SELECTED) not in ids:
        st.session_state[SELECTED] = ids[0]
    st.selectbox("Job", ids, key=SELECTED)
    job_detail_ui(get_job(ctx.engine, st.session_state[SELECTED]))


def job_row(j) -> dict:
    """One line of the job list, every cell text: "–" where there is nothing yet, never None."""
    last = j.last_epoch or {}
    progress = j.progress()
    return {"job": j.id, "kind": j.kind, "backend": j.backend, "status": j.status,
            "epoch": f"{progress.epoch} of {progress.epochs}" if progress else value_text(last.get("epoch"), "{}"),
            "val accuracy": value_text(last.get("val_accuracy"), "{:.1%}"),
            "val RMSE": value_text(last.get("val_rmse"), "{:.3f}"),
            "started": value_text(j.started_at, "{:%Y-%m-%d %H:%M}"), "reason": j.failure_reason or ""}


def recounts_ui(job) -> None:
    """How many analysts' recounts the job had, used and left out (train.py's count, once it registered a model)."""
    folder = (job.params.get("training") or {}).get("recounts")
    if job.kind != "training":
        return
    if not folder:
        st.caption("Analysts' recounts: not included in this job.")
        return
    start = stored_recount_summary(folder)
    trained = get_version(ctx.engine, job.model_version_id).metrics.get("recounts") if job.model_version_id else None
    parts = []
    if start:
        parts.append(f"{start['written']} handed to the job, {start['left_out']} left out before it (bins the "
                     f"database knows are in val or test), {start['skipped']} skipped (photo missing)")
    if trained:
        parts.append(f"training used {trained.get('used', 0)} ({trained.get('replaced', 0)} replacing their photo in "
                     f"the training data), left out {trained.get('left_out', 0)} (found in its val or test folders)"
                     + (f" and {trained['beyond_range']} above the model's range" if trained.get("beyond_range")
                        else ""))
    elif job.is_active:
        parts.append("how many training used shows when the job ends")
    st.caption("Analysts' recounts: " + ("; ".join(parts) if parts else f"folder {plain(folder)}") + ".")


def job_detail_ui(job) -> None:
    head = st.columns([4, 1])
    head[0].markdown(f"**{job.id}** · {job.kind} · {job.backend} · {coloured(job.status)}")
    progress = job.progress()
    if progress and job.is_active:
        st.progress(min(1.0, progress.epoch / progress.epochs), text=progress.describe())
    elif progress:
        st.caption(progress.describe())
    recounts_ui(job)
    try:
        backend = get_backend(job.backend, settings=ctx.settings, workspace=ctx.workspace, engine=ctx.engine)
    except ConfigError as exc:  # a SageMaker job viewed where AWS is not configured: show what is stored
        st.warning(f"{job.backend} is not configured here, so this job cannot be refreshed or stopped: {plain(exc)}")
        backend = None
    if backend and job.is_active and head[1].button("Stop", icon=":material/stop:", key=f"stop-{job.id}"):
        backend.stop(job.id, actor=current_reviewer() or "dashboard")
        st.rerun(scope="fragment")
    if job.output.get("resumed_from"):
        epoch = job.output.get("resumed_after_epoch")
        st.caption(f"Resumed from {job.output['resumed_from']}" + (f" after epoch {epoch}" if epoch else "")
                   + ": the epochs before it are in that job's curves.")
    if job.failure_reason:
        st.error(plain(job.failure_reason))
    if backend:
        resume_ui(job, backend, head[1])
    if job.metrics:
        cols = st.columns(2)
        cols[0].plotly_chart(curves_figure(job.metrics, ["train_loss", "val_loss"], title="loss"),
                             key=f"loss-{job.id}", config={"displayModeBar": False})
        cols[1].plotly_chart(curves_figure(job.metrics, ["val_accuracy", "val_rmse"], title="validation"),
                             key=f"val-{job.id}", config={"displayModeBar": False})
    if job.kind == "tuning" and job.output.get("best_trial"):
        st.success(f"Best trial: {job.output['best_trial']}")
    with st.expander("Log (last 40 lines)", expanded=job.is_active):
        st.code((backend.log_tail(job.id, 40) if backend else "(log not available here)") or "(no output yet)",
                language=None)
    if job.status == "Completed" and job.model_version_id is not None:
        promotion_ui(job.model_version_id)


def resume_ui(job, backend, column) -> None:
    """A Failed or Stopped local training job with a checkpoint: continue it as a new job."""
    info = backend.resume_checkpoint(job)
    if info is None:
        return
    where = (f"after epoch {info['epoch']}" + (f" of {info['epochs']}" if info.get("epochs") else "")
             if info.get("epoch") else "from its last completed epoch")
    st.info(f"A checkpoint is kept: **Resume** continues this job {where}, as a new job with the same settings.")
    if not column.button("Resume", icon=":material/play_arrow:", key=f"resume-{job.id}"):
        return
    try:
        new = backend.resume_training(job.id, actor=current_reviewer() or "dashboard")
    except JobError as exc:
        st.error(f"Not resumed: {plain(exc)}")
        return
    st.session_state[SELECT_NEXT] = new.id  # the new job shows where it came from (a toast would not survive rerun)
    st.rerun()  # the whole page: a fragment-scoped rerun is refused when the click came in a full run


def promotion_ui(version_id: int) -> None:
    candidate = get_version(ctx.engine, version_id)
    if candidate.active:
        st.success(f"{candidate.name} is the active model.")
        return
    st.markdown(f"**{candidate.name}** is registered. Compare it with the active model on the same validation data:")
    val_default = (candidate.config.get("resolved_args") or {}).get("val", "")
    # a form: the folder typed and the click arrive together (a click that only commits a text box is lost)
    with st.form(f"cmp-form-{version_id}", border=False):
        cols = st.columns([4, 1])
        val_dir = cols[0].text_input("Validation folder", val_default, key=f"cmp-val-{version_id}")
        compare = cols[1].form_submit_button("Compare", key=f"cmp-{version_id}")
    cols = st.columns([3, 1, 1])
    metric = cols[0].selectbox("Decide by", ["val_accuracy", "val_rmse"], key=f"cmp-metric-{version_id}")
    if compare:
        with st.spinner("Scoring both models ..."):
            try:
                st.session_state[COMPARISON] = (version_id, compare_with_active(ctx.engine, version_id, val_dir or None))
            except (RegistryError, ValueError, OSError) as exc:  # a folder that is not a count dataset: say why
                st.error(f"Not compared: {plain(exc)}")
    stored = st.session_state.get(COMPARISON)
    comparison = stored[1] if stored and stored[0] == version_id else None
    if comparison is not None:
        c = st.columns(2)
        c[0].metric(f"{comparison.candidate.name} accuracy / RMSE",
                    f"{comparison.candidate.accuracy:.1%} / {comparison.candidate.rmse:.3f}")
        if comparison.active is not None and not comparison.active.error:
            c[1].metric(f"{comparison.active.name} (active) accuracy / RMSE",
                        f"{comparison.active.accuracy:.1%} / {comparison.active.rmse:.3f}")
        better = comparison.candidate_is_not_worse(metric)
        (st.info if better else st.warning)(comparison.describe(metric))
    force = cols[1].checkbox("Force", key=f"force-{version_id}", help="promote even if worse")
    if st.button("Promote", type="primary", key=f"promote-{version_id}", disabled=comparison is None and active is not None):
        # kept in the session: the job list refreshes every few seconds, and a refusal must stay readable
        try:
            result = promote(ctx.engine, version_id, metric=metric, force=force,
                             actor=current_reviewer() or "dashboard", comparison=comparison)
            notice("success" if result.promoted else "error",
                   f"{candidate.name}: " + ("Promoted: " if result.promoted else "Refused: ")
                   + plain(result.reason.removeprefix("refused: ")))
        except (RegistryError, ValueError, OSError) as exc:  # not scorable, or the active version kept changing
            notice("error", f"{candidate.name}: Not promoted: {plain(exc)}")
        st.rerun()  # the whole page: a fragment-scoped rerun is refused when the click came in a full run


def scoring_ui() -> None:
    """The queue and the browse page show the active model's predictions: score what it has not seen."""
    if active is None:
        return
    pending = count_pending(ctx.engine, active.id)
    if not pending:
        return
    st.warning(f"{pending:,} bin(s) have no prediction from the active model {active.name} yet.")
    if st.button(f"Score them with {active.name} now", icon=":material/bolt:"):
        bar = st.progress(0.0, text="scoring ...")
        report = score_bins(ctx.engine, ctx.workspace, active, local_scorer(active.model_dir, workers=0),
                            commit_every=64, progress=False,
                            on_commit=lambda done, total: bar.progress(min(1.0, done / max(total, 1)),
                                                                       text=f"scored {done:,} of {total:,}"))
        st.success(f"{report}")


@st.cache_data(ttl=600, show_spinner="Listing SageMaker endpoints ...")
def idle_endpoints(region: str, idle_hours: float) -> list[dict]:
    """The idle endpoints in the region (listed at most every 10 minutes: each listing asks AWS)."""
    backend = get_backend("sagemaker", settings=ctx.settings, workspace=ctx.workspace, engine=ctx.engine)
    return [{"name": e["name"], "instance_type": e["instance_type"], "last_invocation": e["last_invocation"]}
            for e in backend.list_endpoints() if e["idle"]]


def idle_endpoints_ui() -> None:
    if ctx.settings.backend != "sagemaker":
        return
    try:
        idle = idle_endpoints(ctx.settings.aws_region, ctx.settings.endpoint_idle_hours)
    except (ConfigError, JobError) as exc:
        st.caption(f"SageMaker endpoints could not be listed: {exc}")
        return
    for e in idle:
        last = f"last invoked {e['last_invocation']:%Y-%m-%d %H:%M} UTC" if e["last_invocation"] else "never invoked"
        st.warning(f"Endpoint {e['name']} ({e['instance_type']}) is idle ({last}; no invocation for "
                   f"{ctx.settings.endpoint_idle_hours:g} h) and bills every hour until it is deleted: "
                   f"python -m jobs deploy --backend sagemaker --delete --idle", icon=":material/payments:")


idle_endpoints_ui()
scoring_ui()
training_form()
st.subheader("Jobs")
jobs_ui()
