"""The Python environment of AWS's PyTorch containers, for the contract tests (built once, cached).

    .venv-container/            a venv on the same interpreter, WITHOUT the project's requirements
        linked/                 symlinks to the project venv's torch, torchvision, numpy, PIL and what they need
                                (found through their metadata), added to the venv's path by one .pth file: the
                                4.5 GB of torch is not copied
        + requirements-container.txt   AWS's toolkits: sagemaker-training and sagemaker-pytorch-training (the
                                training image's launcher), sagemaker-pytorch-inference on TorchServe (the
                                inference image's), which bring boto3, scipy, gevent, psutil, ... as in the images
        bin/torchrun            the console script the training image has

`make test` builds it (`python -m tests.container_env`); the contract tests' fixture builds it when missing.
Rebuilt when requirements-container.txt or the linked packages change (the stamp holds both).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / ".venv-container"
REQUIREMENTS = REPO / "requirements-container.txt"
LINKED = ("torch", "torchvision", "numpy", "pillow")
TORCHRUN = "#!{python}\nimport sys\nfrom torch.distributed.run import main\n\nsys.exit(main())\n"


def _requirement_names(dist: md.Distribution) -> list[str]:
    """The names of a distribution's requirements that apply here (no extras)."""
    names = []
    for req in dist.requires or []:
        name, _, marker = req.partition(";")
        if marker and not _marker_applies(marker):
            continue
        names.append(re.split(r"[ <>=!~\[(]", name.strip(), maxsplit=1)[0])
    return names


def _marker_applies(marker: str) -> bool:
    from packaging.markers import Marker  # pip's own dependency; present wherever pip is

    try:
        return Marker(marker).evaluate({"extra": ""})
    except Exception:  # noqa: BLE001 - a marker we cannot read: leave the requirement out
        return False


def closure(names: tuple[str, ...] = LINKED) -> list[md.Distribution]:
    """The installed distributions `names` need, themselves included."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional requirement not installed in the project venv either
        seen[key] = dist
        todo.extend(_requirement_names(dist))
    return list(seen.values())


def _top_level_entries(dist: md.Distribution) -> set[str]:
    """The site-packages entries a distribution owns (packages, modules, .libs folders, its dist-info)."""
    entries = set()
    for path in dist.files or []:
        first = path.parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            entries.add(first)
    return entries


def link_packages(folder: Path, dists: list[md.Distribution]) -> None:
    folder.mkdir(parents=True)
    for dist in dists:
        site = Path(dist.locate_file(""))
        for entry in _top_level_entries(dist):
            if (site / entry).exists() and not (folder / entry).exists():
                (folder / entry).symlink_to(site / entry)


def stamp_text(dists: list[md.Distribution]) -> str:
    linked = sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)
    return hashlib.sha256((REQUIREMENTS.read_text() + "\n".join(linked)).encode()).hexdigest()


def site_packages(root: Path) -> Path:
    return root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two test workers (or make and a test) never build at once
        yield


def build(root: Path = ROOT, *, quiet: bool = True) -> Path:
    """The container environment's python, built when missing or out of date."""
    with _locked(root.parent / f"{root.name}.lock"):
        dists = closure()
        stamp = root / ".built"
        if stamp.is_file() and stamp.read_text() == stamp_text(dists):
            return root / "bin" / "python"
        if root.exists():
            shutil.rmtree(root)
        venv.EnvBuilder(with_pip=True, symlinks=True).create(root)
        link_packages(root / "linked", dists)
        (site_packages(root) / "binaudit-linked.pth").write_text(str(root / "linked") + "\n")
        subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                        *(["-q"] if quiet else []), "-r", str(REQUIREMENTS)], check=True)
        torchrun = root / "bin" / "torchrun"
        torchrun.write_text(TORCHRUN.format(python=root / "bin" / "python"))
        torchrun.chmod(0o755)
        stamp.write_text(stamp_text(dists))
    return root / "bin" / "python"


if __name__ == "__main__":
    print(f"container environment: {build(quiet=False)}")
