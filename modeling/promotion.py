"""Promotion: make a candidate model version active only if it is not worse than the active one.

Both versions are evaluated on THE SAME validation folder with the shared evaluation code (fp32, argmax counts):
accuracy and RMSE over counts. A worse candidate is refused unless forced; the first model becomes active without a
comparison. Every decision is audit-logged (activation by modeling.registry.activate, a refusal here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from binaudit import db
from modeling import registry
from modeling.settings import BEST_METRICS

METRICS = {"val_accuracy": "accuracy", "val_rmse": "rmse"}
ACTIVATION_ATTEMPTS = 3  # decisions re-made when another activation comes first


@dataclass(frozen=True)
class Scores:
    """One version's figures on the comparison folder; `error` says why it has none (its files are gone or
    unreadable)."""

    version_id: int
    name: str
    accuracy: float = math.nan
    rmse: float = math.nan
    n_scored: int = 0
    error: str | None = None

    def value(self, metric: str) -> float:
        return getattr(self, METRICS[metric])


@dataclass(frozen=True)
class Comparison:
    val_dir: str
    candidate: Scores
    active: Scores | None  # None: there was no active version (other than the candidate)

    @property
    def active_id(self) -> int | None:
        return self.active.version_id if self.active is not None else None

    def candidate_is_not_worse(self, metric: str) -> bool:
        """Ties go to the candidate (a retrained model on newer data is preferred at equal quality)."""
        if self.active is None:
            return True
        if self.active.error:
            return False  # nothing to compare with: only a forced promotion replaces it
        cand, act = self.candidate.value(metric), self.active.value(metric)
        if math.isnan(cand):
            return False
        if math.isnan(act):
            return True
        return cand >= act if BEST_METRICS[metric] == "max" else cand <= act

    def describe(self, metric: str) -> str:
        text = f"{self.candidate.name} {METRICS[metric]} {self.candidate.value(metric):.4f}"
        if self.active is not None and self.active.error:
            text += f" vs active {self.active.name}, which could not be scored ({self.active.error})"
        elif self.active is not None:
            text += f" vs active {self.active.name} {self.active.value(metric):.4f}"
        return f"{text} on {self.val_dir} ({self.candidate.n_scored} photos)"


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    version: registry.ModelVersion  # the candidate, as it is now
    previous: registry.ModelVersion | None  # the version that was active before
    comparison: Comparison | None
    reason: str


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
    raise registry.RegistryError(f"{version.name} was validated on {val or 'an unknown folder'}, which is not a local "
                                 f"folder here; pass the validation folder to compare on (--val DIR)")


def _files_missing(version: registry.ModelVersion) -> str | None:
    missing = registry.missing_files(version)
    return f"{', '.join(missing)} missing from {version.model_dir}" if missing else None


def _try_score(version: registry.ModelVersion, folder: Path, batch_size: int, workers: int | None) -> Scores:
    """The version's scores on `folder`; with an error when its files are gone or broken."""
    from modeling.model import ModelConfigError

    gone = _files_missing(version)
    if gone:
        return Scores(version.id, version.name, error=gone)
    try:
        return score_version(version, folder, batch_size=batch_size, workers=workers)
    except ModelConfigError as exc:
        return Scores(version.id, version.name, error=str(exc))


def _compare(candidate: registry.ModelVersion, active: registry.ModelVersion | None, val_dir: str | Path | None,
             batch_size: int, workers: int | None) -> Comparison:
    folder = Path(val_dir) if val_dir is not None else default_val_dir(candidate)
    scores = _try_score(candidate, folder, batch_size, workers)
    if scores.error:  # nothing to promote; an unscorable ACTIVE one only needs --force to replace
        raise registry.RegistryError(f"{candidate.name} cannot be scored or activated: {scores.error}")
    other = None if active is None or active.id == candidate.id else _try_score(active, folder, batch_size, workers)
    return Comparison(str(folder), scores, other)


def compare_with_active(engine: Engine, candidate_version_id: int | str, val_dir: str | Path | None = None, *,
                        batch_size: int = 32, workers: int | None = 0) -> Comparison:
    """Evaluate the candidate and the active version (if any, and not the candidate) on the same folder."""
    candidate = registry.get_version(engine, candidate_version_id)
    return _compare(candidate, registry.active_version(engine), val_dir, batch_size, workers)


def _still_holds(comparison: Comparison | None, candidate: registry.ModelVersion, active: registry.ModelVersion,
                 val_dir: str | Path | None) -> bool:
    """A ready comparison decides only if it is about this candidate against the version active NOW (a dashboard
    keeps one while others promote), and on the folder asked for."""
    return (comparison is not None and comparison.candidate.version_id == candidate.id
            and comparison.active_id == active.id
            and (val_dir is None or Path(comparison.val_dir) == Path(val_dir)))


def _log_refusal(engine: Engine, candidate: registry.ModelVersion, actor: str, details: dict[str, Any]) -> None:
    with db.write_tx(engine) as conn:
        db.log_change(conn, actor=actor, action="promotion_refused", entity="model", entity_id=candidate.id,
                      details=details)


def _decide(engine: Engine, candidate: registry.ModelVersion, previous: registry.ModelVersion | None,
            comparison: Comparison | None, metric: str, force: bool, actor: str) -> PromotionResult:
    """Activate or refuse. Activation happens only while `previous` is still the active version (checked in the
    activation's transaction); otherwise registry.ActiveVersionChanged, and the caller decides again."""
    if previous is None:
        version = registry.activate(engine, candidate.id, actor=actor, reason="first model: no active version",
                                    expected_active=None)
        return PromotionResult(True, version, None, None, "first model: activated without comparison")
    assert comparison is not None
    summary, unscored = comparison.describe(metric), comparison.active.error
    if comparison.candidate_is_not_worse(metric) or force:
        why = summary
        if not comparison.candidate_is_not_worse(metric):
            why = f"forced although {'not compared' if unscored else 'worse'}: {summary}"
        version = registry.activate(engine, candidate.id, actor=actor, reason=f"promoted by {metric}: {why}",
                                    expected_active=previous.id)
        return PromotionResult(True, version, previous, comparison, why)
    _log_refusal(engine, candidate, actor, {"metric": metric, "comparison": summary, "active": previous.id})
    hint = f"the candidate is worse by {metric} (force to promote anyway)"
    if unscored:
        hint = (f"the active version {previous.name} cannot be compared with; to replace it anyway use --force "
                f"(the Force checkbox on the dashboard)")
    return PromotionResult(False, candidate, previous, comparison, f"refused: {summary}; {hint}")


def promote(engine: Engine, candidate_version_id: int | str, *, metric: str = "val_accuracy", force: bool = False,
            actor: str, val_dir: str | Path | None = None, comparison: Comparison | None = None,
            batch_size: int = 32, workers: int | None = 0) -> PromotionResult:
    """Activate the candidate unless it is worse than the active version by `metric` (force overrides); a candidate
    whose model files are gone is refused. comparison: a ready one (from compare_with_active) to decide on while it
    is about this candidate and the version active now, else both are evaluated again."""
    if metric not in METRICS:
        raise registry.RegistryError(f"Invalid promotion metric {metric!r}. Only {', '.join(METRICS)} are supported.")
    candidate = registry.get_version(engine, candidate_version_id)
    gone = _files_missing(candidate)
    if gone:
        _log_refusal(engine, candidate, actor, {"metric": metric, "missing": gone})
        return PromotionResult(False, candidate, registry.active_version(engine), None,
                               f"refused: {candidate.name} cannot be activated, its model files are gone ({gone})")
    for _ in range(ACTIVATION_ATTEMPTS):
        previous = registry.active_version(engine)
        if previous is not None and previous.id == candidate.id:
            return PromotionResult(False, candidate, previous, None, f"{candidate.name} is already the active version")
        if previous is not None and not _still_holds(comparison, candidate, previous, val_dir):
            comparison = _compare(candidate, previous, val_dir, batch_size, workers)
        try:
            return _decide(engine, candidate, previous, comparison, metric, force, actor)
        except registry.ActiveVersionChanged:
            continue  # another version was activated while deciding: decide against that one
    raise registry.RegistryError("the active model version kept changing during the promotion; try again")
