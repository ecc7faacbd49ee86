"""Scoring paths: ONNX export, the int8 copy and its agreement check, `--runtime`/`--precision`, and a machine
without onnxruntime."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from modeling.onnx_export import FP32_FILE, INT8_FILE
from modeling.path_check import agreement
from modeling.predictor import Predictor, expand_paths
from modeling.scoring_paths import RECORD_FILE, ScoringPathError, choose_path, read_record
from tests.modeling_fixtures import REPO, run_python, subprocess_env, train_cli_args

pytestmark = pytest.mark.xdist_group("scoring_paths")  # one worker trains and checks the model below

# A gently trained tiny model (small steps, so BatchNorm's running statistics settle): int8 agrees with it, as it
# does with a properly trained model. The 1-epoch `tiny_model` at the default rate is noise that int8 cannot follow.
GENTLE = ("--lr", "0.0001", "--batch-size", "4")
TINY_BAR = 0.5


@pytest.fixture(scope="session")
def checked_model(tiny_dataset, tmp_path_factory):
    """A tiny model trained gently, with model.onnx, model.int8.onnx and its check on this machine (read-only)."""
    from modeling.cli import main
    from modeling.train import parse_args, run_training

    model_dir = tmp_path_factory.mktemp("checked") / "model"
    run_training(parse_args(train_cli_args(tiny_dataset, model_dir, *GENTLE))[0])
    # its own train/ and val/; a lower bar than the default 99%: on 13 photos one flipped near-tie is 92%, and this
    # 1-epoch model's probabilities are nearly flat (tests/test_modeling_scoring_paths.py checks the bar itself)
    assert main(["check", "--model-dir", str(model_dir), "--workers", "0", "--min-agreement", str(TINY_BAR)]) == 0
    return model_dir


@pytest.fixture()
def own_copy(checked_model, tmp_path):
    return shutil.copytree(checked_model, tmp_path / "model")


def test_check_exports_both_copies_and_records_every_path(checked_model, tiny_dataset):
    entry = read_record(checked_model)["checks"][-1]
    paths = entry["paths"]
    assert {"torch fp32", "onnx fp32", "onnx int8"} <= set(paths)
    assert entry["photos"] == len(expand_paths([tiny_dataset / "val"]))
    assert paths["onnx fp32"]["count_agreement"] == 1.0 and paths["onnx fp32"]["max_mismatch_diff"] < 1e-4
    assert entry["criteria"]["min_count_agreement"] == TINY_BAR
    assert paths["onnx int8"]["passed"], paths["onnx int8"]["why"]
    assert all(p["images_per_s"] > 0 for p in paths.values())
    train_photos = len(expand_paths([tiny_dataset / "train"]))  # fewer than 300: all of them calibrate
    assert entry["calibration"] == {"train": str(tiny_dataset / "train"), "photos": train_photos}

    graph = onnx.load(str(checked_model / FP32_FILE)).graph
    (inp,) = graph.input
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8 and dims[1:] == [32, 32, 3]
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]  # folded into the convolutions
    int8 = onnx.load(str(checked_model / INT8_FILE)).graph.node
    dequantized = {out for n in int8 if n.op_type == "DequantizeLinear" for out in n.output}
    convs = [n for n in int8 if n.op_type == "Conv"]
    assert convs[0].input[1] not in dequantized  # the first convolution keeps fp32 weights
    assert all(c.input[1] in dequantized for c in convs[1:])
    (classifier,) = [n for n in int8 if n.op_type in ("Gemm", "MatMul")]
    assert not set(classifier.input) & dequantized  # so does the classifier, and its input is fp32


def test_onnx_paths_score_like_torch_fp32(checked_model, tiny_dataset):
    photos = expand_paths([tiny_dataset / "test"])
    exact = np.stack([r.probs for r in Predictor.load(checked_model, precision="fp32", runtime="torch")
                      .predict_paths(photos, workers=0, progress=False)])
    onnx_fp32 = Predictor.load(checked_model, precision="fp32", runtime="onnx")
    int8 = Predictor.load(checked_model, precision="int8", runtime="onnx")
    assert (onnx_fp32.runtime, int8.precision) == ("onnx", "int8")
    same = np.stack([r.probs for r in onnx_fp32.predict_paths(photos, workers=0, progress=False)])
    quantised = np.stack([r.probs for r in int8.predict_paths(photos, workers=0, progress=False)])
    assert np.abs(same - exact).max() < 1e-4
    # the tiny model's near-ties flip under int8: it follows torch at the bar its check passed (TINY_BAR), with small
    # probability moves; a trained model's figures are in docs/benchmarks.md
    assert (quantised.argmax(1) == exact.argmax(1)).mean() >= TINY_BAR and np.abs(quantised - exact).max() < 0.1
    # idle ONNX Runtime threads sleep: spinning ones starve the decoding workers (docs/benchmarks.md, quiet reruns)
    for predictor in (onnx_fp32, int8):
        assert predictor.session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning") == "0"


def test_auto_picks_the_fastest_path_that_passed_here(own_copy):
    paths = read_record(own_copy)["checks"][-1]["paths"]
    fastest = max((p["images_per_s"], name) for name, p in paths.items() if p["passed"])[1]
    assert Predictor.load(own_copy).path.startswith(fastest + " (auto: ")
    record = read_record(own_copy)
    for name, result in record["checks"][-1]["paths"].items():  # int8 failed, and is by far the fastest
        result["images_per_s"] = 1e6 if name == "onnx int8" else 1.0
    record["checks"][-1]["paths"]["onnx int8"].update(passed=False, why="counts agree on 97.0% < 99%")
    (own_copy / RECORD_FILE).write_text(json.dumps(record))
    chosen = choose_path(own_copy)
    assert chosen.precision != "int8" and "failed their check: onnx int8" in chosen.reason
    with pytest.raises(ScoringPathError, match=r"failed its agreement check \(counts agree on 97.0% < 99%\); "
                                               r"this model keeps fp32"):
        choose_path(own_copy, "onnx", "int8")


def test_a_model_never_checked_here_scores_torch_fp32_and_says_how_to_check(own_copy):
    (own_copy / RECORD_FILE).unlink()
    chosen = choose_path(own_copy)
    assert chosen.name == "torch fp32" and "python -m modeling check" in chosen.reason
    with pytest.raises(ScoringPathError, match="never checked"):
        choose_path(own_copy, "onnx", "int8")
    assert choose_path(own_copy, "onnx", "auto").name == "onnx fp32"  # exact too; exported on first use


@pytest.mark.parametrize("runtime, precision, message", [
    ("torch", "int8", "int8 scoring runs on ONNX Runtime"),
    ("onnx", "bf16", "bf16 scoring runs on torch"),
    ("tensorrt", "fp32", "unknown runtime"),
])
def test_impossible_paths_say_why(own_copy, runtime, precision, message):
    with pytest.raises(ScoringPathError, match=message):
        choose_path(own_copy, runtime, precision)


def test_agreement_passes_at_99_percent_and_names_what_failed():
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(6), size=200)
    labels = rng.integers(0, 6, size=200)
    assert agreement(reference, reference + 0.001, labels)["passed"]
    flipped = reference.copy()
    flipped[:3] = flipped[:3, ::-1]  # 3 of 200 photos get another count: 98.5%
    result = agreement(reference, flipped, labels)
    assert not result["passed"] and "counts agree on 98.5% < 99%" in result["why"]
    assert result["photos_disagreeing"] == int((reference[:3].argmax(1) != flipped[:3].argmax(1)).sum())
    moved = reference.copy()
    moved[:3, :] += 0.05  # p(e) of 3 photos moves by 0.05: within 0.02 on 98.5%
    result = agreement(reference, moved, labels)
    assert not result["passed"] and result["why"] == "mismatch probability within 0.02 on 98.5% < 99% of photos"
    assert agreement(reference, np.vstack([moved[:2], reference[2:]]), labels)["passed"]  # 99.0%


# ---------------------------------------------------------------- a machine without onnxruntime

BLOCK_ONNXRUNTIME = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys

    class Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            raise ImportError("No module named 'onnxruntime'")

        def exec_module(self, module):
            raise ImportError("No module named 'onnxruntime'")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "onnxruntime":
                return importlib.machinery.ModuleSpec(name, Refuse())
            return None

    sys.meta_path.insert(0, Blocker())
""")


def test_without_onnxruntime_scoring_falls_back_to_torch_and_says_so_once(checked_model, tiny_dataset, tmp_path):
    photo = expand_paths([tiny_dataset / "test"])[0]
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_ONNXRUNTIME)
    code = textwrap.dedent(f"""
        from modeling.cli import main
        for run in (1, 2):
            assert main(["predict", "--model-dir", {str(checked_model)!r}, {photo!r}, "--workers", "0",
                         "--no-progress", "--out", {str(tmp_path / "p.csv")!r}]) == 0
        assert main(["predict", "--model-dir", {str(checked_model)!r}, {photo!r}, "--runtime", "onnx",
                     "--out", {str(tmp_path / "q.csv")!r}]) == 2
    """)
    env = subprocess_env(PYTHONPATH=f"{tmp_path / 'site'}:{REPO}")
    result = run_python(["-c", code], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("onnxruntime is not installed: scoring with torch") == 1
    # the checked onnx paths are out of reach: torch, fp32 or bf16 (whichever passed and ran faster at check time)
    chosen = [line for line in result.stderr.splitlines() if line.startswith("scoring with ")]
    assert len(chosen) == 2 and all(re.match(r"scoring with torch (fp32|bf16) \(auto: ", c) for c in chosen), chosen
    assert "error: onnxruntime is not installed, so the ONNX paths are not available" in result.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[2].isdigit()


# ---------------------------------------------------------------- the commands that score

def test_every_scoring_command_takes_runtime_and_precision():
    from audit.cli import get_parser as audit_parser
    from jobs.cli import build_parser as jobs_parser
    from modeling.cli import build_parser as modeling_parser

    parsed = [
        modeling_parser().parse_args(["predict", "--model-dir", "m", "x.jpg", "--out", "o.csv", *flags])
        for flags in (["--runtime", "onnx", "--precision", "int8"],)
    ] + [
        modeling_parser().parse_args(["evaluate", "--model-dir", "m", "--data", "d", "--runtime", "onnx",
                                      "--precision", "int8"]),
        audit_parser().parse_args(["score", "--runtime", "onnx", "--precision", "int8"]),
        jobs_parser().parse_args(["deploy", "v1", "--runtime", "onnx", "--precision", "int8"]),
        jobs_parser().parse_args(["transform", "--input", "d", "--runtime", "onnx", "--precision", "int8"]),
    ]
    assert all((a.runtime, a.precision) == ("onnx", "int8") for a in parsed)
    assert audit_parser().parse_args(["score"]).runtime == "auto"
    with pytest.raises(SystemExit):
        audit_parser().parse_args(["score", "--precision", "int4"])


def test_local_endpoint_and_transform_score_on_the_onnx_path(checked_model, tiny_dataset, tmp_path):
    from jobs.local.endpoint import load_model
    from jobs.local.transform import transform_folder
    from modeling.inference import input_fn, predict_fn

    photo = Path(expand_paths([tiny_dataset / "test"])[0]).read_bytes()
    served = load_model(checked_model, runtime="onnx", precision="fp32")
    answer = predict_fn(input_fn(photo, "image/jpeg"), served)
    exact = Predictor.load(checked_model, precision="fp32", runtime="torch").predict_bytes(photo)
    assert served.path.startswith("onnx fp32") and answer["predicted_count"] == exact["predicted_count"]
    assert np.allclose(answer["probabilities"], exact["probabilities"], atol=1e-4)
    out = transform_folder(checked_model, tiny_dataset / "test", tmp_path / "out.jsonl", runtime="onnx",
                           precision="int8")
    assert out["scoring_path"].startswith("onnx int8") and out["n_scored"] == out["n_images"] > 0


# ---------------------------------------------------------------- acceptance on real ABID photos

def test_audit_score_on_real_abid_photos_onnx_agrees_with_torch(checked_model, abid_sample, tmp_path, monkeypatch,
                                                                capsys):
    """`audit score` on the 100 real bins: ONNX fp32 gives exactly torch fp32's counts; int8 follows closely.

    The tiny model's probabilities are nearly flat (its margins between counts are hundredths), so int8 agrees on
    75-96% here, depending on the tiny training set; a trained model agrees on 99%+ (docs/benchmarks.md has the
    demo-size model's figures)."""
    import pandas as pd
    import sqlalchemy as sa

    from audit.cli import main
    from binaudit import db
    from binaudit.workspace import Workspace
    from modeling.registry import register_model

    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'binaudit.db'}")
    engine = ws.open()
    versions = [register_model(engine, checked_model, ws.models_dir).name for _ in range(3)]
    monkeypatch.setenv("BINAUDIT_WORKSPACE", str(ws.root))
    monkeypatch.setenv("BINAUDIT_DATABASE_URL", ws.database_url)
    monkeypatch.setenv("BINAUDIT_SECRETS", str(tmp_path / "no-secrets.toml"))
    assert main(["import", "--folder", str(abid_sample)]) == 0
    for version, (runtime, precision) in zip(versions, [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")],
                                             strict=True):
        assert main(["score", "--model", version, "--runtime", runtime, "--precision", precision,
                     "--workers", "0"]) == 0
        assert f"model {version}: scoring with {runtime} {precision} (as asked)" in capsys.readouterr().err
    with engine.connect() as conn:
        rows = pd.DataFrame(conn.execute(sa.select(db.predictions.c.bin_id, db.predictions.c.model_version_id,
                                                   db.predictions.c.predicted_count)).mappings().all())
    counts = rows.pivot(index="bin_id", columns="model_version_id", values="predicted_count")
    torch_fp32, onnx_fp32, onnx_int8 = (counts[c] for c in sorted(counts.columns))
    assert len(counts) == 100 and not counts.isna().any().any()
    assert (onnx_fp32 == torch_fp32).all()
    assert (onnx_int8 == torch_fp32).mean() >= TINY_BAR  # see the docstring



def test_a_path_passes_only_at_or_above_the_agreement_bar():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    flipped = reference.copy()
    flipped[2] = [0.4, 0.6]  # one photo of four changes its count, and its mismatch probability by 0.2
    labels = np.array([0, 1, 0, 1])
    assert agreement(reference, reference, labels)["passed"]
    refused = agreement(reference, flipped, labels)  # the default bar, 99%
    assert not refused["passed"] and "counts agree on 75.0% < 99%" in refused["why"]
    assert refused["photos_disagreeing"] == 1
    assert agreement(reference, flipped, labels, min_agreement=0.75)["passed"]
    assert not agreement(reference, flipped, labels, min_agreement=0.76)["passed"]
