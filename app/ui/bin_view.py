"""One bin shown in full: photo, the record's items, predicted vs expected, probabilities, history.

Used by the Browse page's detail view and the review queue.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui.charts import probability_chart
from app.ui.context import AppContext, current_model
from app.ui.evidence_view import evidence_ui
from app.ui.images import DETAIL_SIDE, show_photo
from app.ui.text import plain
from audit.reviews import history
from audit.vocabulary import decision_label, flag_text, screen_frame
from modeling.counts import CountClasses

ITEM_COLUMNS = {"name": "item", "asin": "ASIN", "quantity": "qty", "length_in": "length (in)",
                "width_in": "width (in)", "height_in": "height (in)", "weight_lb": "weight (lb)"}


def items_frame(items: list[dict] | None) -> pd.DataFrame:
    frame = pd.DataFrame(items or [], columns=list(ITEM_COLUMNS))
    return frame.rename(columns=ITEM_COLUMNS)


def beyond_range_text(expected: int, classes: CountClasses) -> str:
    """Why a bin beyond a closed model's range has no mismatch probability."""
    return (f"The record says {expected} items, beyond this model's range (0–{classes.max_count}: it has no class for "
            f"more than {classes.max_count} items). Whatever the photo shows, the model cannot say whether it holds "
            f"{expected}, so the bin gets no mismatch probability and enters the review queue only when sent by hand. "
            f"A model trained on an open dataset (`data_tools build --top-class open`) checks such bins.")


def counts_ui(expected: int | None, prediction: dict | None, threshold: float, classes: CountClasses) -> None:
    cols = st.columns(4)
    cols[0].metric("Expected", expected if expected is not None else "–", help="the inventory record's count")
    if prediction is None:
        cols[1].metric("Predicted", "–")
        st.caption("Not scored by the active model yet.")
        return
    cols[1].metric("Predicted", classes.label(prediction["predicted_count"]),
                   help=f"most likely count; the count minimising squared error is "
                        f"{classes.label(prediction['decoded_count'])}")
    p = prediction.get("mismatch_probability")
    if prediction.get("beyond_range"):
        cols[2].metric("Mismatch probability", "–", help="beyond the model's range")
        with cols[3]:
            st.badge("beyond range", icon=":material/block:", color="gray")
        st.info(beyond_range_text(int(expected), classes), icon=":material/info:")
    elif p is not None:
        cols[2].metric("Mismatch probability", f"{p:.0%}",
                       help="probability that the bin does not hold the expected count" + (
                           f" (a record above {classes.max_count}: that it does not hold {classes.labels[-1]})"
                           if classes.open_top else ""))
        if p >= threshold:
            with cols[3]:
                st.badge("queued", icon=":material/fact_check:", color="red")
        st.caption(flag_text(expected, classes.label(prediction["predicted_count"]), p, threshold))


def bin_detail_ui(ctx: AppContext, detail: dict, *, roots: list[str], key: str, classes: CountClasses,
                  threshold: float | None = None) -> None:
    """The bin, with counts shown as `classes` (the active model's) label them; `threshold`: the queue's (default:
    the configured one)."""
    b, prediction = detail["bin"], detail["prediction"]
    threshold = ctx.settings.mismatch_threshold if threshold is None else threshold
    counts_ui(b["expected_count"], prediction, threshold, classes)
    left, right = st.columns([3, 2])
    with left:
        show_photo(ctx, b["image_uri"], side=DETAIL_SIDE, caption=f"bin {plain(b['id'])}", roots=roots)
        model = current_model(ctx)
        if prediction is not None and model is not None and model.id == prediction["model_version_id"]:
            evidence_ui(ctx, str(model.model_dir), b["image_uri"], predicted_class=int(prediction["predicted_count"]),
                        expected=b["expected_count"], key=key)
    with right:
        if prediction is not None:
            st.plotly_chart(probability_chart(prediction["probabilities"], expected=b["expected_count"],
                                              labels=classes.labels if len(prediction["probabilities"]) ==
                                              classes.num_classes else None),
                            key=f"{key}-probs", config={"displayModeBar": False})
        if b.get("decision"):
            st.caption(f"Latest decision: **{decision_label(b['decision'])}** by {plain(b['decided_by'])} at "
                       f"{b['decided_at']:%Y-%m-%d %H:%M} UTC"
                       + (f", recounted {b['recounted_count']}" if b.get("recounted_count") is not None else ""))
    st.markdown("**Items in the record**")
    items = items_frame(b["items"])
    if items.empty:
        st.caption("The record lists no items (an empty bin)." if b["expected_count"] == 0 else "No item details.")
    else:
        st.dataframe(items, hide_index=True, width="stretch")
    past = history(ctx.engine, b["id"])
    if not past.empty:
        with st.expander(f"Decision history ({len(past)})"):
            st.dataframe(screen_frame(past), hide_index=True, width="stretch")
    for problem in detail["problems"]:
        st.warning(f"{plain(problem['stage'])}: {plain(problem['reason'])}")
