"""Keyboard help the widgets lack: a digit typed while nothing editable has focus goes into a number box.

Streamlit's button shortcuts (D, U, N, Z on the queue) fire from anywhere on the page, but a number input takes keys
only once focused: without this an analyst had to click or Tab into the recount box before typing a count.
"""

from __future__ import annotations

import json

import streamlit as st

# Runs in the page itself (st.html, no iframe). Installed once per browser tab; on pages without the box it does
# nothing. Focus moves in the capture phase of keydown, so the browser then types the digit into the box.
_SCRIPT = """<script>
(() => {
  const label = %s;
  const flag = "binauditDigitsTo" + label.replace(/\\W/g, "");
  if (window[flag]) return;
  window[flag] = true;
  const editable = (el) => el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT"
    || (el.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(el.type)));
  document.addEventListener("keydown", (event) => {
    if (!/^[0-9]$/.test(event.key) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (editable(document.activeElement)) return;
    const box = document.querySelector(`input[aria-label="${label}"]`);
    if (box && !box.disabled) box.focus();
  }, true);
})();
</script>"""


def digits_script(label: str) -> str:
    """The page script behind digits_go_to (our own HTML: nothing a user typed goes into it)."""
    return _SCRIPT % json.dumps(label)


def digits_go_to(label: str) -> None:
    """From now on in this tab, a digit typed outside any text field focuses the number input labelled `label`."""
    st.html(digits_script(label), unsafe_allow_javascript=True)
