"""The batched predictor and the `python -m modeling evaluate|predict` commands."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from modeling.cli import build_parser, main
from modeling.metrics import accuracy
from modeling.predictor import Predictor, expand_paths
from tests.modeling_fixtures import jpeg_bytes, png_bytes, run_python, tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory):
    return tiny_model(tiny_dataset, tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor.load(tiny_model_dir, precision="fp32")


@pytest.fixture()
def photo_folder(tmp_path, tiny_dataset):
    """Five good photos in nested folders, a corrupt one in the middle, a PNG and a text file."""
    good = sorted((tiny_dataset / "test").glob("*/*.jpg"))[:5]
    (tmp_path / "photos" / "deep").mkdir(parents=True)
    for i, path in enumerate(good):
        shutil.copy(path, tmp_path / "photos" / ("deep" if i % 2 else ".") / path.name)
    (tmp_path / "photos" / "deep" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "photos" / "scan.PNG").write_bytes(png_bytes(40, 40, "RGB"))
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    return tmp_path / "photos"


def test_predict_images_gives_probability_rows(predictor):
    probs = predictor.predict_images([Image.new("RGB", (90, 60), (120, 80, 40)), Image.new("RGB", (40, 80))])
    assert probs.shape == (2, 6)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert predictor.predict_images([]).shape == (0, 6)


def test_expand_paths_recurses_for_images_only(photo_folder):
    found = expand_paths([photo_folder])
    assert len(found) == 7 and not any(p.endswith(".txt") for p in found)
    assert found == sorted(found)
    assert expand_paths([photo_folder / "scan.PNG", photo_folder / "nope.jpg"])[1].endswith("nope.jpg")


@pytest.mark.parametrize("workers", [0, 1])
def test_predict_paths_keeps_order_and_skips_bad_photos(predictor, photo_folder, workers):
    paths = expand_paths([photo_folder]) + [str(photo_folder / "missing.jpg")]
    results = list(predictor.predict_paths(paths, batch_size=3, workers=workers, progress=False))
    assert [r.path for r in results] == paths
    failed = {r.path.rsplit("/", 1)[-1]: r.error for r in results if r.error}
    assert set(failed) == {"broken.jpg", "missing.jpg"}
    assert "file not found" in failed["missing.jpg"]
    good = [r for r in results if r.error is None]
    assert len(good) == 6 and all(r.probs.shape == (6,) for r in good)
    # batched scoring equals scoring each decoded photo on its own
    alone = predictor.predict_images([predictor.decode(good[0].path)])[0]
    assert np.allclose(good[0].probs, alone, atol=1e-5)


def test_predict_bytes_is_the_endpoint_dict(predictor):
    answer = predictor.predict_bytes(jpeg_bytes(100, 80), expected_count=1)
    assert set(answer) == {"predicted_count", "probabilities", "counts", "expected_count", "mismatch_probability"}
    assert answer["mismatch_probability"] == pytest.approx(1 - answer["probabilities"][1])


def test_predict_command_writes_a_csv_and_reports_failures(tiny_model_dir, photo_folder, tmp_path):
    out = tmp_path / "preds.csv"
    result = run_python(["-m", "modeling", "predict", "--model-dir", str(tiny_model_dir), str(photo_folder),
                         "--out", str(out), "--workers", "1", "--no-progress"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # partial: one photo could not be decoded
    assert "scored 6 photos, 1 failed" in result.stdout and "broken.jpg" in result.stderr
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "bin_id", "predicted_count", "p0", "p1", "p2", "p3", "p4", "p5", "error"]
    broken = next(r for r in rows if r["bin_id"] == "broken")
    assert broken["error"] and broken["predicted_count"] == ""
    scored = [r for r in rows if not r["error"]]
    assert len(scored) == 6
    assert all(int(r["predicted_count"]) == int(np.argmax([float(r[f"p{c}"]) for c in range(6)])) for r in scored)


@pytest.mark.slow
def test_evaluate_command_writes_metrics_and_predictions(tiny_model_dir, tiny_dataset, tmp_path):
    out = tmp_path / "eval"
    result = run_python(["-m", "modeling", "evaluate", "--model-dir", str(tiny_model_dir), "--data",
                         str(tiny_dataset / "test"), "--out", str(out), "--workers", "0", "--no-progress"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["bin_id", "true_count", "predicted_count", "expected_count_decoded"]
    n_test = sum(1 for _ in (tiny_dataset / "test").glob("*/*.jpg"))
    assert len(rows) == metrics["n_images"] == metrics["n_scored"] == n_test
    true = [int(r["true_count"]) for r in rows]
    assert metrics["argmax"]["accuracy"] == pytest.approx(accuracy(true, [int(r["predicted_count"]) for r in rows]))
    assert metrics["expected"]["accuracy"] == pytest.approx(
        accuracy(true, [int(r["expected_count_decoded"]) for r in rows]))
    # the model folder's own test evaluation (from training) agrees with the command's
    trained = json.loads((tiny_model_dir / "metrics.json").read_text())["test"]
    assert trained["accuracy"] == pytest.approx(metrics["argmax"]["accuracy"])
    assert trained["confusion_matrix"] == metrics["argmax"]["confusion_matrix"]


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "--model-dir", "{tmp}/none", "--data", "{tmp}"], "error: no model_config.json in"),
    (["evaluate", "--model-dir", "{model}", "--data", "{tmp}/missing"], "error: data folder not found"),
    (["predict", "--model-dir", "{model}", "{tmp}/empty", "--out", "{tmp}/p.csv"], "error: no images"),
])
def test_cli_errors_are_one_line_without_traceback(tiny_model_dir, tmp_path, argv, message, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, model=tiny_model_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_modeling_cli_holds_the_model_commands_only():
    """Jobs are `python -m jobs`: `python -m modeling train` cannot be mistaken for `python -m modeling.train`."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"evaluate", "predict", "check"}
