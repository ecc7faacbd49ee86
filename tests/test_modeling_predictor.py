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


LABELS = ["0", "1", "2", "3", "4", "5", "6+"]  # tiny_dataset has bins above 5: its model has the open class 6+


def _count(label: str) -> int:
    """A label as its (truncated) count: "6+" counts as 6."""
    return int(label.rstrip("+"))


def test_predict_images_gives_probability_rows(predictor):
    assert predictor.spec.top_class == "open" and list(predictor.spec.classes.labels) == LABELS
    probs = predictor.predict_images([Image.new("RGB", (90, 60), (120, 80, 40)), Image.new("RGB", (40, 80))])
    assert probs.shape == (2, 7)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert predictor.predict_images([]).shape == (0, 7)


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
    assert len(good) == 6 and all(r.probs.shape == (7,) for r in good)
    # batched scoring equals scoring each decoded photo on its own
    alone = predictor.predict_images([predictor.decode(good[0].path)])[0]
    assert np.allclose(good[0].probs, alone, atol=1e-5)


def test_predict_bytes_is_the_endpoint_dict(predictor):
    answer = predictor.predict_bytes(jpeg_bytes(100, 80), expected_count=1)
    assert set(answer) == {"predicted_count", "predicted_label", "probabilities", "counts", "labels", "top_class",
                           "expected_count", "mismatch_probability", "beyond_range"}
    assert answer["mismatch_probability"] == pytest.approx(1 - answer["probabilities"][1])
    # the open class has no exact count: null in `counts`, "6+" in `labels`, never 6
    assert answer["counts"] == [0, 1, 2, 3, 4, 5, None] and answer["labels"] == LABELS
    assert answer["predicted_label"] == LABELS[int(np.argmax(answer["probabilities"]))]
    above = predictor.predict_bytes(jpeg_bytes(100, 80), expected_count=11)
    assert above["beyond_range"] is False and above["mismatch_probability"] == pytest.approx(1 - above["probabilities"][6])


def test_predict_command_writes_a_csv_and_reports_failures(tiny_model_dir, photo_folder, tmp_path):
    out = tmp_path / "preds.csv"
    result = run_python(["-m", "modeling", "predict", "--model-dir", str(tiny_model_dir), str(photo_folder),
                         "--out", str(out), "--workers", "1", "--no-progress"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # partial: one photo could not be decoded
    assert "scored 6 photos, 1 failed" in result.stdout and "broken.jpg" in result.stderr
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "bin_id", "predicted_count", *(f"p{label}" for label in LABELS), "error"]
    broken = next(r for r in rows if r["bin_id"] == "broken")
    assert broken["error"] and broken["predicted_count"] == ""
    scored = [r for r in rows if not r["error"]]
    assert len(scored) == 6
    assert all(r["predicted_count"] == LABELS[int(np.argmax([float(r[f"p{label}"]) for label in LABELS]))]
               for r in scored)


@pytest.mark.slow
def test_evaluate_command_writes_metrics_and_predictions(tiny_model_dir, tiny_dataset, tmp_path):
    out = tmp_path / "eval"
    result = run_python(["-m", "modeling", "evaluate", "--model-dir", str(tiny_model_dir), "--data",
                         str(tiny_dataset / "test"), "--out", str(out), "--workers", "0", "--no-progress"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RMSE and MAE are over counts truncated at 6" in result.stdout and "\n   6+ " in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["bin_id", "true_count", "predicted_count", "expected_count_decoded"]
    n_test = sum(1 for _ in (tiny_dataset / "test").glob("*/*.jpg"))
    assert len(rows) == metrics["n_images"] == metrics["n_scored"] == n_test
    assert {r["true_count"] for r in rows} <= set(LABELS) and "6" not in {r["predicted_count"] for r in rows}
    true = [_count(r["true_count"]) for r in rows]
    assert metrics["argmax"]["accuracy"] == pytest.approx(accuracy(true, [_count(r["predicted_count"]) for r in rows]))
    assert metrics["expected"]["accuracy"] == pytest.approx(
        accuracy(true, [_count(r["expected_count_decoded"]) for r in rows]))
    assert metrics["argmax"]["labels"] == LABELS and len(metrics["argmax"]["confusion_matrix"]) == 7
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


def test_a_closed_model_evaluated_on_an_open_folder_is_charged_for_the_6_plus_bins(tiny_dataset, tmp_path):
    """Promotion compares an open candidate with a closed active model on the same folder: the closed model's best
    guess for a bin of 6+ is at most 5, so those bins count against it, in a matrix with the 6+ row and column."""
    from modeling.evaluate import evaluate_folder
    from tests.modeling_fixtures import closed_model_dir

    closed = Predictor.load(closed_model_dir(tmp_path / "closed"), precision="fp32")
    metrics, rows = evaluate_folder(closed, tiny_dataset / "train", batch_size=32, workers=0, progress=False)
    summary = metrics["argmax"]
    assert metrics["data_has_open_class"] and summary["labels"] == LABELS and len(summary["confusion_matrix"]) == 7
    top = summary["per_class"][6]
    assert top["label"] == "6+" and top["n"] > 0 and top["accuracy"] == 0.0
    assert [col[6] for col in summary["confusion_matrix"]] == [0] * 7  # it never predicts 6+
    assert {r[1] for r in rows} >= {"6+"} and "6+" not in {r[2] for r in rows}
