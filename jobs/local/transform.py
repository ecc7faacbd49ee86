"""Local batch transform: score every photo under a folder into JSON lines, with the batched Predictor.

One object per photo, in sorted path order:
    {"file": "3/bin.jpg", "bin_id": "bin", "predicted_count": 3, "predicted_label": "3", "probabilities": [...],
     "counts": [0..5, null], "labels": ["0".."5", "6+"], "top_class": "open"}
    {"file": "bad.jpg", "bin_id": "bad", "error": "cannot decode ..."}
The prediction keys are the endpoint's (modeling.serving.prediction_response), so the same code reads both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from binaudit.workspace import Workspace
from jobs import store
from jobs.local.processes import STOP, say
from jobs.records import JobError, JobRecord
from modeling.scoring_paths import ScoringPathError

OUTPUT_NAME = "predictions.jsonl"


def output_file(output: str | Path) -> Path:
    """A .jsonl path as given; a folder (existing, or a name without a suffix) gets predictions.jsonl inside."""
    path = Path(output)
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson") and not path.is_dir():
        return path
    return path / OUTPUT_NAME


def transform_folder(model_dir: Path, input_dir: Path, output: Path, *, batch_size: int = 16,
                     workers: int | None = 0, precision: str = "auto", runtime: str = "auto") -> dict[str, Any]:
    """Score input_dir's photos into `output` (JSON lines) on the scoring path runtime x precision picks (auto: the
    fastest that passed its check here); returns counts. Stops between batches on SIGTERM."""
    from modeling.predictor import Predictor, expand_paths
    from modeling.serving import prediction_response

    if not input_dir.is_dir():
        raise JobError(f"input folder not found: {input_dir}")
    paths = expand_paths([input_dir])
    if not paths:
        raise JobError(f"no images (*.jpg, *.jpeg, *.png) in {input_dir}")
    predictor = Predictor.load(model_dir, precision=precision, runtime=runtime)
    say(f"scoring with {predictor.path}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    scored = failed = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for result in predictor.predict_paths(paths, batch_size, workers, progress=False):
            if STOP.is_set():
                raise InterruptedError("stopped on request")
            line: dict[str, Any] = {"file": os.path.relpath(result.path, input_dir), "bin_id": Path(result.path).stem}
            if result.probs is None:
                line["error"] = result.error
                failed += 1
            else:
                line.update(prediction_response(result.probs, predictor.spec.classes))
                scored += 1
            fh.write(json.dumps(line) + "\n")
    os.replace(tmp, output)
    return {"output_path": str(output), "n_images": len(paths), "n_scored": scored, "n_failed": failed,
            "scoring_path": predictor.path}


def run_transform(engine: Engine, workspace: Workspace, job: JobRecord) -> JobRecord:
    from modeling.model import ModelConfigError  # torch: loaded with the model, not with the jobs package

    spec = job.params["transform"]
    try:
        result = transform_folder(Path(spec["model_dir"]), Path(spec["input"]), output_file(spec["output"]),
                                  batch_size=int(spec.get("batch_size", 16)), workers=spec.get("workers", 0),
                                  runtime=spec.get("runtime", "auto"), precision=spec.get("precision", "auto"))
    except InterruptedError:
        return store.finish_job(engine, job.id, "Stopped", failure_reason="stopped on request")[0]
    except (JobError, ScoringPathError, ModelConfigError) as exc:
        return store.finish_job(engine, job.id, "Failed", failure_reason=str(exc))[0]
    say(f"scored {result['n_scored']} of {result['n_images']} photos ({result['n_failed']} failed) "
        f"-> {result['output_path']}")
    return store.finish_job(engine, job.id, "Completed", output=result)[0]
