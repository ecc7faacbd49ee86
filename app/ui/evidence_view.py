"""The bin detail's "where the model looked": Grad-CAM overlays (audit.evidence) for the predicted count and for the
record's count, side by side. Computed on demand (a toggle), cached per model, photo and count."""

from __future__ import annotations

import io
import os

import streamlit as st
from PIL import Image

from app.ui.context import AppContext, allowed_roots
from app.ui.text import plain
from audit.evidence import Explainer
from audit.photos import local_photo
from binaudit.workspace import UnsafePath
from modeling.preprocessing import ImageDecodeError


@st.cache_resource(show_spinner=False, max_entries=3)
def _explainer(model_dir: str) -> Explainer:
    return Explainer.load(model_dir)


@st.cache_data(show_spinner=False, max_entries=200)
def _overlays(model_dir: str, path: str, mtime: float, indices: tuple[int, ...]) -> list[tuple[str, float, bytes]]:
    out = []
    for m in _explainer(model_dir).maps(path, list(indices)):
        buf = io.BytesIO()
        Image.fromarray(m.overlay).save(buf, "JPEG", quality=85)
        out.append((m.label, m.probability, buf.getvalue()))
    return out


def evidence_ui(ctx: AppContext, model_dir: str, image_uri: str, *, predicted_class: int, expected: int | None,
                key: str) -> None:
    if not st.toggle("Show where the model looked (Grad-CAM)", key=f"{key}-evidence",
                     help="bright regions raised the model's score for that count"):
        return
    explainer = _explainer(model_dir)
    record_class = explainer.record_class(expected)
    indices = (predicted_class,) if record_class in (None, predicted_class) else (predicted_class, record_class)
    try:
        path = local_photo(image_uri, ctx.workspace, allowed_roots(ctx))
        with st.spinner("Computing the activation maps ..."):
            maps = _overlays(model_dir, str(path), os.path.getmtime(path), indices)
    except (UnsafePath, OSError, ImageDecodeError) as exc:
        st.warning(f"No activation map: {plain(exc)}", icon=":material/broken_image:")
        return
    why = (["for the predicted count"] if len(maps) == 1 else ["for the predicted count", "for the record's count"])
    if len(maps) == 1:
        why[0] += (" (also the record's)" if record_class == predicted_class else
                   " (the record is beyond the model's range: no map for it)" if expected is not None else "")
    for column, (label, probability, data), what in zip(st.columns(2), maps, why, strict=False):
        noun = "item" if label == "1" else "items"
        column.image(data, width="stretch", caption=f"{label} {noun}, {what}: p = {probability:.0%}")
    st.caption(f"Grad-CAM ({explainer.block} of {explainer.spec.arch}, a {explainer.map_side}×{explainer.map_side} "
               f"map at the model's {explainer.spec.preprocess.image_size} px input), from the grad-cam package.")
