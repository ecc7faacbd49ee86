"""Id lists in the shapes people pass around for ABID subsets."""

from __future__ import annotations

import json

import pytest

from data_tools.id_lists import parse_id_list, read_id_list
from data_tools.problems import DataToolsError


def test_plain_list_with_comments_and_padding():
    text = "# chosen bins\n00001\n42\n\n100313  # a big id\n00001\n"
    assert parse_id_list(text) == ["00001", "00042", "100313"]


def test_plain_list_of_paths():
    assert parse_id_list("metadata/00005.json\nbin-images/00006.jpg\n") == ["00005", "00006"]


def test_file_list_json_shape():
    doc = {"1": ["metadata/100313.json", "metadata/00004.json"], "2": ["metadata/523.json"]}
    assert parse_id_list(json.dumps(doc)) == ["100313", "00004", "00523"]


def test_abid_challenge_counting_shape_uses_index_plus_one():
    doc = [[0, 3], [41, 0], [99999, 5]]
    assert parse_id_list(json.dumps(doc)) == ["00001", "00042", "100000"]


def test_json_list_of_ids():
    assert parse_id_list(json.dumps([7, "00008", "metadata/9.json"])) == ["00007", "00008", "00009"]


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "ids.json"
    bad.write_text('{"1": "metadata/1.json"}')
    with pytest.raises(DataToolsError, match="ids.json"):
        read_id_list(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("[[0, 1], ")
    with pytest.raises(DataToolsError, match="broken.json: malformed JSON"):
        read_id_list(broken)
    with pytest.raises(DataToolsError, match="not found"):
        read_id_list(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(DataToolsError, match="holds no ids"):
        read_id_list(empty)
