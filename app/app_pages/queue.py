"""The mismatch queue: the most likely stock mismatches first; decide each in one or two clicks.

Dismiss and Unsure are one click; Confirm mismatch is the recount typed and Enter (or the button). The
recount starts empty on purpose: it becomes a training label, so it must be the analyst's count, never the
model's guess accepted by a click. A decided bin leaves the queue; if another analyst decided it first,
nothing is overwritten and the page says who did.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui.bin_view import bin_detail_ui
from app.ui.context import allowed_roots, app_context, require_model
from app.ui.identity import current_reviewer
from app.ui.text import plain
from audit.browse import bin_detail
from audit.export import csv_text
from audit.queue import queue_frame, queue_page, queue_size
from audit.reviews import (
    CONFIRM,
    DISMISS,
    MAX_RECOUNT,
    UNSURE,
    Decision,
    ReviewConflict,
    ReviewError,
    decide,
    decisions_frame,
)

PAGE_SIZE = 20
CURRENT, FLASH, NOTE = "queue_current", "queue_flash", "queue_note"

ctx = app_context()
st.title("Mismatch queue")
version = require_model(ctx, "the queue fills once a model has scored the bins.")
classes = version.classes

with st.sidebar:
    threshold = st.slider("Queue threshold (mismatch probability)", 0.0, 1.0,
                          float(ctx.settings.mismatch_threshold), 0.05, key="queue_threshold")
budget = ctx.settings.daily_review_budget or None
size = queue_size(ctx.engine, version.id, threshold=threshold, budget=budget)
rows = queue_page(ctx.engine, version.id, threshold=threshold, budget=budget, limit=PAGE_SIZE)

head = st.columns([4, 1, 1])
head[0].caption(f"{size:,} bin(s) to review · model {version.name} · threshold {threshold:.0%}"
                + (f" · daily budget {budget}" if budget else ""))
head[1].download_button("Queue CSV", data=lambda: csv_text(queue_frame(ctx.engine, version.id, threshold=threshold,
                                                                        budget=budget)),
                        file_name="binaudit-queue.csv", mime="text/csv", icon=":material/download:")
head[2].download_button("Decisions CSV", data=lambda: csv_text(decisions_frame(ctx.engine)),
                        file_name="binaudit-decisions.csv", mime="text/csv", icon=":material/download:")

flash = st.session_state.pop(FLASH, None)
if flash:
    kind, message = flash
    (st.warning if kind == "conflict" else st.success)(message)

if rows.empty:
    st.success("Nothing to review: the queue is empty.", icon=":material/task_alt:")
    st.stop()

ids = rows["bin_id"].tolist()
if st.session_state.get(CURRENT) not in ids:
    st.session_state[CURRENT] = ids[0]
by_id = rows.set_index("bin_id")
current = by_id.loc[st.session_state[CURRENT]]
reviewer = current_reviewer()


def queue_label(bin_id: str, probability, beyond_range) -> str:
    if pd.isna(probability):
        return f"{plain(bin_id)} · sent by hand" + (" · beyond range" if beyond_range else "")
    return f"{plain(bin_id)} · {probability:.0%}"


def typed_recount(key: str) -> int | None:
    value = st.session_state.get(key)
    return None if value is None else int(value)


def record(decision: str, recount: int | None = None) -> None:
    """Button callback: store the decision against the row version this page showed."""
    try:
        decide(ctx.engine, Decision(str(current.name), decision, reviewer or "", int(current.row_version), recount,
                                    st.session_state.get(NOTE, ""), version.id))
        st.session_state[FLASH] = ("ok", f"Bin {plain(current.name)}: {decision.replace('_', ' ')} recorded.")
        st.session_state[NOTE] = ""
        st.session_state.pop(CURRENT, None)  # the next bin in rank order comes up
    except ReviewConflict as exc:
        st.session_state[FLASH] = ("conflict", plain(exc))
        st.session_state[NOTE] = ""  # the note was about this bin; the next one starts blank
        st.session_state.pop(CURRENT, None)
    except ReviewError as exc:
        st.session_state[FLASH] = ("conflict", f"Not recorded: {plain(exc)}")


left, right = st.columns([1, 3])
with left:
    st.radio("Queue (most likely mismatch first)", ids, key=CURRENT,
             format_func=lambda b: queue_label(b, by_id.loc[b, "mismatch_probability"], by_id.loc[b, "beyond_range"]))
with right:
    if not reviewer:
        st.warning("Enter your name in the sidebar to record decisions.", icon=":material/person:")
    st.text_input("Note (optional)", key=NOTE, placeholder="what you saw")
    a, b, c = st.columns([2, 3, 2])
    a.button("Dismiss: record is right", on_click=record, args=(DISMISS,), disabled=not reviewer,
             icon=":material/check:", width="stretch", key="btn-dismiss")
    with b.form("confirm", border=False, enter_to_submit=True):
        st.number_input("Recounted quantity", min_value=0, max_value=MAX_RECOUNT, step=1, value=None,
                        key=f"recount-{current.name}",
                        placeholder=f"count the items (model says {classes.label(int(current.predicted_count))})")
        st.form_submit_button("Confirm mismatch", type="primary", disabled=not reviewer, icon=":material/close:",
                              on_click=lambda: record(CONFIRM, typed_recount(f"recount-{current.name}")),
                              width="stretch")
    c.button("Unsure", on_click=record, args=(UNSURE,), disabled=not reviewer, icon=":material/help:",
             width="stretch", key="btn-unsure")
    detail = bin_detail(ctx.engine, str(current.name), version.id)
    if detail is not None:
        bin_detail_ui(ctx, detail, roots=allowed_roots(ctx), key="queue-detail", classes=classes)
