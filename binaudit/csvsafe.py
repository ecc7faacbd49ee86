"""CSV cells that a spreadsheet would run as a formula ("CSV injection"), made inert.

A text cell starting with `=`, `+`, `-` or `@` (or their full-width forms), a tab or a carriage return is a formula
to Excel, LibreOffice and Google Sheets: `=HYPERLINK(...)` in a reviewer's name or a note would run on the machine
of whoever opens the export. Such a cell gets a leading apostrophe (OWASP's advice): spreadsheets show the text as
typed, and a program reading the CSV sees the apostrophe. Numbers are never touched (a negative count stays -1).
Every CSV BinAudit writes from text that people or files supplied goes through `spreadsheet_safe`.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(value: object) -> object:
    """`value`, with an apostrophe in front when it is text a spreadsheet would take for a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
