"""Browse bins: filters, a paginated thumbnail grid or table, and one bin in detail."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app.ui.bin_view import bin_detail_ui
from app.ui.context import allowed_roots, app_context, current_model
from app.ui.identity import current_reviewer
from app.ui.images import photo_bytes
from app.ui.text import plain
from audit.browse import BinFilter, bin_detail, browse_count, browse_page, filter_values
from audit.reviews import DECISIONS, ReviewConflict, send_to_queue
from audit.vocabulary import COLUMNS, count_text, decision_label, screen_frame
from modeling.counts import CountClasses

PAGE_SIZE = 24
DETAIL = "browse_detail"

ctx = app_context()
version = current_model(ctx)
classes = version.classes if version else CountClasses(5)
max_count = classes.max_count
roots = allowed_roots(ctx)
st.title("Browse bins")


KEEP = {"persist_state": "session"}  # filters stay as set while the analyst visits other pages


def filters_ui() -> tuple[BinFilter, str, str]:
    split_values, expected_values = filter_values(ctx.engine)
    with st.expander("Filters", expanded=True, icon=":material/filter_list:"):
        a = st.columns(4 if split_values else 3)
        # imported folders and uploads have no split: the filter shows only where some bin has one
        splits = a.pop(0).multiselect("Split", split_values, key="f_split", **KEEP) if split_values else []
        expected = a[0].multiselect("Record (expected count)", expected_values, key="f_expected", **KEEP)
        predicted = a[1].multiselect("Predicted count", list(classes.class_to_count), key="f_predicted",
                                     format_func=classes.label, **KEEP)
        decisions = a[2].multiselect("Decision", ["none", *DECISIONS], key="f_decision", **KEEP,
                                     format_func=lambda d: decision_label(None if d == "none" else d))
        b = st.columns([3, 2, 2, 3, 2])
        text = b[0].text_input("Search bin id, item names, ASINs", key="f_text", **KEEP)
        mismatch_only = b[1].toggle("Predicted count differs only", key="f_mismatch", **KEEP,
                                    help=COLUMNS["predicted_count_differs"].meaning)
        beyond_only = b[2].toggle("Beyond range only", key="f_beyond", disabled=classes.open_top, **KEEP,
                                  help=f"the record is above the model's top count ({max_count}): it cannot check "
                                       f"these bins, so they have no mismatch probability" if not classes.open_top else
                                       f"the active model's top class ({classes.labels[-1]}) is open: it checks every "
                                       f"bin, none is beyond its range")
        low, high = b[3].slider("Mismatch probability", 0.0, 1.0, (0.0, 1.0), step=0.05, key="f_prob", **KEEP)
        order = b[4].selectbox("Order", ["bin_id", "mismatch_probability"], key="f_order", **KEEP,
                               format_func=lambda o: "bin id" if o == "bin_id" else "mismatch probability")
    view = st.segmented_control("View", ["Grid", "Table"], default="Grid", key="f_view", label_visibility="collapsed",
                                **KEEP)
    f = BinFilter(splits=tuple(splits), expected=tuple(expected), predicted=tuple(predicted),
                  mismatch_only=mismatch_only, beyond_range_only=beyond_only and not classes.open_top,
                  prob_min=low, prob_max=high, decisions=tuple(decisions), text=text)
    return f, order, view or "Grid"


def caption(row) -> str:
    # pd.isna: a column can hold None (all rows unknown) or NaN (mixed), and None != None is False
    expected = count_text(row.expected_count)
    if pd.isna(row.predicted_count):
        return f"{plain(row.bin_id)} · expected {expected} · not scored"
    p = "" if pd.isna(row.mismatch_probability) else f" · {row.mismatch_probability:.0%}"
    if pd.notna(row.beyond_range) and row.beyond_range:
        p = " · beyond range"
    return f"{plain(row.bin_id)} · expected {expected} · predicted {classes.label(int(row.predicted_count))}{p}"


def decision_caption(row) -> str | None:
    """The bin's decision on its grid card ("Confirmed mismatch · recount 4"), or None when undecided."""
    if pd.isna(row.decision) or row.decision is None:
        return None
    recount = f" · recount {count_text(row.recounted_count)}" if pd.notna(row.recounted_count) else ""
    return f"{decision_label(row.decision)}{recount}"


def detail_ui(bin_id: str) -> None:
    detail = bin_detail(ctx.engine, bin_id, version.id if version else None)
    if detail is None:
        st.session_state.pop(DETAIL, None)
        return
    with st.container(border=True):
        head = st.columns([6, 2, 1])
        head[0].subheader(f"Bin {plain(bin_id)}")
        if head[1].button("Send to review queue", key="detail-queue", icon=":material/fact_check:"):
            try:
                send_to_queue(ctx.engine, bin_id, actor=current_reviewer() or "dashboard",
                              expected_version=detail["bin"]["row_version"])
                st.toast(f"Bin {plain(bin_id)} is in the review queue." if detail.get("prediction") else
                         f"Bin {plain(bin_id)} is marked for review: it enters the queue once the active model has scored it "
                         "(Retrain page, or python -m audit score).")
            except ReviewConflict as exc:
                st.warning(plain(exc))
        if head[2].button("Close", key="detail-close"):
            st.session_state.pop(DETAIL, None)
            st.rerun()
        bin_detail_ui(ctx, detail, roots=roots, key="browse-detail", classes=classes)


f, order, view = filters_ui()
if order == "mismatch_probability":
    st.caption("Ordered by mismatch probability: bins the active model has not scored are not listed.")
total = browse_count(ctx.engine, version.id if version else None, f, order=order)
pages = max(1, math.ceil(total / PAGE_SIZE))
if st.session_state.get(DETAIL):
    detail_ui(st.session_state[DETAIL])

st.caption(f"{total:,} bin(s)")
page = st.pagination(pages, key=f"page-{hash((f, order))}") if pages > 1 else 1
rows = browse_page(ctx.engine, version.id if version else None, f, order=order, limit=PAGE_SIZE,
                   offset=(page - 1) * PAGE_SIZE)

if rows.empty:
    st.info("No bins match these filters.")
elif view == "Table":
    # the open class reads "6+", never 6; decisions in words; "–" for unknown
    shown = screen_frame(rows.drop(columns=["image_uri", "row_version"])
                         .rename(columns={"argmax_differs": "predicted_count_differs"}), classes)
    event = st.dataframe(
        shown, hide_index=True, width="stretch", key="browse-table",
        on_select="rerun", selection_mode="single-row",
        column_config={"Mismatch probability": st.column_config.ProgressColumn(
            "Mismatch probability", format="percent", min_value=0, max_value=1)},
    )
    if event.selection.rows:
        st.session_state[DETAIL] = rows.iloc[event.selection.rows[0]]["bin_id"]
        st.rerun()
else:
    with st.grid(columns=6, min_column_width=150, gap="small"):
        for row in rows.itertuples(index=False):
            with st.container(border=True):
                data, problem = photo_bytes(ctx, row.image_uri, roots=roots)
                if data is None:
                    st.caption(f":material/broken_image: {plain(problem)}")
                else:
                    st.image(data, width="stretch")
                st.caption(caption(row))
                if decided := decision_caption(row):
                    st.badge(decided, color="blue" if row.decision != "confirm_mismatch" else "red")
                if st.button("Details", key=f"open-{row.bin_id}", width="stretch"):
                    st.session_state[DETAIL] = row.bin_id
                    st.rerun()
