"""Overview: how many bins are audited, how often the photo agrees with the record, what waits for review."""

from __future__ import annotations

import streamlit as st

from app.ui.context import app_context, current_model
from app.ui.model_facts import real_photo_check, validation_label
from audit.overview import decisions_per_analyst_per_day, overview, queue_precision
from audit.queue import queue_page
from audit.reviews import decisions_frame
from audit.vocabulary import COLUMNS, screen_frame
from modeling.registry import list_versions

ctx = app_context()
version = current_model(ctx)
threshold = ctx.settings.mismatch_threshold
budget = ctx.settings.daily_review_budget or None

st.title("BinAudit")
st.caption("Item counts predicted from bin photos, checked against the inventory record.")

o = overview(ctx.engine, version.id if version else None, threshold=threshold, budget=budget)
# two rows of three: in six columns of a laptop-wide page the labels were cut off
cols = [*st.columns(3), *st.columns(3)]
cols[0].metric("Bins audited", f"{o.scored:,}", help=f"of {o.bins:,} bins imported")
cols[1].metric("Predicted count equals record", f"{o.agree_share:.1%}" if o.agree_share is not None else "–",
               help="Share of the scored bins the model can check whose most likely count equals the record (an open "
                    "model's top class, e.g. 6+, equals any record above 5). The other ones' predicted count differs: "
                    "a separate fact from being queued, which goes by the mismatch probability.")
cols[2].metric("Queued bins", f"{o.open_queue:,}", help=f"{COLUMNS['queued'].meaning} (threshold "
               f"{threshold:.0%}{f', daily budget {budget}' if budget else ''})")
cols[3].metric("Beyond the model's range", f"{o.beyond_range:,}",
               help="Scored bins whose record is above the active model's top count: a closed model (classes "
                    "0–N) cannot check them, so they get no mismatch probability and are not queued (Browse: "
                    "*Beyond range only*). An open model (a dataset built with --top-class open) checks every bin.")
cols[4].metric("Decisions this week", f"{o.decisions_week:,}")
cols[5].metric("Confirmed mismatches", f"{o.confirmed_mismatches:,}")

st.subheader("Active model")
if version is None:
    st.info("No model is active yet. Train one on the **Retrain** page (or `python -m jobs train`).")
else:
    acc = f"{version.val_accuracy:.1%}" if version.val_accuracy is not None else "–"
    rmse = f"{version.val_rmse:.3f}" if version.val_rmse is not None else "–"
    real = real_photo_check(version)
    c = st.columns(5 if real else 4)
    c[0].metric("Version", version.name)
    c[1].metric("Architecture", f"{version.arch} · {version.image_size}px")
    c[2].metric(validation_label(version), acc, help="on held-out bins drawn like its training data")
    c[3].metric(validation_label(version, "Validation RMSE"), rmse, help="root mean squared error over item counts")
    if real:
        c[4].metric("Accuracy on real ABID photos", f"{real.accuracy:.1%}", help=real.sentence())
        st.caption(f"The demo model trained on synthetic bins only: its validation figures are on synthetic bins. "
                   f"On real photos it reached {real.sentence()}.")
    if o.score_problems:
        st.warning(f"{o.score_problems} photo(s) could not be scored; see the Browse page's detail view.")

st.subheader("Top of the review queue")
if version is not None:
    top = queue_page(ctx.engine, version.id, threshold=threshold, budget=budget, limit=5)
    if top.empty:
        st.success("The review queue is empty.")
    else:
        st.dataframe(
            screen_frame(top[["bin_id", "expected_count", "predicted_count", "mismatch_probability"]],
                         version.classes),
            hide_index=True, width="stretch",
            column_config={"Mismatch probability": st.column_config.ProgressColumn(
                "Mismatch probability", format="percent", min_value=0, max_value=1)},
        )
        st.page_link("app_pages/queue.py", label="Open the review queue", icon=":material/fact_check:")

st.subheader("Is the loop working?")
decisions = decisions_frame(ctx.engine)
left, right = st.columns(2)
with left:
    st.markdown("**Queue precision per model version**")
    precision = queue_precision(decisions, {v.id: v.name for v in list_versions(ctx.engine)})
    if precision.empty:
        st.caption("No decisions made in a model's queue yet.")
    else:
        st.dataframe(precision.drop(columns=["model_version_id"]), hide_index=True, width="stretch",
                     column_config={"precision": st.column_config.NumberColumn(
                         "precision", format="percent", help="confirmed mismatches / decided bins, each bin's latest "
                                                             "decision in that version's queue")})
with right:
    st.markdown("**Decisions per analyst per day**")
    per_day = decisions_per_analyst_per_day(decisions)
    if per_day.empty:
        st.caption("No decisions yet.")
    else:
        st.dataframe(per_day.head(60), hide_index=True, width="stretch")
