"""Hostile files in a source folder: each is reported with its file and reason, and the rest of the run completes.

Covers issue 12's items 1 (metadata that crashed the JSON parser: a 5,000-digit integer, 100,000-deep nesting) and 8
(bin ids that are not plain names, symlinks out of the source folder), through every way in: `data_tools build`,
`audit import --folder`, the Upload page. The local endpoint's side is in test_jobs_endpoint.py.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from binaudit import db
from binaudit.workspace import Workspace
from data_tools.build import read_manifest
from data_tools.layout import is_safe_bin_id, normalize_bin_id
from data_tools.problems import read_report
from tests.modeling_fixtures import jpeg_bytes, run_python, subprocess_env
from tests.test_app_pages import seeded_copy

ROOT = Path(__file__).resolve().parent.parent

# metadata files that stopped whole runs with ValueError / RecursionError before issue 12
HOSTILE_METADATA = {
    "5000-digit integer": b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": ' + b"9" * 5000 + b"}",
    "100,000-deep array": b'{"BIN_FCSKU_DATA": ' + b"[" * 100_000 + b"]" * 100_000 + b', "EXPECTED_QUANTITY": 0}',
    "100,000-deep object": b'{"x": ' * 100_000 + b"0" + b"}" * 100_000,
}


def _small_raw(synth_raw: Path, dest: Path, n: int = 12) -> list[str]:
    """The first `n` synthetic bins in ABID layout under `dest`; returns their ids."""
    ids = sorted(p.stem for p in (synth_raw / "metadata").glob("*.json"))[:n]
    for sub, suffix in (("metadata", ".json"), ("bin-images", ".jpg")):
        (dest / sub).mkdir(parents=True)
        for bin_id in ids:
            shutil.copyfile(synth_raw / sub / f"{bin_id}{suffix}", dest / sub / f"{bin_id}{suffix}")
    return ids


def _plant_hostile_files(raw: Path, ids: list[str], outside: Path) -> dict[str, str]:
    """Overwrite three bins' metadata with HOSTILE_METADATA, add files with unsafe ids and symlinks leading out of
    `raw`; returns {file: reason fragment} for everything that must be reported."""
    reasons = {}
    for bin_id, data in zip(ids, HOSTILE_METADATA.values(), strict=False):
        (raw / "metadata" / f"{bin_id}.json").write_bytes(data)
        reasons[f"metadata/{bin_id}.json"] = "malformed JSON"
    good_meta = (raw / "metadata" / f"{ids[-1]}.json").read_bytes()
    good_photo = (raw / "bin-images" / f"{ids[-1]}.jpg").read_bytes()
    for name in ("..", "<script>alert(1)</script>", "two\nlines", "-rf", "=HYPERLINK(1)"):
        try:
            (raw / "metadata" / f"{name}.json").write_bytes(good_meta)
            (raw / "bin-images" / f"{name}.jpg").write_bytes(good_photo)
        except OSError:  # a name this file system refuses cannot arrive through it either
            continue
        reasons[f"metadata/{name}.json"] = "is not a plain name"
        reasons[f"bin-images/{name}.jpg"] = "is not a plain name"
    outside.mkdir()
    (outside / "secret.json").write_bytes(good_meta)
    (outside / "secret.jpg").write_bytes(good_photo)
    (raw / "metadata" / "77777.json").symlink_to(outside / "secret.json")
    (raw / "bin-images" / "77777.jpg").symlink_to(outside / "secret.jpg")
    reasons["metadata/77777.json"] = "outside the source folder: not followed"
    reasons["bin-images/77777.jpg"] = "outside the source folder: not followed"
    # a symlink that stays inside the source folder is an ordinary file
    (raw / "spare").mkdir()
    shutil.move(raw / "bin-images" / f"{ids[-2]}.jpg", raw / "spare" / f"{ids[-2]}.jpg")
    (raw / "bin-images" / f"{ids[-2]}.jpg").symlink_to(Path("..") / "spare" / f"{ids[-2]}.jpg")
    return reasons


def test_build_reports_each_hostile_file_and_builds_every_good_bin(tmp_path, synth_raw):
    raw, out = tmp_path / "raw", tmp_path / "ds"
    ids = _small_raw(synth_raw, raw)
    reasons = _plant_hostile_files(raw, ids, tmp_path / "outside")

    proc = run_python(["-m", "data_tools", "build", "--source", str(raw), "--out", str(out)], ROOT)

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = {p.file: p.reason for p in read_report(out / "errors.csv")}
    for rel, fragment in reasons.items():
        assert fragment in report.get(rel, ""), (rel, report.get(rel))
    good = set(ids[len(HOSTILE_METADATA):])
    expected = {b for b in good if json.loads((raw / "metadata" / f"{b}.json").read_text())["EXPECTED_QUANTITY"] <= 5}
    assert {r["bin_id"] for r in read_manifest(out / "manifest.csv")} == expected
    assert not list(out.rglob("secret*")) and not list(out.rglob("77777*"))  # nothing from outside was copied


def test_import_folder_reports_each_hostile_file_and_imports_every_good_bin(tmp_path, synth_raw):
    raw = tmp_path / "raw"
    ids = _small_raw(synth_raw, raw)
    reasons = _plant_hostile_files(raw, ids, tmp_path / "outside")
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'binaudit.db'}")
    env = subprocess_env(BINAUDIT_WORKSPACE=str(ws.root), BINAUDIT_DATABASE_URL=ws.database_url,
                         BINAUDIT_SECRETS=str(tmp_path / "none.toml"))

    proc = run_python(["-m", "audit", "import", "--folder", str(raw)], ROOT, env)

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    good = ids[len(HOSTILE_METADATA):]
    assert proc.stdout.startswith(f"{len(good)} added")
    with ws.open().connect() as conn:
        stored = set(conn.execute(sa.select(db.bins.c.id)).scalars())
        problems = {f: r for f, r in conn.execute(sa.select(db.problems.c.file, db.problems.c.reason))}
    assert stored == set(good)
    for rel, fragment in reasons.items():
        assert fragment in problems.get(rel, ""), (rel, problems.get(rel))


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "two\nlines", "<script>", "=1+1", "-rf", "a..b", "x" * 101,
                                  "café", " 00042 ", "00042\x00"])
def test_the_bin_id_rule_refuses_what_is_not_a_plain_name(name):
    assert not is_safe_bin_id(name)
    if name.strip().isdigit():  # normalize_bin_id strips blanks around ABID ids
        return
    with pytest.raises(ValueError, match="not a usable bin id"):
        normalize_bin_id(name)


def test_the_bin_id_rule_keeps_real_ids():
    for name in ("00042", "535234", "shelf-photo-1a2b3c4d", "B07.X_1", "x" * 100):
        assert is_safe_bin_id(name) and normalize_bin_id(name) == name
    assert normalize_bin_id("42") == "00042"


@pytest.fixture
def app_ws(seeded_workspace, tmp_path, monkeypatch) -> Workspace:
    return seeded_copy(seeded_workspace, tmp_path, monkeypatch)


def test_upload_page_names_each_hostile_metadata_file_and_scores_the_rest(app_ws):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "dashboard.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/upload.py").run()
    files = []
    for i, data in enumerate(HOSTILE_METADATA.values()):
        files += [(f"8800{i}.jpg", jpeg_bytes(90, 70), "image/jpeg"), (f"8800{i}.json", data, "application/json")]
    files += [("88009.jpg", jpeg_bytes(90, 70), "image/jpeg"),
              ("88009.json", b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0}', "application/json")]
    at.file_uploader[0].set_value(files).run()

    assert not at.exception, [e.value for e in at.exception]
    # as the analyst reads them: the page escapes Markdown in file names and messages (app/ui/text.plain)
    errors = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]
    for i in range(len(HOSTILE_METADATA)):
        assert any(e.startswith(f"metadata for 8800{i}.jpg: malformed JSON") for e in errors), errors
    assert [m.value for m in at.metric if m.label == "Expected count"] == ["0"]  # the good photo was scored
    with app_ws.open().connect() as conn:
        scored = set(conn.execute(sa.select(db.predictions.c.bin_id).where(db.predictions.c.bin_id.like("8800%")))
                     .scalars())
    assert scored == {"88009"}


def test_an_unreadable_metadata_file_is_a_problem_not_a_crash(tmp_path):
    from data_tools.metadata import read_metadata_file

    (tmp_path / "00001.json").mkdir()  # reading a folder fails like an unreadable file
    result = read_metadata_file(tmp_path / "00001.json", "00001", "metadata/00001.json")
    assert result.record is None
    assert [(p.file, p.reason.startswith("unreadable file")) for p in result.problems] == [("metadata/00001.json", True)]


def test_a_folder_symlinked_out_of_the_source_is_one_problem_not_followed(tmp_path, synth_raw):
    from data_tools.layout import scan_local

    raw = tmp_path / "raw"
    _small_raw(synth_raw, raw, n=3)
    shutil.move(raw / "bin-images", tmp_path / "elsewhere")
    (raw / "bin-images").symlink_to(tmp_path / "elsewhere")
    pairing = scan_local(raw)
    assert pairing.paired == [] and len(pairing.metadata_only) == 3
    assert [(p.file, "outside the source folder" in p.reason) for p in pairing.refused] == [("bin-images", True)]


@pytest.mark.parametrize(("text", "said"), [("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                            ("[" + "9" * 5000 + "]", "Exceeds the limit (4300 digits)")])
def test_an_id_list_that_breaks_the_json_parser_is_one_error(text, said):
    from data_tools.id_lists import parse_id_list
    from data_tools.problems import DataToolsError

    with pytest.raises(DataToolsError, match=re.escape(said)):
        parse_id_list(text, "ids.json")
