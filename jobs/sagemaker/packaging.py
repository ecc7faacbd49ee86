"""The source code SageMaker runs: a staged folder and its tarball.

    <staged>/train.py            from modeling.train import main; main()
    <staged>/inference.py        from modeling.inference import model_fn, input_fn, predict_fn, output_fn
    <staged>/modeling/<file>     exactly modeling.CONTAINER_MODULES (what train.py and inference.py import)

Training and tuning run the root train.py as the entry script; the endpoint and batch transform load the root
inference.py. Nothing else of the project goes up (no app/, no binaudit/, no tests); a test checks the container
modules need nothing beyond them. The tarball is content-addressed (its digest names its S3 key), so an unchanged
source tree is uploaded once.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import modeling

TRAIN_SHIM = "# SageMaker's entry script: the project's trainer.\nfrom modeling.train import main\n\nmain()\n"
INFERENCE_SHIM = (
    "# SageMaker's serving handlers: the project's, unchanged.\n"
    "from modeling.inference import input_fn, model_fn, output_fn, predict_fn  # noqa: F401\n"
)
ENTRY_SCRIPT = "train.py"
INFERENCE_SCRIPT = "inference.py"
TARBALL_NAME = "sourcedir.tar.gz"


@dataclass(frozen=True)
class SourcePackage:
    folder: Path  # the staged source dir (SourceCode(source_dir=...))
    tarball: Path  # the same files as sourcedir.tar.gz
    digest: str  # sha256 over names and contents: the S3 key's folder

    @property
    def files(self) -> list[str]:
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())


def _tarball(files: dict[str, bytes]) -> bytes:
    """Deterministic: sorted names, fixed mtime and owner (the same sources give the same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def build_source_package(out: Path) -> SourcePackage:
    """Stage the shims and exactly the container modules under out/source and write out/sourcedir.tar.gz."""
    modeling_dir = Path(modeling.__file__).resolve().parent
    files = {ENTRY_SCRIPT: TRAIN_SHIM.encode(), INFERENCE_SCRIPT: INFERENCE_SHIM.encode(),
             **{f"modeling/{name}": (modeling_dir / name).read_bytes() for name in modeling.CONTAINER_MODULES}}
    folder = out / "source"
    shutil.rmtree(folder, ignore_errors=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (out / TARBALL_NAME).write_bytes(_tarball(files))
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return SourcePackage(folder, out / TARBALL_NAME, digest.hexdigest())
