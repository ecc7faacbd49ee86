"""What every page needs, built once per process and shared: settings, workspace, database, predictor.

Cached resources are keyed by their inputs (workspace path, database URL, model folder), so a test
or a second workspace in the same process never gets another one's engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlalchemy.engine import Engine

from binaudit.config import Settings, load_settings
from binaudit.workspace import Workspace, image_roots
from modeling.registry import ModelVersion, active_version


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    workspace: Workspace
    engine: Engine


@st.cache_resource(show_spinner=False)
def _open(root: str, database_url: str, s3_bucket: str) -> tuple[Workspace, Engine]:
    workspace = Workspace(Path(root), database_url, s3_bucket)
    return workspace, workspace.open()


def app_context() -> AppContext:
    settings = load_settings()
    workspace, engine = _open(str(settings.workspace.resolve()), settings.resolved_database_url, settings.s3_bucket)
    return AppContext(settings, workspace, engine)


def current_model(ctx: AppContext) -> ModelVersion | None:
    return active_version(ctx.engine)


def require_model(ctx: AppContext, why: str) -> ModelVersion:
    """The active model version; without one, say `why` the page needs it and stop the page."""
    version = active_version(ctx.engine)
    if version is None:
        st.info(f"No model is active yet: {why}")
        st.stop()
    return version


@st.cache_resource(show_spinner="Loading the model ...", max_entries=3)
def predictor_for(model_dir: str):
    from modeling.predictor import Predictor

    return Predictor.load(model_dir, device="cpu", precision="fp32")


def allowed_roots(ctx: AppContext) -> list[str]:
    with ctx.engine.connect() as conn:
        return image_roots(conn)
