"""Who is deciding: `st.login` when OIDC is configured (and required), otherwise a name asked once per browser tab.

The typed name is bound to the URL (`?reviewer_name=...`, Streamlit's bind="query-params"), so a reload, a page
switch or a bookmarked link keeps it. It identifies, it does not authenticate: a team that needs to know who
decided sets require_login and OIDC. `dashboard.py` calls `reviewer_ui` on every run; pages read the result with
`current_reviewer()`.
"""

from __future__ import annotations

import streamlit as st

from app.ui.context import AppContext
from app.ui.text import plain
from audit.reviews import MAX_REVIEWER

NAME_WIDGET = "reviewer_name"
RESOLVED = "reviewer"


def oidc_configured() -> bool:
    """Whether Streamlit's secrets have the [auth] section st.login needs."""
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, KeyError):  # no secrets file at all
        return False


def login_problem(require_login: bool) -> str | None:
    """Why the dashboard must not start (a login is required but cannot happen), or None."""
    if require_login and not oidc_configured():
        return ("require_login = true, but Streamlit's secrets (.streamlit/secrets.toml) have no [auth] section "
                "(OIDC: redirect_uri, cookie_secret, client_id, client_secret, server_metadata_url), so nobody could "
                "sign in. Add the [auth] section, or set require_login = false to ask reviewers for a name.")
    return None


def _from_login() -> str | None:
    if not st.user.get("is_logged_in", False):  # absent, not False, before any sign-in
        st.sidebar.button("Log in to review", on_click=st.login, type="primary")
        return None
    name = str(st.user.get("name") or st.user.get("email") or "signed-in user")
    st.sidebar.caption(f"Signed in as **{plain(name)}**")
    st.sidebar.button("Log out", on_click=st.logout)
    return name


def _from_name_prompt() -> str | None:
    name = st.sidebar.text_input("Your name", key=NAME_WIDGET, placeholder="stored with every decision",
                                 max_chars=MAX_REVIEWER, bind="query-params",
                                 help="Stored with every review decision; kept in the page address, so a reload "
                                      "keeps it.")
    return (name or "").strip() or None


def reviewer_ui(ctx: AppContext) -> str | None:
    """Draw the identity widget in the sidebar and remember who is reviewing."""
    name = _from_login() if ctx.settings.require_login else _from_name_prompt()  # dashboard.py checked login_problem
    st.session_state[RESOLVED] = name
    return name


def current_reviewer() -> str | None:
    return st.session_state.get(RESOLVED)
