"""What the dashboard reads from a registered model version's folder (metrics.json, its dataset)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

from app.demo_recipe import REAL_PHOTO_CHECK, RealPhotoCheck, trained_by_demo_recipe
from modeling.registry import ModelVersion


@st.cache_data(show_spinner=False, max_entries=50)
def _read_json(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def version_metrics(version: ModelVersion) -> dict:
    """metrics.json of the version (history, final evaluation with both decodings), or {}."""
    path = version.model_dir / "metrics.json"
    try:
        return _read_json(str(path), os.path.getmtime(path))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def data_source_kind(version: ModelVersion) -> str:
    """"abid", "synthetic" or "unknown": from the registration, else the stats.json beside the training, validation or
    test folder (the first that has one: a job given a copy of the training folder still names the dataset's
    validation folder, so two versions evaluated on one folder say the same)."""
    if version.config.get("data_source"):
        return str(version.config["data_source"])
    args = version.config.get("resolved_args") or {}
    for folder in (args.get("train"), args.get("val"), args.get("test")):
        if not folder or str(folder).startswith("s3://"):
            continue
        stats = Path(folder).parent / "stats.json"
        try:
            return str(_read_json(str(stats), os.path.getmtime(stats)).get("source_kind", "unknown"))
        except (FileNotFoundError, json.JSONDecodeError, OSError):
            continue
    return "unknown"


def shows_published_reference(version: ModelVersion) -> bool:
    """The published ABID figures (counts 0..5, bins of more than 5 items left out) compare only with a closed model
    of max count 5; its validation split then holds 0..5 bins only (a closed model cannot take a "6+" folder)."""
    classes = version.classes
    return not classes.open_top and classes.max_count == 5
def real_photo_check(version: ModelVersion) -> RealPhotoCheck | None:
    """The demo recipe's measured figures on real ABID photos, for a version that recipe trained; else None."""
    return REAL_PHOTO_CHECK if trained_by_demo_recipe(version.config.get("resolved_args") or {}) else None


def validation_label(version: ModelVersion, what: str = "Validation accuracy") -> str:
    """"Validation accuracy (synthetic bins)": says what the validation figures were measured on."""
    kind = data_source_kind(version)
    return f"{what} ({'ABID' if kind == 'abid' else kind} bins)" if kind in ("abid", "synthetic") else what
