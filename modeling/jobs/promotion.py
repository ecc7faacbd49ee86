"""Promotion: make a candidate model version active only if it is not worse than the active one.

Both versions are evaluated on THE SAME validation folder with the shared evaluation code
(modeling.evaluate.evaluate_folder, fp32, argmax counts): accuracy and RMSE over counts. A worse candidate is
refused unless forced; the first model becomes active without a comparison. Every decision is audit-logged
(activation by modeling.registry.activate, a refusal here). This is the condition step of a retraining pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from binaudit import db
from modeling import registry
from modeling.jobs.params import OBJECTIVES
from modeling.jobs.records import JobError

METRICS = {"val_accuracy": "accuracy", "val_rmse": "rmse"}


@dataclass(frozen=True)
class Scores:
    """One version's figures on the comparison folder."""

    version_id: int
    name: str
    accuracy: float
    rmse: float
    n_scored: int

    def value(self, metric: str) -> float:
        return getattr(self, METRICS[metric])


@dataclass(frozen=True)
class Comparison:
    val_dir: str
    candidate: Scores
    active: Scores | None

    def candidate_is_not_worse(self, metric: str) -> bool:
        """Ties go to the candidate (a retrained model on newer data is preferred at equal quality)."""
        if self.active is None:
            return True
        cand, act = self.candidate.value(metric), self.active.value(metric)
        if math.isnan(cand):
            return False
        if math.isnan(act):
            return True
        return cand >= act if OBJECTIVES[metric] == "Maximize" else cand <= act

    def describe(self, metric: str) -> str:
        label = METRICS[metric]
        text = f"{self.candidate.name} {label} {self.candidate.value(metric):.4f}"
        if self.active is not None:
            text += f" vs active {self.active.name} {self.active.value(metric):.4f}"
        return f"{text} on {self.val_dir} ({self.candidate.n_scored} photos)"


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    version: registry.ModelVersion  # the candidate, as it is now
    previous: registry.ModelVersion | None  # the version that was active before
    comparison: Comparison | None
    reason: str


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise JobError(f"Invalid promotion metric {metric!r}. Only {', '.join(METRICS)} are supported.")
    return metric


def score_version(version: registry.ModelVersion, val_dir: Path, *, batch_size: int = 32,
                  workers: int | None = 0) -> Scores:
    from modeling.evaluate import evaluate_folder
    from modeling.predictor import Predictor

    predictor = Predictor.load(version.model_dir, precision="fp32")  # exact numbers: both sides alike
    metrics, _ = evaluate_folder(predictor, val_dir, batch_size, workers, progress=False)
    return Scores(version.id, version.name, float(metrics["argmax"]["accuracy"]), float(metrics["argmax"]["rmse"]),
                  int(metrics["n_scored"]))


def default_val_dir(version: registry.ModelVersion) -> Path:
    """The validation folder the candidate was trained with, when it is a local folder that still exists."""
    val = (version.config.get("resolved_args") or {}).get("val")
    if val and not str(val).startswith("s3://") and Path(val).is_dir():
        return Path(val)
    raise JobError(f"{version.name} was validated on {val or 'an unknown folder'}, which is not a local folder here; "
                   f"pass the validation folder to compare on (--val DIR)")


def compare_with_active(engine: Engine, candidate_version_id: int | str, val_dir: str | Path | None = None, *,
                        batch_size: int = 32, workers: int | None = 0) -> Comparison:
    """Evaluate the candidate and the active version (if any, and not the candidate) on the same folder."""
    candidate = registry.get_version(engine, candidate_version_id)
    folder = Path(val_dir) if val_dir is not None else default_val_dir(candidate)
    active = registry.active_version(engine)
    active_scores = None
    if active is not None and active.id != candidate.id:
        active_scores = score_version(active, folder, batch_size=batch_size, workers=workers)
    return Comparison(str(folder), score_version(candidate, folder, batch_size=batch_size, workers=workers),
                      active_scores)


def _log_refusal(engine: Engine, candidate: registry.ModelVersion, actor: str, details: dict[str, Any]) -> None:
    with db.write_tx(engine) as conn:
        db.log_change(conn, actor=actor, action="promotion_refused", entity="model", entity_id=candidate.id,
                      details=details)


def promote(engine: Engine, candidate_version_id: int | str, *, metric: str = "val_accuracy", force: bool = False,
            actor: str, val_dir: str | Path | None = None, comparison: Comparison | None = None,
            batch_size: int = 32, workers: int | None = 0) -> PromotionResult:
    """Activate the candidate unless it is worse than the active version by `metric` (force overrides).

    comparison: a ready Comparison (from compare_with_active) to decide on instead of evaluating again.
    """
    _check_metric(metric)
    candidate = registry.get_version(engine, candidate_version_id)
    previous = registry.active_version(engine)
    if previous is None:
        version = registry.activate(engine, candidate.id, actor=actor, reason="first model: no active version")
        return PromotionResult(True, version, None, None, "first model: activated without comparison")
    if previous.id == candidate.id:
        return PromotionResult(False, candidate, previous, None, f"{candidate.name} is already the active version")
    if comparison is None:
        comparison = compare_with_active(engine, candidate.id, val_dir, batch_size=batch_size, workers=workers)
    summary = comparison.describe(metric)
    if comparison.candidate_is_not_worse(metric) or force:
        why = summary if comparison.candidate_is_not_worse(metric) else f"forced although worse: {summary}"
        version = registry.activate(engine, candidate.id, actor=actor, reason=f"promoted by {metric}: {why}")
        return PromotionResult(True, version, previous, comparison, why)
    _log_refusal(engine, candidate, actor, {"metric": metric, "comparison": summary, "active": previous.id})
    return PromotionResult(False, candidate, previous, comparison,
                           f"refused: {summary}; the candidate is worse by {metric} (force to promote anyway)")
