"""BinAudit's dashboard: `streamlit run app/dashboard.py` (`make run` starts it after seeding a demo).

Pages live in app/app_pages/ (not pages/: st.navigation replaces the legacy folder mechanism);
they stay thin and call the audit core (audit), the registry and the jobs layer.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/dashboard.py` puts app/ on sys.path, not the repository root
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import streamlit as st  # noqa: E402

from app.ui.context import app_context  # noqa: E402
from app.ui.identity import login_problem, reviewer_ui  # noqa: E402
from app.ui.run_counter import show_run_number  # noqa: E402

st.set_page_config(page_title="BinAudit", page_icon=":material/inventory_2:", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/upload.py", title="Upload", icon=":material/upload:"),
    st.Page("app_pages/browse.py", title="Browse bins", icon=":material/grid_view:"),
    st.Page("app_pages/queue.py", title="Mismatch queue", icon=":material/fact_check:"),
    st.Page("app_pages/retrain.py", title="Retrain", icon=":material/model_training:"),
    st.Page("app_pages/evaluation.py", title="Evaluation", icon=":material/analytics:"),
]

page = st.navigation(PAGES)
ctx = app_context()
problem = login_problem(ctx.settings.require_login)
if problem:  # refuse to run rather than fall back to a typed name
    st.error(problem, icon=":material/lock:")
    st.stop()
with st.sidebar:
    show_run_number()  # test mode only
    st.markdown("**BinAudit**")
    reviewer_ui(ctx)
    st.caption(f"workspace: `{ctx.workspace.root}`")
page.run()
