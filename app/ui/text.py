"""Text that people or files supplied, shown as typed: never read as Markdown or HTML.

Streamlit renders Markdown in almost every element that shows text: st.markdown, captions, alerts (error, warning,
success, info), toasts, subheaders, image captions, metric and widget labels, radio and select options. A reviewer
named `![r](http://host/x.png)` would make every browser that shows it fetch that URL; `[text](url)` would be a
link; `:red[...]`, `$...$` would restyle the page. Every such place wraps the supplied part (reviewer names, notes,
item names, bin ids, file names, messages that quote them) in `plain()`; st.dataframe and st.code show text as is.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # line breaks would start a new Markdown block (a heading, a list)
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation mark: CommonMark lets each be escaped
# GFM turns bare URLs and e-mail addresses into links after escapes are resolved, so escaping cannot stop it: an
# invisible word joiner (U+2060) between "http" and "://", "www" and ".", or before "@" breaks the pattern instead
_LINK_START = re.compile(r"(?i)(https?|ftp|www)(?=\\[:.])")
_WORD_JOINER = "\u2060"


def plain(text: object) -> str:
    """`text` on one line with every Markdown and HTML character escaped and no autolink, so it renders literally."""
    escaped = _PUNCTUATION.sub(r"\\\1", _CONTROL.sub(" ", str(text)))
    return _LINK_START.sub(r"\1" + _WORD_JOINER, escaped).replace("\\@", _WORD_JOINER + "\\@")
