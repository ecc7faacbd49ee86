"""Test mode only (BINAUDIT_TEST_RUN_COUNTER=1): each script run writes its number into a hidden sidebar element.

The browser tests read it before an action and wait for a larger number: proof that the run the action triggered
has started, so that "the app is idle" afterwards means that run has ended, not that it has not begun yet.
Without the variable nothing is drawn.
"""

from __future__ import annotations

import os

import streamlit as st

ENV = "BINAUDIT_TEST_RUN_COUNTER"
ATTRIBUTE = "data-binaudit-run"


def show_run_number() -> None:
    """Call first in the sidebar, so the element keeps one place and each run replaces the last one's."""
    if os.environ.get(ENV) != "1":
        return
    number = st.session_state.get("_binaudit_run", 0) + 1
    st.session_state["_binaudit_run"] = number
    st.markdown(f"<div {ATTRIBUTE}='{number}' hidden></div>", unsafe_allow_html=True)
