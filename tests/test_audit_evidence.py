"""Grad-CAM overlays (audit.evidence, from the grad-cam package) on a real ABID photo, and the SageMaker code's
independence from it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.evidence import Explainer, target_block
from tests.modeling_fixtures import closed_model_dir

ROOT = Path(__file__).resolve().parent.parent


def test_the_map_comes_from_a_block_that_still_has_a_grid_of_cells():
    assert target_block(224) == ("layer4", 7) and target_block(128) == ("layer4", 4)
    assert target_block(96) == ("layer3", 6) and target_block(32) == ("layer2", 4)


def test_grad_cam_maps_of_a_real_abid_photo_for_two_counts(abid_sample, tmp_path):
    photo = sorted((abid_sample / "bin-images").glob("*.jpg"))[0]
    explainer = Explainer.load(closed_model_dir(tmp_path / "model", image_size=128))  # layer4: a 4x4 map
    assert explainer.record_class(3) == 3 and explainer.record_class(9) is None  # closed 0..5: no class for 9
    maps = explainer.maps(photo, [1, 4], side=320)
    width, height = Image.open(photo).size
    assert [m.label for m in maps] == ["1", "4"]
    for m in maps:
        assert m.heatmap.shape == (128, 128) and m.heatmap.min() >= 0.0 and m.heatmap.max() <= 1.0
        assert m.heatmap.std() > 0.01  # a map with places in it, not a flat field
        assert m.overlay.dtype == np.uint8 and m.overlay.shape[1] == 320
        assert abs(m.overlay.shape[0] / 320 - height / width) < 0.02  # over the photo's own shape
        assert 0.0 <= m.probability <= 1.0
    assert not np.allclose(maps[0].heatmap, maps[1].heatmap)  # each count has its own evidence
    photo_pixels = np.asarray(Image.open(photo).convert("RGB").resize((320, maps[0].overlay.shape[0])))
    assert np.abs(maps[0].overlay.astype(int) - photo_pixels.astype(int)).mean() > 10  # the map is drawn over it


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


@pytest.mark.parametrize("entry", ["modeling/train.py", "modeling/inference.py"])
def test_the_sagemaker_code_never_imports_grad_cam(entry):
    """Everything train.py and inference.py import, transitively, within the project: no pytorch_grad_cam, no
    audit.evidence (grad-cam is a dashboard dependency; the AWS containers do not have it)."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(ROOT / path):
            assert not name.startswith(("pytorch_grad_cam", "audit")), f"{path} imports {name}"
            module = ROOT / (name.replace(".", "/") + ".py")
            if module.is_file():
                todo.append(str(module.relative_to(ROOT)))
    assert len(seen) > 3
