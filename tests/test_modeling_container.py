"""train.py and inference.py run in SageMaker's PyTorch container: only the stdlib, torch, torchvision, PIL and
numpy, and only the files named in CONTAINER_MODULES."""

from __future__ import annotations

import ast
import json
import shutil
import textwrap
from pathlib import Path

import pytest

import modeling
from tests.modeling_fixtures import REPO, TINY_ARGS, jpeg_bytes, run_python, subprocess_env, tiny_model

# project packages and the local tooling that the container does not have
DENYLIST = ("pandas", "tqdm", "boto3", "botocore", "sagemaker", "streamlit", "sqlalchemy", "plotly", "orjson",
            "data_tools", "app", "audit", "jobs", "binaudit", "moto", "matplotlib", "scipy", "s3fs",
            "onnxruntime", "onnx", "onnxscript")

# Refuses to IMPORT a denied module; find_spec still answers (torch probes optional packages with it), but the
# module it offers raises ImportError when loaded.
BLOCKER = textwrap.dedent(f"""
    import importlib.abc
    import importlib.machinery
    import sys

    DENIED = {DENYLIST!r}

    class Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            raise ImportError(f"container-unsafe import: {{spec.name}}")

        def exec_module(self, module):
            raise ImportError(f"container-unsafe import: {{module.__name__}}")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in DENIED:
                return importlib.machinery.ModuleSpec(name, Refuse())
            return None

    sys.meta_path.insert(0, Blocker())
""")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory):
    return tiny_model(tiny_dataset, tmp_path_factory)


def _write_blocker(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return folder


@pytest.mark.slow
def test_train_and_inference_import_nothing_outside_the_container(tmp_path):
    code = BLOCKER + textwrap.dedent("""
        try:
            import pandas  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker does not block")
        import modeling.train, modeling.inference  # noqa: E401
        import modeling.train as t
        t.get_args_parser().parse_args([])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in DENIED)
        print("loaded:", loaded)
    """)
    result = run_python(["-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


def _imported_siblings(path: Path) -> set[str]:
    """File names inside modeling/ that a module imports (any `modeling.x` import, at any depth)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for module in modules:
            if module.startswith("modeling."):
                names.add(module.split(".")[1] + ".py")
    return names


def test_container_modules_is_exactly_the_import_closure_of_train_and_inference():
    package = REPO / "modeling"
    closure, todo = {"__init__.py"}, ["train.py", "inference.py"]
    while todo:
        name = todo.pop()
        if name not in closure or name in ("train.py", "inference.py"):
            closure.add(name)
            todo.extend(n for n in _imported_siblings(package / name) if n not in closure)
    assert set(modeling.CONTAINER_MODULES) == closure
    assert len(modeling.CONTAINER_MODULES) == len(set(modeling.CONTAINER_MODULES))


def _source_dir(tmp_path: Path) -> Path:
    """What the packager builds: D/modeling/<CONTAINER_MODULES> and the two entry shims."""
    source = tmp_path / "D"
    (source / "modeling").mkdir(parents=True)
    for name in modeling.CONTAINER_MODULES:
        shutil.copy(REPO / "modeling" / name, source / "modeling" / name)
    (source / "train.py").write_text("from modeling.train import main\n\nmain()\n")
    (source / "inference.py").write_text("from modeling.inference import model_fn, input_fn, predict_fn, output_fn\n")
    return source


def _container_env(tmp_path: Path) -> dict[str, str]:
    # only the blocker on PYTHONPATH: the repository (and its modeling/) is not importable
    return subprocess_env(PYTHONPATH=str(_write_blocker(tmp_path / "blocker")))


@pytest.mark.slow
def test_source_dir_trains_from_another_cwd(tiny_dataset, tmp_path):
    source = _source_dir(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_python(
        [str(source / "train.py"), "--train", str(tiny_dataset / "train"), "--val", str(tiny_dataset / "val"),
         "--model-dir", str(tmp_path / "model"), "--output-data-dir", str(tmp_path / "output"), *TINY_ARGS],
        cwd=cwd, env=_container_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("epoch=1 ") == 1
    assert (tmp_path / "model" / "model.pth").is_file()


@pytest.mark.slow
def test_source_dir_serves_with_the_four_handlers(tiny_model_dir, tmp_path):
    source = _source_dir(tmp_path)
    (tmp_path / "bin.jpg").write_bytes(jpeg_bytes(90, 70))
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(source)!r})
        import inference
        assert inference.__file__.startswith({str(source)!r})
        model = inference.model_fn({str(tiny_model_dir)!r})
        data = inference.input_fn(open({str(tmp_path / 'bin.jpg')!r}, 'rb').read(), 'image/jpeg')
        body, content_type = inference.output_fn(inference.predict_fn(data, model), 'application/json')
        print(content_type)
        print(body)
    """)
    result = run_python(["-c", code], cwd=tmp_path, env=_container_env(tmp_path))
    assert result.returncode == 0, result.stderr
    content_type, body = result.stdout.strip().splitlines()
    assert content_type == "application/json"
    answer = json.loads(body)
    assert answer["counts"] == [0, 1, 2, 3, 4, 5, None] and answer["labels"][-1] == "6+"  # an open model
    assert answer["predicted_label"] in answer["labels"]
