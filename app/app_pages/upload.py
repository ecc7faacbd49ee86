"""Upload: score bin photos now, each with its metadata JSON or a typed expected count.

A photo and a metadata file pair up by name (00042.jpg + 00042.json). Each photo is stored in the
workspace and scored once per session; changing its expected count re-ranks it without re-scoring.
A bad file gets a message naming it and the reason (and no expected-count box); the others still score. A batch
ends with a summary table (one row per file: bin, record, prediction, mismatch probability, queued, or the error)
and its CSV.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui.bin_view import beyond_range_text
from app.ui.charts import probability_chart
from app.ui.context import app_context, predictor_for, require_model
from app.ui.identity import current_reviewer
from app.ui.images import show_photo
from app.ui.text import plain
from audit.export import csv_text
from audit.imports import ImportError_, import_upload
from audit.reviews import ReviewConflict, send_to_queue
from audit.scoring import record_prediction
from audit.vocabulary import flag_text, legend_frame, screen_frame

IMAGE_TYPES = ("jpg", "jpeg", "png")
PREVIEW_SIDE = 480
RESULTS = "upload_results"  # session cache: (file, digest, expected) -> scored result
LOG = logging.getLogger("binaudit.upload")

ctx = app_context()
st.title("Upload bin photos")
version = require_model(ctx, "train one on the Retrain page first.")

files = st.file_uploader(
    "Bin photos (JPEG or PNG), optionally with their metadata JSON (same name: 00042.jpg + 00042.json)",
    type=[*IMAGE_TYPES, "json"], accept_multiple_files=True, max_upload_size=ctx.settings.max_upload_mb,
)
photos = [f for f in files or [] if Path(f.name).suffix.lower().lstrip(".") in IMAGE_TYPES]
metadata = {Path(f.name).stem: f.getvalue() for f in files or [] if f.name.lower().endswith(".json")}
for stem in sorted(set(metadata) - {Path(f.name).stem for f in photos}):
    st.warning(f"{plain(stem)}.json: no photo with this name was uploaded; it was ignored.")
if not photos:
    st.caption(f"Scored with model {version.name}. Files up to {ctx.settings.max_upload_mb} MB each.")
    st.stop()

cache: dict = st.session_state.setdefault(RESULTS, {})
predictor = predictor_for(str(version.model_dir))


def score_upload(name: str, data: bytes, meta: bytes | None, typed: int | None) -> dict:
    """Store, score and record one photo; returns what the page shows (raises ImportError_ for bad files)."""
    row = import_upload(ctx.engine, ctx.workspace, name, data, actor=current_reviewer() or "dashboard",
                        metadata=meta, expected_count=typed, max_pixels=ctx.settings.max_image_pixels)
    answer = predictor.predict_bytes(data, row["expected_count"])
    record_prediction(ctx.engine, version, row["id"], answer["probabilities"])
    return {"bin_id": row["id"], "image_uri": row["image_uri"], "items": row["items"],
            "row_version": row["row_version"], **answer}


def distinct(files: list) -> list[tuple]:
    """(file, bytes, digest) once per name and content: the same file picked twice is shown once."""
    seen, out = set(), []
    for f in files:
        data = f.getvalue()
        digest = hashlib.sha256(data).hexdigest()[:16]
        if (f.name, digest) not in seen:
            seen.add((f.name, digest))
            out.append((f, data, digest))
    return out


def scored(name: str, data: bytes, digest: str, meta: bytes | None, typed: int | None) -> dict:
    """The cached result of one photo with this expected count; an error becomes {"error": message}."""
    key = (name, digest, typed)
    if key not in cache:
        try:
            cache[key] = score_upload(name, data, meta, typed)
        except ImportError_ as exc:
            cache[key] = {"error": str(exc)}
        except Exception:  # one file's unforeseen failure must not stop the others; the details go to the log
            LOG.exception("upload of %s failed", name)
            cache[key] = {"error": f"{name}: could not be processed (an internal error, logged on the server)"}
    return cache[key]


def summary_row(name: str, result: dict) -> dict:
    if "error" in result:
        return {"file": name, "bin_id": None, "expected_count": None, "predicted_count": None,
                "mismatch_probability": None, "queued": None, "error": result["error"]}
    p = result.get("mismatch_probability")
    return {"file": name, "bin_id": result["bin_id"], "expected_count": result.get("expected_count"),
            "predicted_count": result["predicted_label"], "mismatch_probability": p,
            "queued": p is not None and p >= ctx.settings.mismatch_threshold, "error": ""}


summary = []
for photo, data, digest in distinct(photos):
    meta = metadata.get(Path(photo.name).stem)
    with st.container(border=True):
        left, right = st.columns([2, 3])
        result = scored(photo.name, data, digest, meta, None)  # a bad file fails whatever count is typed
        if "error" not in result and meta is None:
            typed = right.number_input(f"Expected count for {plain(photo.name)} (optional)", min_value=0, step=1,
                                       value=None, key=f"expected-{photo.name}-{digest}")
            if typed is not None:
                result = scored(photo.name, data, digest, meta, int(typed))
        summary.append(summary_row(photo.name, result))
        if "error" in result:
            left.error(plain(result["error"]), icon=":material/error:")
            continue
        # the stored copy, through the thumbnail cache: st.image would re-encode the full photo on every rerun
        with left:
            show_photo(ctx, result["image_uri"], side=PREVIEW_SIDE,
                       caption=f"{plain(photo.name)} → bin {plain(result['bin_id'])}")
        expected = result.get("expected_count")
        m = right.columns(3)
        m[0].metric("Predicted count", result["predicted_label"])
        m[1].metric("Expected count", expected if expected is not None else "–",
                    help="from the metadata JSON" if meta is not None else "typed above")
        if expected is not None and result.get("beyond_range"):
            m[2].metric("Mismatch probability", "–", help="beyond the model's range")
            right.info(beyond_range_text(expected, version.classes), icon=":material/info:")
        elif expected is not None:
            p = result["mismatch_probability"]
            m[2].metric("Mismatch probability", f"{p:.0%}")
            numbers = flag_text(expected, result["predicted_label"], p, ctx.settings.mismatch_threshold)
            if p >= ctx.settings.mismatch_threshold:
                right.error(f"Queued for review: {numbers}.", icon=":material/fact_check:")
            else:
                right.success(f"Not queued: {numbers}.", icon=":material/check_circle:")
        right.plotly_chart(probability_chart(result["probabilities"], expected=expected, labels=result["labels"]),
                           key=f"chart-{photo.name}-{digest}", config={"displayModeBar": False})
        if right.button("Send to review queue", key=f"queue-{photo.name}-{digest}", icon=":material/fact_check:"):
            try:
                result["row_version"] = send_to_queue(ctx.engine, result["bin_id"], actor=current_reviewer()
                                                      or "dashboard", expected_version=result["row_version"])
                right.success(f"Bin {plain(result['bin_id'])} is in the review queue.")
            except ReviewConflict as exc:
                right.warning(plain(exc))

if len(summary) > 1:
    st.subheader("This batch")
    table = pd.DataFrame(summary)
    failed = int((table["error"] != "").sum())
    st.caption(f"{len(table)} photo(s): {len(table) - failed} scored, {failed} failed, "
               f"{int(table['queued'].fillna(False).astype(bool).sum())} queued for review.")
    st.dataframe(screen_frame(table.astype({"queued": "object"})), hide_index=True, width="stretch",
                 column_config={"Mismatch probability": st.column_config.NumberColumn(format="percent")})
    st.download_button("Batch CSV", data=csv_text(table), file_name="binaudit-upload-batch.csv", mime="text/csv",
                       icon=":material/download:", key="upload-batch-csv")
    with st.expander("What the CSV columns mean"):
        st.dataframe(legend_frame([c for c in table.columns if c not in ("file", "error")]), hide_index=True,
                     width="stretch")
