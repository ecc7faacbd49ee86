"""Evaluation: how good a model version is, measured the way the field does, and two versions side by side."""

from __future__ import annotations

import streamlit as st

from app.ui.charts import confusion_figure, curves_figure, per_class_frame
from app.ui.context import app_context
from app.ui.model_facts import data_source_kind, real_photo_check, shows_published_reference, version_metrics
from audit.reference import ABID_REFERENCES, ABID_RESNET34_SCRATCH
from audit.vocabulary import value_text
from modeling.registry import ModelVersion, list_versions

ctx = app_context()
st.title("Evaluation")
versions = list_versions(ctx.engine)
if not versions:
    st.info("No model versions yet: train one on the Retrain page.")
    st.stop()

by_name = {v.name: v for v in versions}
label = {v.name: f"{v.name}{' (active)' if v.active else ''} · {v.arch} · {v.image_size}px" for v in versions}
active = next((v.name for v in versions if v.active), versions[0].name)
top = st.columns(2)  # wide enough for a whole label ("v12 (active) · resnet18 · 96px")
chosen = top[0].selectbox("Model version", list(by_name), index=list(by_name).index(active),
                          format_func=label.get, key="eval_version")
other = top[1].selectbox("Compare with", ["–", *[n for n in by_name if n != chosen]], key="eval_compare",
                         format_func=lambda n: "nothing" if n == "–" else label[n])
options = st.columns([2, 2, 4])
decoding = options[0].segmented_control("Decoding", ["argmax", "expected"], default="argmax", key="eval_decoding",
                                        help="argmax maximises accuracy; expected (rounded mean) minimises RMSE")
normalise = options[1].toggle("Row-normalised matrix", value=True, key="eval_normalise")
decoding = decoding or "argmax"


def version_ui(version: ModelVersion, key: str) -> None:
    metrics = version_metrics(version)
    final = metrics.get("final") or {}
    result = (final.get("decodings") or {}).get(decoding, final)
    if not result:
        st.warning(f"{version.name} has no metrics.json with a final evaluation.")
        return
    kind = data_source_kind(version)
    classes = version.classes
    # the published figures are over exact counts 0..5 of bins with at most 5 items: only such a model compares
    abid = kind == "abid" and shows_published_reference(version)
    st.subheader(version.name)
    st.caption(f"{result.get('n', '?')} {final.get('split', 'validation')} images · data: {kind} · classes "
               f"{', '.join(classes.labels)} · best epoch {metrics.get('best_epoch', '?')} by "
               f"{metrics.get('best_metric', '?')}")
    if classes.open_top:
        st.caption(f"Accuracy is over the classes; RMSE and MAE are over counts truncated at {classes.max_count + 1}: "
                   f"the open class {classes.labels[-1]} counts as {classes.max_count + 1}, and so does a bin holding "
                   f"more (a bin of 9 predicted {classes.labels[-1]} is a hit). The expected decoding rounds the mean "
                   f"of that truncated count.")
    real = real_photo_check(version)
    if real:
        st.info(f"These figures are on synthetic validation bins, drawn like the ones this demo model trained on. "
                f"On real photos it reached {real.sentence()}.")
    m = st.columns(4)
    ref = ABID_RESNET34_SCRATCH
    acc, rmse = result.get("accuracy"), result.get("rmse")
    m[0].metric("Accuracy", value_text(acc, "{:.1%}"),
                delta=f"{acc - ref['accuracy']:+.1%} vs ABID ref." if abid and acc is not None else None)
    m[1].metric("RMSE", value_text(rmse, "{:.3f}"),
                delta=f"{rmse - ref['rmse']:+.3f} vs ABID ref." if abid and rmse is not None else None,
                delta_color="inverse")
    m[2].metric("MAE", value_text(result.get("mae"), "{:.3f}"))
    m[3].metric("Within one", value_text(result.get("within_one"), "{:.1%}"))
    # metrics.json from an older or outside training run may lack the matrix or the table: show what there is
    if result.get("confusion_matrix") is not None:
        labels = result.get("labels") or final.get("labels") or metrics.get("class_labels")
        st.plotly_chart(confusion_figure(result["confusion_matrix"], normalise=normalise, labels=labels), key=f"{key}-cm",
                        config={"displayModeBar": False})
    if result.get("per_class") is not None:
        st.markdown("**Per count** (the abid_challenge table)")
        st.dataframe(per_class_frame(result["per_class"], ref["per_class_accuracy"] if abid else None),
                     hide_index=True, width="stretch",
                     column_config={"accuracy": st.column_config.NumberColumn(format="percent"),
                                    "ABID reference accuracy": st.column_config.NumberColumn(format="percent"),
                                    "rmse": st.column_config.NumberColumn(format="%.3f")})
    if result.get("confusion_matrix") is None or result.get("per_class") is None:
        st.caption("This version's metrics.json has no confusion matrix or per-count table.")
    history = metrics.get("history") or []
    if history:
        st.markdown("**Training curves**")
        st.plotly_chart(curves_figure(history, ["train_loss", "val_loss"], title="loss"), key=f"{key}-loss",
                        config={"displayModeBar": False})
        reference = {"ABID ref. accuracy": ref["accuracy"]} if abid else None
        st.plotly_chart(curves_figure(history, ["train_accuracy", "val_accuracy"], title="accuracy",
                                      reference=reference), key=f"{key}-acc", config={"displayModeBar": False})
        reference = {"ABID ref. RMSE": ref["rmse"]} if abid else None
        st.plotly_chart(curves_figure(history, ["val_rmse", "val_mae"], title="error over counts", reference=reference),
                        key=f"{key}-rmse", config={"displayModeBar": False})


if other == "–":
    version_ui(by_name[chosen], "a")
else:
    left, right = st.columns(2)
    with left:
        version_ui(by_name[chosen], "a")
    with right:
        version_ui(by_name[other], "b")

if data_source_kind(by_name[chosen]) == "abid" and shows_published_reference(by_name[chosen]):
    with st.expander("Published ABID results (counts 0–5, official validation split, 36,032 images)"):
        st.dataframe([{"result": r["label"], "accuracy": r["accuracy"], "RMSE": r["rmse"]} for r in ABID_REFERENCES],
                     hide_index=True, width="stretch")
else:
    st.caption("The published ABID reference (55.67% / RMSE 0.930) is shown only beside a closed 0–5 model trained "
               "and evaluated on ABID photos with at most 5 items (`data_tools build --top-class drop`): an open "
               "model's figures include bins the reference left out.")
