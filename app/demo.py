"""Seed an empty workspace with a working demo: synthetic bins, a model trained on CPU, every bin scored.

Two synthetic sets, like a real deployment: a *history* of bins with correct records (the training
data) and the *current* bins to audit, some with injected stock mismatches (the record says one
count, the photo shows another). The model never sees the bins it audits.

Like ABID, where about a third of the bins hold more than 5 items, the bins hold up to `history_max_count` items; the
dataset is built with an open top class ("6+"), so the model checks every bin, the fuller ones included.

Steps print progress; each is skipped when its output exists, so an interrupted first run resumes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sqlalchemy.engine import Engine

from app.demo_recipe import DemoPlan
from audit.imports import import_abid_folder
from audit.scorers import local_scorer
from audit.scoring import score_bins
from binaudit.workspace import Workspace
from data_tools.build import BuildOptions, build_dataset
from data_tools.synth import SynthOptions, generate
from modeling.registry import activate, active_version, list_versions


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
                            **plan.training_args(), workers=1 if (os.cpu_count() or 1) > 1 else 0)
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
        _say(f"1/5 drawing {plan.history_bins} synthetic bins with correct records (training history; counts "
             f"0..{plan.history_max_count}, those above 5 in the open class 6+) ...")
        generate(SynthOptions(n=plan.history_bins, out=history, seed=1, counts=plan.history_counts,
                              max_count=plan.history_max_count, style=plan.history_style, width=plan.photo_width,
                              height=plan.photo_height, workers=procs), progress=progress)
    if not (dataset / "manifest.csv").is_file():
        _say("2/5 building the counting dataset (class folders, stratified split) ...")
        build_dataset(BuildOptions(source=history, out=dataset, top_class="open", progress=progress))

    if active_version(engine) is None:
        versions = list_versions(engine)  # a version from an interrupted first run is reused
        if not versions:
            _say(f"3/5 training resnet18 on CPU ({plan.epochs} epochs at {plan.image_size}px); one line per epoch:")
        version_id = versions[0].id if versions else _train(ws, engine, dataset, plan)
        activate(engine, version_id, actor="demo", reason="demo seed")

    if not (audit / "truth.csv").is_file():
        _say(f"4/5 drawing {plan.audit_bins} current bins to audit, {plan.mismatch_rate:.0%} with stock mismatches ...")
        generate(SynthOptions(n=plan.audit_bins, out=audit, seed=2, start_id=50001, counts=plan.history_counts,
                              max_count=plan.audit_max_count,
                              mismatch_rate=plan.mismatch_rate, style=plan.history_style, width=plan.photo_width,
                              height=plan.photo_height, workers=procs), progress=progress)
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
