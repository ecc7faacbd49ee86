"""Model construction, the class -> count check on load, pretrained weights without internet, and the losses."""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

from modeling.artifacts import CONFIG_FILE, MODEL_FILE, load_model_dir, save_model
from modeling.losses import OrdinalEMDLoss, squared_emd
from modeling.model import ModelConfigError, ModelSpec, PretrainedWeightsError, build_model, create_model
from modeling.preprocessing import PreprocessConfig
from tests.modeling_fixtures import run_python, subprocess_env


@pytest.mark.parametrize(("arch", "blocks"), [("resnet18", 2), ("resnet34", 3), ("resnet50", 3)])
def test_head_has_one_class_per_count(arch, blocks):
    model = build_model(arch, 6)
    assert model.fc.out_features == 6
    assert len(model.layer1) == blocks


def test_spec_insists_that_class_index_is_the_count():
    spec = ModelSpec("resnet18", 5, PreprocessConfig(64))
    assert spec.to_dict()["class_to_count"] == [0, 1, 2, 3, 4, 5] and spec.num_classes == 6
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ModelConfigError, match="class index == item count"):
        ModelSpec.from_dict({**spec.to_dict(), "class_to_count": [1, 2, 3, 4, 5, 6]})
    with pytest.raises(ModelConfigError, match="num_classes=5"):
        ModelSpec.from_dict({**spec.to_dict(), "num_classes": 5})
    with pytest.raises(ModelConfigError, match="only resnet18, resnet34, resnet50"):
        ModelSpec("vgg16", 5, PreprocessConfig(64))


def test_an_open_spec_says_so_explicitly_and_round_trips():
    spec = ModelSpec("resnet18", 5, PreprocessConfig(64), top_class="open")
    config = spec.to_dict()
    assert config["top_class"] == "open" and config["max_count"] == 5 and config["num_classes"] == 7
    assert config["class_to_count"] == [0, 1, 2, 3, 4, 5, 6]
    assert config["class_labels"] == ["0", "1", "2", "3", "4", "5", "6+"]
    assert ModelSpec.from_dict(config) == spec
    assert ModelSpec("resnet18", 5, PreprocessConfig(64)).to_dict()["top_class"] == "closed"
    with pytest.raises(ModelConfigError, match="class_labels"):
        ModelSpec.from_dict({**config, "class_labels": [*config["class_labels"][:-1], "6"]})
    with pytest.raises(ModelConfigError, match="top_class"):
        ModelSpec.from_dict({**config, "top_class": "half-open"})


def test_a_model_saved_before_the_open_class_loads_and_scores_as_before(tmp_path):
    """An old model_config.json has no top_class and no class_labels: it is a closed 0..5 model, as it was."""
    model = build_model("resnet18", 6)
    save_model(tmp_path / "old", model.state_dict(), ModelSpec("resnet18", 5, PreprocessConfig(32)))
    config = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    for key in ("top_class", "class_labels"):
        del config[key]
    (tmp_path / "old" / CONFIG_FILE).write_text(json.dumps(config))
    from modeling.serving import ScoringModel
    from tests.modeling_fixtures import jpeg_bytes

    scorer = ScoringModel.load(tmp_path / "old")
    assert scorer.spec.top_class == "closed" and scorer.spec.classes.labels == tuple("012345")
    answer = scorer.predict_bytes(jpeg_bytes(), expected_count=3)
    assert answer["counts"] == [0, 1, 2, 3, 4, 5] and len(answer["probabilities"]) == 6
    assert answer["predicted_label"] == str(answer["predicted_count"])
    assert answer["mismatch_probability"] == pytest.approx(1 - answer["probabilities"][3])
    beyond = scorer.predict_bytes(jpeg_bytes(), expected_count=8)
    assert beyond["mismatch_probability"] is None and beyond["beyond_range"] is True and "0..5" in beyond["note"]


def test_load_checks_the_head_against_class_to_count(tmp_path):
    spec = ModelSpec("resnet18", 5, PreprocessConfig(32))
    save_model(tmp_path / "ok", build_model("resnet18", 6).state_dict(), spec)
    model, loaded = load_model_dir(tmp_path / "ok")
    assert loaded == spec and not model.training

    shutil.copytree(tmp_path / "ok", tmp_path / "bad")
    config = json.loads((tmp_path / "bad" / CONFIG_FILE).read_text())
    config.update(max_count=4, num_classes=5, class_to_count=[0, 1, 2, 3, 4], class_labels=list("01234"))
    (tmp_path / "bad" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="6-class head"):
        load_model_dir(tmp_path / "bad")

    (tmp_path / "ok" / MODEL_FILE).unlink()
    with pytest.raises(ModelConfigError, match="no model.pth"):
        load_model_dir(tmp_path / "ok")


def _offline(*args, **kwargs):
    raise urllib.error.URLError("no network in tests")


def test_pretrained_imagenet_offline_names_every_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(PretrainedWeightsError) as info:
        create_model("resnet18", 6, pretrained="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "empty-torch-home") in message
    assert "connect to the internet once" in message
    assert "--weights-path FILE" in message and "--pretrained none" in message


def test_pretrained_imagenet_offline_from_the_cli_is_one_error_line(tiny_dataset, tmp_path):
    code = (
        "import sys, urllib.error, torch.hub\n"
        "def offline(*a, **k): raise urllib.error.URLError('no network in tests')\n"
        "torch.hub.load_state_dict_from_url = offline\n"
        "from modeling.train import main\n"
        "main(sys.argv[1:])\n"
    )
    result = run_python(
        ["-c", code, "--train", str(tiny_dataset / "train"), "--val", str(tiny_dataset / "val"),
         "--model-dir", str(tmp_path / "m"), "--pretrained", "imagenet", "--image-size", "32", "--workers", "0"],
        cwd=tmp_path, env=subprocess_env(TORCH_HOME=str(tmp_path / "torch-home")),
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --pretrained imagenet") and "--weights-path FILE" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: no model folder, no output copies, no partial weights


def test_weights_path_loads_an_imagenet_shaped_state_dict(tmp_path):
    source = build_model("resnet18", 1000)  # ImageNet's 1000-class head is left out, the rest loaded
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    model = create_model("resnet18", 6, weights_path=str(tmp_path / "imagenet.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.out_features == 6


def test_weights_path_errors_are_clear(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        create_model("resnet18", 6, weights_path=str(tmp_path / "missing.pth"))
    torch.save(build_model("resnet50", 6).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        create_model("resnet18", 6, weights_path=str(tmp_path / "r50.pth"))


def test_squared_emd_grows_with_the_distance_of_the_mistake():
    classes = torch.arange(6)
    target = torch.tensor([0])
    peaked = [torch.full((1, 6), -20.0).index_fill_(1, torch.tensor([k]), 20.0) for k in range(6)]
    emd = [float(squared_emd(logits, target, classes)) for logits in peaked]
    assert emd[0] == pytest.approx(0.0, abs=1e-6)
    assert emd == pytest.approx([0, 1, 2, 3, 4, 5], abs=1e-5)  # |predicted - true| for peaked predictions
    ce = [float(torch.nn.functional.cross_entropy(logits, target)) for logits in peaked[1:]]
    assert max(ce) == pytest.approx(min(ce))  # cross-entropy alone cannot tell a near miss from a far one


def test_ordinal_loss_is_cross_entropy_plus_weighted_emd():
    torch.manual_seed(0)
    logits, target = torch.randn(8, 6), torch.randint(0, 6, (8,))
    ce = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    emd = squared_emd(logits, target, torch.arange(6))
    loss = OrdinalEMDLoss(6, label_smoothing=0.1, emd_weight=0.5)(logits, target)
    assert float(loss) == pytest.approx(float(ce + 0.5 * emd))


@pytest.mark.parametrize(("change", "said"), [
    ({"image_size": 100_000}, "image_size must be from 16 to 1024 px, got 100000"),
    ({"image_size": 1e400}, "model config is invalid"),
    ({"max_count": 10**9, "num_classes": 10**9 + 1}, "max_count must be from 1 to 1000, got 1000000000"),
    ({"arch": "resnet34"}, "model.pth does not fit arch 'resnet34' of model_config.json"),
    ({"arch": "vgg16"}, "unknown arch 'vgg16'"),
])
def test_a_hostile_model_config_is_one_error_line_before_anything_large_is_allocated(tmp_path, capsys, change, said):
    """Issue 12, item 6: image_size 100000 once asked for ~30 GB per photo; a foreign arch gave a traceback."""
    from modeling.cli import main
    from modeling.registry import RegistryError, register_model
    from tests.modeling_fixtures import jpeg_bytes

    save_model(tmp_path / "m", build_model("resnet18", 6).state_dict(), ModelSpec("resnet18", 5, PreprocessConfig(32)))
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps({**config, **change}))
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes())

    rc = main(["predict", "--model-dir", str(tmp_path / "m"), str(tmp_path / "x.jpg"), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and said in err, err
    if "does not fit" not in said:  # the weights are only read at load time; the config is checked at registration
        from binaudit import db

        engine = db.open_database(f"sqlite:///{tmp_path / 'r.db'}")
        with pytest.raises(RegistryError, match=said.split(",")[0]):
            register_model(engine, tmp_path / "m", tmp_path / "store")


class _RunsCode:
    def __reduce__(self):  # what a booby-trapped model.pth carries: unpickling it would run this
        import os

        return (os.system, ("touch /tmp/binaudit-pwned-by-model",))


def test_a_model_file_that_carries_code_is_refused_without_running_it(tmp_path):
    save_model(tmp_path / "m", build_model("resnet18", 6).state_dict(), ModelSpec("resnet18", 5, PreprocessConfig(32)))
    marker = Path("/tmp/binaudit-pwned-by-model")
    marker.unlink(missing_ok=True)
    torch.save({"fc.weight": _RunsCode()}, tmp_path / "m" / MODEL_FILE)
    with pytest.raises(ModelConfigError, match="cannot read"):
        load_model_dir(tmp_path / "m")
    assert not marker.exists()
