"""The mismatch queue: the most likely stock mismatches first; decide each in one or two clicks (or keys).

Dismiss (D) and Unsure (U) are one click; Confirm mismatch is the recount typed and Enter. The recount starts empty
on purpose: it becomes a training label, so it must be the analyst's count, never the model's guess accepted by a
click. The bin an analyst works on stays on screen until she acts (decides, skips, picks another, pages or filters):
if someone else decides it meanwhile, she is told who and what, and her typed recount and note stay, for her to
apply anyway or discard. Paging and filters narrow the queue (audit.queue.QueueFilter).
"""

from __future__ import annotations

import math

import streamlit as st

from app.ui.bin_view import bin_detail_ui
from app.ui.context import allowed_roots, app_context, require_model
from app.ui.identity import current_reviewer
from app.ui.keys import digits_go_to
from app.ui.text import plain
from audit.browse import bin_detail
from audit.export import csv_text
from audit.queue import NO_FILTER, QUEUE_CSV_COLUMNS, QueueFilter, queue_frame, queue_page, queue_size, queue_values
from audit.reviews import (
    CONFIRM,
    DECISION_CSV_COLUMNS,
    DISMISS,
    MAX_RECOUNT,
    UNSURE,
    Decision,
    ReviewConflict,
    ReviewError,
    decide,
    decisions_frame,
    undo,
    undo_window_left,
)
from audit.vocabulary import count_text, decision_label, legend_frame, probability_text

PAGE_SIZES = (10, 20, 50)
RECOUNT_LABEL = "Recounted quantity"
# CURRENT: the bin she works on (pinned: it stays until she acts); PICK: the list widget, which shows it only while
# it is on the page (a list whose options change under a selected value would lose the selection)
CURRENT, PICK, SEEN, FLASH, NOTE = "queue_pinned", "queue_current", "queue_seen", "queue_flash", "queue_note"
PENDING, LAST = "queue_pending", "queue_last"  # a decision refused by a conflict; one's own last decision (undo)
FILTER_KEYS = ("q_expected", "q_predicted", "q_prob", "q_hand", "q_page_size")

ctx = app_context()
st.title("Mismatch queue")
version = require_model(ctx, "the queue fills once a model has scored the bins.")
classes = version.classes
reviewer = current_reviewer()


def unpin() -> None:
    """The analyst moved on (paged, filtered, skipped): the next bin comes up, her typed note is cleared."""
    st.session_state.pop(CURRENT, None)
    st.session_state.pop(SEEN, None)
    st.session_state.pop(PENDING, None)
    st.session_state[NOTE] = ""


with st.sidebar:
    threshold = st.slider("Queue threshold (mismatch probability)", 0.0, 1.0,
                          float(ctx.settings.mismatch_threshold), 0.05, key="queue_threshold", on_change=unpin)
budget = ctx.settings.daily_review_budget or None


def filters_ui() -> tuple[QueueFilter, int]:
    expected_values, predicted_values = queue_values(ctx.engine, version.id, threshold=threshold)
    with st.expander("Filters", icon=":material/filter_list:"):
        a = st.columns([2, 2, 3, 2, 1])
        expected = a[0].multiselect("Record (expected count)", expected_values, key="q_expected", on_change=unpin,
                                    persist_state="session")
        predicted = a[1].multiselect("Predicted count", predicted_values, key="q_predicted", format_func=classes.label,
                                     on_change=unpin, persist_state="session")
        low, high = a[2].slider("Mismatch probability", 0.0, 1.0, (0.0, 1.0), 0.05, key="q_prob", on_change=unpin,
                                persist_state="session")
        hand = a[3].selectbox("Sent by hand", ["any", "only sent by hand", "only over the threshold"], key="q_hand",
                              on_change=unpin, persist_state="session")
        size = a[4].selectbox("Per page", PAGE_SIZES, index=1, key="q_page_size", on_change=unpin,
                              persist_state="session")
    sent = {"any": None, "only sent by hand": True, "only over the threshold": False}[hand]
    return QueueFilter(tuple(expected), tuple(predicted), low, high, sent), int(size)


where, page_size = filters_ui()
size = queue_size(ctx.engine, version.id, threshold=threshold, budget=budget, where=where)
pages = max(1, math.ceil(size / page_size))
head = st.columns([4, 1, 1])
head[0].caption(f"{size:,} bin(s) queued · model {version.name} · threshold {threshold:.0%}"
                + (f" · daily budget {budget}" if budget else "") + (" · filtered" if where != NO_FILTER else ""))
head[1].download_button("Queue CSV", data=lambda: csv_text(queue_frame(ctx.engine, version.id, threshold=threshold,
                                                                        budget=budget, where=where)),
                        file_name="binaudit-queue.csv", mime="text/csv", icon=":material/download:")
head[2].download_button("Decisions CSV", data=lambda: csv_text(decisions_frame(ctx.engine)),
                        file_name="binaudit-decisions.csv", mime="text/csv", icon=":material/download:")
with st.expander("What the CSV columns mean"):
    st.dataframe(legend_frame([*QUEUE_CSV_COLUMNS, *[c for c in DECISION_CSV_COLUMNS if c not in QUEUE_CSV_COLUMNS]]),
                 hide_index=True, width="stretch")

flash = st.session_state.pop(FLASH, None)
if flash:
    kind, message = flash
    (st.warning if kind == "conflict" else st.success)(message)

page = st.pagination(pages, key=f"queue-page-{hash(where)}-{page_size}", on_change=unpin) if pages > 1 else 1
rows = queue_page(ctx.engine, version.id, threshold=threshold, budget=budget, limit=page_size,
                  offset=(page - 1) * page_size, where=where)
ids = rows["bin_id"].tolist()
pinned = st.session_state.get(CURRENT)
if pinned is None and not ids:
    st.success("Nothing to review: the queue is empty." if where == NO_FILTER else
               "No queued bin matches these filters.", icon=":material/task_alt:")
    st.stop()
if pinned is None:
    pinned = st.session_state[CURRENT] = ids[0]
detail = bin_detail(ctx.engine, pinned, version.id)
if detail is None:  # the bin itself is gone (deleted by an import): nothing to keep
    unpin()
    st.rerun()
bin_row, prediction = detail["bin"], detail["prediction"]
if (st.session_state.get(SEEN) or {}).get("bin") != pinned:
    st.session_state[SEEN] = {"bin": pinned, "version": int(bin_row["row_version"])}
seen_version = st.session_state[SEEN]["version"]
changed = int(bin_row["row_version"]) != seen_version


def queue_label(bin_id: str) -> str:
    row = by_id.loc[bin_id]
    numbers = f"record {count_text(row.expected_count)} · predicted {count_text(row.predicted_count, classes)}"
    if row.beyond_range:
        return f"{plain(bin_id)} · {numbers} · sent by hand · beyond range"
    if row.mismatch_probability is None or row.mismatch_probability != row.mismatch_probability:
        return f"{plain(bin_id)} · {numbers} · sent by hand"
    return f"{plain(bin_id)} · {numbers} · {probability_text(row.mismatch_probability)}" + (
        " · sent by hand" if row.queued else "")


def typed_recount() -> int | None:
    value = st.session_state.get(f"recount-{pinned}")
    return None if value is None else int(value)


def record(decision: str, recount: int | None = None, against: int | None = None) -> None:
    """Button callback: store the decision against the row version this page showed (or `against`, the current one,
    when the analyst applies hers anyway after a conflict)."""
    note = st.session_state.get(NOTE, "")
    try:
        new_version = decide(ctx.engine, Decision(pinned, decision, reviewer or "", against or seen_version, recount,
                                                  note, version.id))
    except ReviewConflict:  # the page shows who decided what; her recount and note stay where they are
        st.session_state[PENDING] = {"bin": pinned, "decision": decision, "recount": recount}
        return
    except ReviewError as exc:
        st.session_state[FLASH] = ("conflict", f"Not recorded: {plain(exc)}")
        return
    st.session_state[FLASH] = ("ok", f"Bin {plain(pinned)}: {decision_label(decision)} recorded"
                                     + (f" (recount {recount})." if recount is not None else "."))
    st.session_state[LAST] = {"bin": pinned, "version": new_version}
    unpin()


def skip() -> None:
    """Next bin on this page without deciding this one."""
    following = ids[ids.index(pinned) + 1:] if pinned in ids else ids
    unpin()
    if following:
        st.session_state[CURRENT] = following[0]


def undo_last() -> None:
    last = st.session_state.pop(LAST, None)
    if not last:
        return
    try:
        undo(ctx.engine, last["bin"], reviewer=reviewer or "", expected_version=last["version"])
    except (ReviewConflict, ReviewError) as exc:
        st.session_state[FLASH] = ("conflict", f"Not undone: {plain(exc)}")
        return
    unpin()
    st.session_state[CURRENT] = last["bin"]
    st.session_state[FLASH] = ("ok", f"Bin {plain(last['bin'])}: your decision is undone; the bin is back.")


def picked() -> None:
    """Another bin chosen from the list: it is seen as it is now; the note was about the last one."""
    unpin()
    st.session_state[CURRENT] = st.session_state[PICK]


def conflict_ui() -> None:
    """Someone else changed the bin since she opened it: say who and what; her input stays until she chooses."""
    pending = st.session_state.get(PENDING) or {}
    if pending.get("bin") != pinned:
        pending = {}
    if bin_row["decision"]:
        at = f" at {bin_row['decided_at']:%H:%M:%S} UTC" if bin_row["decided_at"] else ""
        recount = f", recount {bin_row['recounted_count']}" if bin_row["recounted_count"] is not None else ""
        what = (f"Bin {plain(pinned)} was decided meanwhile: {plain(bin_row['decided_by'])} recorded "
                f"'{decision_label(bin_row['decision'])}'{recount}{at}.")
    else:
        what = f"Bin {plain(pinned)} changed since you opened it (sent to the queue again, or re-imported)."
    mine = ""
    if pending:
        mine = (f" Your '{decision_label(pending['decision'])}'"
                + (f" (recount {pending['recount']})" if pending.get("recount") is not None else "")
                + " was not recorded.")
    st.warning(what + mine + " Your recount and note are kept below: apply them anyway, or discard them.",
               icon=":material/group:")
    a, b, c = st.columns(3)
    if pending:
        a.button("Apply mine anyway", key="conflict-apply", type="primary", disabled=not reviewer,
                 on_click=record, args=(pending["decision"], pending.get("recount"), int(bin_row["row_version"])))
    b.button("Review it again", key="conflict-review", help="see the current state and decide afresh",
             on_click=lambda: (st.session_state.update({SEEN: {"bin": pinned, "version": int(bin_row["row_version"])}}),
                               st.session_state.pop(PENDING, None)))
    c.button("Discard mine, next bin", key="conflict-discard", on_click=skip)


by_id = rows.set_index("bin_id")
st.session_state[PICK] = pinned if pinned in ids else None
left, right = st.columns([1, 3])
with left:
    st.radio(f"Queue, page {page} of {pages} (most likely mismatch first)", ids, key=PICK,
             format_func=queue_label, on_change=picked)
with right:
    st.subheader(f"Bin {plain(pinned)}" + ("" if pinned in ids else " · no longer in this list"))
    if not reviewer:
        st.warning("Enter your name in the sidebar to record decisions.", icon=":material/person:")
    if changed:
        conflict_ui()
    last = st.session_state.get(LAST)
    if last and reviewer and undo_window_left(ctx.engine, last["bin"], reviewer, last["version"]):
        st.button(f"Undo my decision on bin {plain(last['bin'])}", key="btn-undo", icon=":material/undo:",
                  on_click=undo_last, shortcut="Z", help="within a few minutes of deciding, while nobody changed it")
    blocked = not reviewer or changed
    st.text_input("Note (optional)", key=NOTE, placeholder="what you saw")
    a, b, c, d = st.columns([4, 3, 2, 2])  # wide enough for "Dismiss: record is right D" and "Next N"
    a.button("Dismiss: record is right", on_click=record, args=(DISMISS,), disabled=blocked,
             icon=":material/check:", width="stretch", key="btn-dismiss", shortcut="D")
    predicted = count_text(prediction["predicted_count"], classes) if prediction else "–"
    with b.form("confirm", border=False, enter_to_submit=True):
        st.number_input(RECOUNT_LABEL, min_value=0, max_value=MAX_RECOUNT, step=1, value=None,
                        key=f"recount-{pinned}", placeholder=f"count the items (model says {predicted})")
        st.form_submit_button("Confirm mismatch", type="primary", disabled=blocked, icon=":material/close:",
                              on_click=lambda: record(CONFIRM, typed_recount()), width="stretch")
    digits_go_to(RECOUNT_LABEL)  # type a count, Enter: no click into the box first
    c.button("Unsure", on_click=record, args=(UNSURE,), disabled=blocked, icon=":material/help:",
             width="stretch", key="btn-unsure", shortcut="U")
    d.button("Next", on_click=skip, icon=":material/skip_next:", width="stretch", key="btn-next", shortcut="N",
             help="the next bin, without deciding this one")
    bin_detail_ui(ctx, detail, roots=allowed_roots(ctx), key="queue-detail", classes=classes, threshold=threshold)
