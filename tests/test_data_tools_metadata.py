"""Parsing ABID metadata into typed records, and the problems reported for bad files."""

from __future__ import annotations

import json

import pytest

from data_tools.metadata import parse_metadata


def _doc(items: dict, expected: object) -> bytes:
    return json.dumps({"BIN_FCSKU_DATA": items, "EXPECTED_QUANTITY": expected}, ensure_ascii=False).encode("utf-8")


def _item(asin: str, quantity: object, name: str = "Thing", **extra) -> dict:
    item = {"asin": asin, "name": name, "normalizedName": name, "quantity": quantity,
            "height": {"unit": "IN", "value": 2.0}, "length": {"unit": "IN", "value": 3.0},
            "width": {"unit": "IN", "value": 4.0}, "weight": {"unit": "pounds", "value": 0.5}}
    item.update(extra)
    return item


def test_parses_items_with_dimensions_and_weight():
    raw = _doc({"B000C33MI2": _item("B000C33MI2", 4, "FRAM Oil Filter"), "B0050Z27KG": _item("B0050Z27KG", 2)}, 6)
    result = parse_metadata(raw, "00001", "metadata/00001.json")
    assert result.problems == ()
    record = result.record
    assert record.bin_id == "00001" and record.expected_quantity == 6 and record.n_skus == 2
    first = record.items[0]
    assert (first.asin, first.name, first.quantity) == ("B000C33MI2", "FRAM Oil Filter", 4)
    assert (first.length_in, first.width_in, first.height_in, first.weight_lb) == (3.0, 4.0, 2.0, 0.5)


def test_empty_bin_is_a_valid_record():
    result = parse_metadata(_doc({}, 0), "00007", "m")
    assert result.problems == () and result.record.expected_quantity == 0 and result.record.items == ()


def test_non_ascii_names_survive():
    name = "Müller Café – Größe 日本"
    result = parse_metadata(_doc({"K": _item("B01", 1, name)}, 1), "1", "m")
    assert result.record.items[0].name == name


def test_key_is_used_when_asin_is_missing_and_units_are_converted():
    item = _item("ignored", 1)
    del item["asin"]
    item["length"] = {"unit": "CM", "value": 25.4}
    item["weight"] = {"unit": "kilograms", "value": 1.0}
    record = parse_metadata(_doc({"KEY123": item}, 1), "1", "m").record
    assert record.items[0].asin == "KEY123"
    assert record.items[0].length_in == pytest.approx(10.0)
    assert record.items[0].weight_lb == pytest.approx(2.2046, rel=1e-3)


def test_byte_order_mark_is_tolerated():
    assert parse_metadata(b"\xef\xbb\xbf" + _doc({}, 0), "1", "m").record is not None


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b'{"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {', "malformed JSON"),
        (b'{"EXPECTED_QUANTITY": 0, "BIN_FCSKU_DATA": {}, "x": "\xff\xfe"}', "not UTF-8"),
        (b"", "empty file"),
        (b"[1, 2]", "top level is list"),
        (b'{"BIN_FCSKU_DATA": {}}', "missing EXPECTED_QUANTITY"),
        (b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": "3"}', "is not an integer"),
        (b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 2.5}', "is not an integer"),
        (b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": true}', "is not an integer"),
        (b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": -1}', "is negative"),
        (b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 9223372036854775808}', "not a plausible count"),
        (b'{"BIN_FCSKU_DATA": {"A": {"quantity": 100001}}, "EXPECTED_QUANTITY": 100001}', "not a plausible count"),
        (b'{"EXPECTED_QUANTITY": 0}', "missing BIN_FCSKU_DATA"),
        (b'{"BIN_FCSKU_DATA": [], "EXPECTED_QUANTITY": 0}', "BIN_FCSKU_DATA is list"),
    ],
)
def test_unusable_files_are_reported_with_their_reason(raw, reason_part):
    result = parse_metadata(raw, "00042", "metadata/00042.json")
    assert result.record is None
    assert result.problems, "a rejected file must say why"
    assert any(reason_part in p.reason for p in result.problems), [p.reason for p in result.problems]
    assert all(p.file == "metadata/00042.json" and p.bin_id == "00042" for p in result.problems)


def test_malformed_json_reports_line_and_column():
    raw = b'{\n  "EXPECTED_QUANTITY": 1,\n  "BIN_FCSKU_DATA": {,}\n}'
    reason = parse_metadata(raw, "1", "m").problems[0].reason
    assert "line 3" in reason and "column" in reason


def test_not_utf8_reports_the_offset():
    raw = b'{"EXPECTED_QUANTITY": 0, "BIN_FCSKU_DATA": {}, "n": "caf\xe9"}'
    reason = parse_metadata(raw, "1", "m").problems[0].reason
    offset = raw.index(b"\xe9")
    assert reason.startswith("not UTF-8") and f"offset {offset}" in reason


def test_expected_quantity_that_differs_from_the_item_sum_is_an_error():
    result = parse_metadata(_doc({"A": _item("A", 2), "B": _item("B", 1)}, 4), "1", "m")
    assert result.record is None
    assert "differs from the sum of item quantities 3" in result.problems[0].reason


def test_every_problem_in_a_file_is_listed():
    raw = _doc({"A": _item("A", -1), "B": _item("B", "two"), "C": "not an object"}, -3)
    reasons = [p.reason for p in parse_metadata(raw, "1", "m").problems]
    assert any("is negative" in r for r in reasons)
    assert any("item A: quantity -1" in r for r in reasons)
    assert any("item B: quantity 'two'" in r for r in reasons)
    assert any("item C: not an object" in r for r in reasons)


def test_bad_dimension_is_a_warning_and_the_record_is_kept():
    item = _item("A", 1, weight={"unit": "stone", "value": 1.0}, height={"unit": "IN", "value": "tall"},
                 length={"unit": ["IN"], "value": 2.0}, width=7)
    result = parse_metadata(_doc({"A": item}, 1), "1", "m")
    assert result.record is not None and result.record.items[0].weight_lb is None
    assert {p.severity for p in result.problems} == {"warning"}
    assert len(result.problems) == 4


def test_real_abid_sample_parses_cleanly(abid_sample):
    records = []
    for path in sorted((abid_sample / "metadata").glob("*.json")):
        result = parse_metadata(path.read_bytes(), path.stem, path.name)
        assert [p for p in result.problems if p.is_error] == [], path
        records.append(result.record)
    assert len(records) == 100
    assert any(r.expected_quantity == 0 and r.items == () for r in records), "the sample has empty bins"
    assert any(i.quantity > 1 for r in records for i in r.items), "the sample has quantity > 1"
    assert any(not i.name.isascii() for r in records for i in r.items), "the sample has non-ASCII names"
