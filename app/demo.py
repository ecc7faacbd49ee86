"""Seed an empty workspace with a working demo: synthetic bins, a model trained on CPU, every bin scored.

Two synthetic sets, like a real deployment: a *history* of bins with correct records (the training
data) and the *current* bins to audit, some with injected stock mismatches (the record says one
count, the photo shows another). The model never sees the bins it audits.

Steps print progress; each is skipped when its output exists, so an interrupted first run resumes.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from audit.imports import import_abid_folder
from audit.scorers import local_scorer
from audit.scoring import score_bins
from binaudit.workspace import Workspace
from data_tools.build import BuildOptions, build_dataset
from data_tools.synth import SynthOptions, generate
from modeling.registry import activate, active_version, list_versions


@dataclass(frozen=True)
class DemoPlan:
    history_bins: int = 1200
    audit_bins: int = 300
    mismatch_rate: float = 0.12
    photo_width: int = 192
    photo_height: int = 176
    image_size: int = 96
    epochs: int = 15
    batch_size: int = 32
    lr: float = 0.05

    @classmethod
    def tiny(cls) -> DemoPlan:
        """For tests: seconds, not minutes."""
        return cls(history_bins=90, audit_bins=30, photo_width=64, photo_height=56, image_size=32, epochs=1,
                   batch_size=16)


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def workspace_is_empty(engine: Engine) -> bool:
    from audit.overview import overview

    return overview(engine, None, threshold=1.0).bins == 0 and not list_versions(engine)


def _train(ws: Workspace, engine: Engine, dataset: Path, plan: DemoPlan) -> int:
    """A local training job like any other (it shows on the Retrain page); returns the registered version id."""
    from binaudit.config import load_settings
    from jobs import TrainingParams, follow, get_backend

    backend = get_backend("local", settings=load_settings(workspace=ws.root), workspace=ws, engine=engine)
    params = TrainingParams(train=str(dataset / "train"), val=str(dataset / "val"), test=str(dataset / "test"),
                            arch="resnet18", image_size=plan.image_size, epochs=plan.epochs,
                            batch_size=plan.batch_size, lr=plan.lr, loss="ordinal", seed=0,
                            workers=1 if (os.cpu_count() or 1) > 1 else 0)
    job = follow(backend, backend.start_training(params, actor="demo"),
                 on_log=lambda text: print(text, end="" if text.endswith("\n") else "\n", flush=True))
    if job.status != "Completed" or job.model_version_id is None:
        raise RuntimeError(f"demo training job {job.id} ended {job.status}: {job.failure_reason or 'no model'}")
    return job.model_version_id


def seed_demo(ws: Workspace, engine: Engine, plan: DemoPlan = DemoPlan(), progress: bool | None = None) -> None:
    root = ws.root / "demo"
    history, dataset, audit = root / "history", root / "dataset", root / "audit"
    start = time.perf_counter()
    procs = os.cpu_count() or 1

    if not (history / "truth.csv").is_file():
        _say(f"1/5 drawing {plan.history_bins} synthetic bins with correct records (training history) ...")
        generate(SynthOptions(n=plan.history_bins, out=history, seed=1, max_count=5, counts="uniform", width=plan.photo_width,
                              height=plan.photo_height, workers=procs), progress=progress)
    if not (dataset / "manifest.csv").is_file():
        _say("2/5 building the counting dataset (class folders, stratified split) ...")
        build_dataset(BuildOptions(source=history, out=dataset, progress=progress))

    if active_version(engine) is None:
        versions = list_versions(engine)  # a version from an interrupted first run is reused
        if not versions:
            _say(f"3/5 training resnet18 on CPU ({plan.epochs} epochs at {plan.image_size}px); one line per epoch:")
        version_id = versions[0].id if versions else _train(ws, engine, dataset, plan)
        activate(engine, version_id, actor="demo", reason="demo seed")

    if not (audit / "truth.csv").is_file():
        _say(f"4/5 drawing {plan.audit_bins} current bins to audit, {plan.mismatch_rate:.0%} with stock mismatches ...")
        generate(SynthOptions(n=plan.audit_bins, out=audit, seed=2, start_id=50001, max_count=5, counts="uniform", mismatch_rate=plan.mismatch_rate,
                              width=plan.photo_width, height=plan.photo_height, workers=procs), progress=progress)
    import_abid_folder(engine, audit, actor="demo")

    version = active_version(engine)
    _say(f"5/5 scoring every bin with model {version.name} ...")
    report = score_bins(engine, ws, version, local_scorer(version.model_dir, workers=0), progress=progress)
    _say(f"done in {time.perf_counter() - start:.0f} s: {report}")


def main() -> int:
    from binaudit.config import load_settings

    ws = Workspace.from_settings(load_settings())
    engine = ws.open()
    seed_demo(ws, engine, DemoPlan.tiny() if "--tiny" in sys.argv else DemoPlan())
    return 0


if __name__ == "__main__":
    sys.exit(main())
