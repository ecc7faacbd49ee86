"""Parse one ABID metadata JSON into a typed record, listing every problem with it.

Shape (see ../shared/abid-sample/README.md):
    {"BIN_FCSKU_DATA": {KEY: {"asin", "name", "normalizedName", "quantity",
                              "height"|"length"|"width": {"unit": "IN", "value": float},
                              "weight": {"unit": "pounds", "value": float}}, ...},
     "EXPECTED_QUANTITY": int}

The happy path is one `orjson.loads` and a walk over a handful of items, so a build over the
full 535k-file dataset is bound by file reads, not by parsing. The slow, friendly diagnosis
(line and column of a JSON error, offset of a bad byte) only runs for files that fail.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import orjson

from data_tools.problems import ERROR, WARNING, Problem

# ABID bins hold a few dozen items at most; a larger count is a broken record (and 2**63 would not fit a database
# integer), so it is reported like a negative one instead of travelling on
MAX_QUANTITY = 100_000


def _both_cases(table: dict[str, float]) -> dict[str, float]:
    # ABID spells units "IN" and "pounds": holding both cases spares .upper() on the hot path
    return {**table, **{k.lower(): v for k, v in table.items()}}


# unit conversions to the record's units (inches, pounds)
_LENGTH_TO_IN = _both_cases({"IN": 1.0, "INCHES": 1.0, "CM": 1 / 2.54, "MM": 1 / 25.4, "M": 100 / 2.54, "FT": 12.0})
_WEIGHT_TO_LB = _both_cases({"POUNDS": 1.0, "LB": 1.0, "LBS": 1.0, "KG": 2.20462262, "KILOGRAMS": 2.20462262,
                             "G": 0.00220462262, "GRAMS": 0.00220462262, "OZ": 1 / 16, "OUNCES": 1 / 16})


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    asin: str
    name: str
    quantity: int
    length_in: float | None = None
    width_in: float | None = None
    height_in: float | None = None
    weight_lb: float | None = None


@dataclass(frozen=True, slots=True)
class BinRecord:
    bin_id: str
    expected_quantity: int
    items: tuple[Item, ...]

    @property
    def n_skus(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class ParseResult:
    record: BinRecord | None  # None when an error makes the file unusable
    problems: tuple[Problem, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe_json_error(raw: bytes, error: orjson.JSONDecodeError) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    if not text.strip():
        return "empty file"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:  # json refuses it too: an integer of more than 4,300 digits
        return f"malformed JSON: {str(exc).split(';')[0]} (line {error.lineno} column {error.colno})"
    except RecursionError:  # json refuses it too: nesting past the interpreter's recursion limit
        pass
    # orjson is stricter than json (NaN, numbers past a double, nesting past 1,024 levels): its own words
    return f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"


def _measure(value: object, table: dict[str, float], what: str, key: str, problems: list[str]) -> float | None:
    """A {"unit", "value"} pair converted to the record's unit; a bad one is a warning, not fatal."""
    if value is None:
        return None
    if type(value) is dict:  # fast path: a well-formed pair in a known unit
        number, unit = value.get("value"), value.get("unit")
        factor = table.get(unit) if type(unit) is str else None
        if factor is not None and (type(number) is float or type(number) is int) and number >= 0:
            return number * factor
    return _measure_checked(value, table, what, key, problems)


def _measure_checked(value: object, table: dict[str, float], what: str, key: str, problems: list[str]) -> float | None:
    if not isinstance(value, dict) or "value" not in value:
        problems.append(f"item {key}: {what} is not a {{unit, value}} pair")
        return None
    number = value.get("value")
    if not isinstance(number, (int, float)) or isinstance(number, bool) or number < 0:
        problems.append(f"item {key}: {what} value {number!r} is not a non-negative number")
        return None
    unit = str(value.get("unit", "")).upper()
    factor = table.get(unit)
    if factor is None:
        problems.append(f"item {key}: {what} has unknown unit {value.get('unit')!r}")
        return None
    return float(number) * factor


def _text(value: object) -> str:
    """A text field as stored: NUL characters (which PostgreSQL refuses in text) become U+FFFD."""
    text = str(value)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _parse_item(key: str, raw: object, errors: list[str], warnings: list[str]) -> Item | None:
    if not isinstance(raw, dict):
        errors.append(f"item {key}: not an object")
        return None
    quantity = raw.get("quantity")
    if not _is_int(quantity) or quantity < 0:
        errors.append(f"item {key}: quantity {quantity!r} is not a non-negative integer")
        return None
    if quantity > MAX_QUANTITY:
        errors.append(f"item {key}: quantity {quantity} is not a plausible count (over {MAX_QUANTITY:,})")
        return None
    get = raw.get
    return Item(
        key,
        _text(get("asin") or key),
        _text(get("name") or get("normalizedName") or ""),
        quantity,
        _measure(get("length"), _LENGTH_TO_IN, "length", key, warnings),
        _measure(get("width"), _LENGTH_TO_IN, "width", key, warnings),
        _measure(get("height"), _LENGTH_TO_IN, "height", key, warnings),
        _measure(get("weight"), _WEIGHT_TO_LB, "weight", key, warnings),
    )


def parse_metadata(raw: bytes, bin_id: str, file: str) -> ParseResult:
    """Parse metadata bytes; `file` names the source in problems. Never raises on bad input."""
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is harmless; orjson refuses it
        raw = raw[3:]
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return ParseResult(None, (Problem(file, _describe_json_error(raw, exc), bin_id),))
    if not isinstance(doc, dict):
        return ParseResult(None, (Problem(file, f"top level is {type(doc).__name__}, not an object", bin_id),))

    errors: list[str] = []
    warnings: list[str] = []
    expected = doc.get("EXPECTED_QUANTITY")
    if "EXPECTED_QUANTITY" not in doc:
        errors.append("missing EXPECTED_QUANTITY")
    elif not _is_int(expected):
        errors.append(f"EXPECTED_QUANTITY {expected!r} is not an integer")
    elif expected < 0:
        errors.append(f"EXPECTED_QUANTITY {expected} is negative")
    elif expected > MAX_QUANTITY:
        errors.append(f"EXPECTED_QUANTITY {expected} is not a plausible count (over {MAX_QUANTITY:,})")

    raw_items = doc.get("BIN_FCSKU_DATA")
    items: list[Item] = []
    if raw_items is None:
        errors.append("missing BIN_FCSKU_DATA")
    elif not isinstance(raw_items, dict):
        errors.append(f"BIN_FCSKU_DATA is {type(raw_items).__name__}, not an object")
    else:
        for key, value in raw_items.items():
            item = _parse_item(_text(key), value, errors, warnings)
            if item is not None:
                items.append(item)

    if not errors:
        total = sum(i.quantity for i in items)
        if total != expected:
            errors.append(f"EXPECTED_QUANTITY {expected} differs from the sum of item quantities {total}")

    problems = tuple(Problem(file, r, bin_id, ERROR) for r in errors) + tuple(
        Problem(file, r, bin_id, WARNING) for r in warnings
    )
    if errors:
        return ParseResult(None, problems)
    return ParseResult(BinRecord(bin_id, expected, tuple(items)), problems)


def read_metadata_file(path: str | os.PathLike, bin_id: str, file: str) -> ParseResult:
    """Read and parse one metadata file: an unreadable file, or one the parser chokes on, is a reported problem.

    Builds and imports go through here, so one bad file never stops a run; parse_metadata itself never raises
    on bad input (the fuzz tests hold it to that), and the last `except` is the net should a case be missed.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        return ParseResult(None, (Problem(file, f"unreadable file: {exc.strerror or exc}", bin_id),))
    try:
        return parse_metadata(raw, bin_id, file)
    except Exception as exc:  # noqa: BLE001 - see the docstring: the file is reported, the run goes on
        return ParseResult(None, (Problem(file, f"could not be parsed ({type(exc).__name__}: {exc})", bin_id),))


def item_dicts(record: BinRecord) -> list[dict[str, object]]:
    """Items as plain dicts (for JSON columns and tables)."""
    return [
        {
            "asin": i.asin,
            "name": i.name,
            "quantity": i.quantity,
            "length_in": i.length_in,
            "width_in": i.width_in,
            "height_in": i.height_in,
            "weight_lb": i.weight_lb,
        }
        for i in record.items
    ]
