"""What a training or tuning job is asked to do: `TrainingParams` and `TuningParams`.

TrainingParams has one field per job setting of `modeling.settings` (same name, same default), the data channels
(SM_CHANNEL_* locally and on SageMaker) and (SageMaker) the compute. `check()` parses each value with the setting's
own parser: a job is refused with train.py's message before it starts, without importing train.py (or torch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.records import JobError, check_choice
from jobs.search_space import (
    DEFAULT_SEARCH_SPACE,
    Categorical,
    Parameter,
    SearchSpaceError,
    space_from_json,
    space_to_json,
)
from modeling.metric_log import objective_metric_name
from modeling.settings import BY_NAME, JOB_SETTINGS, parse_setting

HYPERPARAMETER_FIELDS = tuple(s.name for s in JOB_SETTINGS)
CHANNELS = ("train", "val", "test", "recounts")
# train.py flags a job sets itself (channels and output folders), never through `extra`
RESERVED_FLAGS = (*CHANNELS, "model-dir", "output-data-dir", "checkpoint-dir", "failure-file")
OBJECTIVES = {"val_accuracy": "Maximize", "val_rmse": "Minimize"}
STRATEGIES = ("random", "bayesian")


def flag_name(field_name: str) -> str:
    """"batch_size" -> "batch-size": train.py's flag (and the SageMaker hyperparameter name)."""
    return field_name.replace("_", "-")


class _TrainingParamsMethods:
    """A training run: train.py's hyperparameters, the data channels and (SageMaker) the compute.

    train / val / test: local folders of <count>/<image> (local backend) or s3:// prefixes (SageMaker).
    recounts: a folder of analysts' recounts as `<count>/<bin_id>.jpg` (written by the audit core:
        `python -m audit export recounts`, or the Retrain page), or an s3:// prefix; train.py adds them to the
        training data, leaving out any of a bin in val or test.
    extra: more train.py flags, {"device": "cpu"}; the channel and output flags are the job's to set.
    """

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", {str(k).lstrip("-"): str(v) for k, v in dict(self.extra).items()})
        bad = [k for k in self.extra if k in RESERVED_FLAGS or k.replace("-", "_") in HYPERPARAMETER_FIELDS]
        if bad:
            raise JobError(f"extra train.py flags {', '.join(bad)} are set by the job or by their own field; "
                           f"extra may not hold {', '.join(RESERVED_FLAGS)} or a TrainingParams field")
        if self.instance_count is not None and self.instance_count < 1:
            raise JobError(f"instance_count must be at least 1, got {self.instance_count}")

    def to_hyperparameters(self) -> dict[str, str]:
        """{train.py flag without "--": value as text}; fields left at None are not sent."""
        out = {flag_name(name): _text(getattr(self, name)) for name in HYPERPARAMETER_FIELDS
               if getattr(self, name) is not None}
        out.update(self.extra)
        return out

    def to_cli_args(self) -> list[str]:
        """["--arch", "resnet18", "--epochs", "10", ...]: what a local run passes to train.py."""
        return [item for name, value in self.to_hyperparameters().items() for item in (f"--{name}", value)]

    def check(self) -> None:
        """Every hyperparameter and extra flag parsed as train.py would; JobError naming what is allowed."""
        unknown = sorted(k for k in self.extra if k.replace("-", "_") not in BY_NAME)
        if unknown:
            raise JobError(f"train.py has no flag(s) {' '.join('--' + k for k in unknown)}; "
                           f"see python -m modeling.train --help")
        values = {**{flag_name(n): getattr(self, n) for n in HYPERPARAMETER_FIELDS}, **self.extra}
        for flag, value in values.items():
            if value is not None:
                try:
                    parse_setting(flag.replace("-", "_"), value)
                except ValueError as exc:
                    raise JobError(f"invalid training parameters: {exc}") from None

    def channels(self) -> dict[str, str]:
        """{"train": ..., "val": ..., "test": ..., "recounts": ...} without the empty ones."""
        return {name: getattr(self, name) for name in CHANNELS if getattr(self, name)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TrainingParams:
        doc = dict(doc)
        doc.pop("include_recounts", None)  # jobs recorded before recounts travelled as a folder (the recounts field)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise JobError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**doc)

    def replace(self, **changes: Any) -> TrainingParams:
        return dataclasses.replace(self, **changes)


# the fields: the channels, one per job setting (its default from modeling.settings), the compute, extra flags
TrainingParams = dataclasses.make_dataclass(
    "TrainingParams",
    [*((name, str, field(default="")) for name in CHANNELS),
     *((s.name, s.kind if s.default is not None else s.kind | None, field(default=s.default)) for s in JOB_SETTINGS),
     ("instance_type", str | None, field(default=None)),  # SageMaker; None: settings.training_instance_type
     ("instance_count", int | None, field(default=None)),  # SageMaker; None: settings.training_instance_count
     ("extra", dict[str, str], field(default_factory=dict))],
    bases=(_TrainingParamsMethods,), frozen=True,
)
TrainingParams.__module__, TrainingParams.__doc__ = __name__, _TrainingParamsMethods.__doc__


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class TuningParams:
    """A tuning run: trials of `base` with the search space's parameters drawn by the strategy (random or
    bayesian), ranked by the objective (val_accuracy maximised, val_rmse minimised) of each trial's best epoch, the
    model train.py keeps (its --best-metric is set to the objective). What the strategies and early stopping do
    locally: jobs.local.tuner; on SageMaker they are its tuner's own (Bayesian, early stopping "Auto")."""

    base: TrainingParams
    search_space: Mapping[str, Parameter] = field(default_factory=lambda: dict(DEFAULT_SEARCH_SPACE))
    objective: str = "val_accuracy"
    max_jobs: int = 4
    max_parallel_jobs: int = 1
    strategy: str = "bayesian"
    early_stopping: bool = False
    seed: int = 0  # the sampler's seed (trials' own seeds come from base.seed)

    def __post_init__(self) -> None:
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("strategy", self.strategy, STRATEGIES)
        for name in ("max_jobs", "max_parallel_jobs"):
            if getattr(self, name) < 1:
                raise JobError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.search_space:
            raise JobError("the search space is empty: name at least one parameter to tune")
        unknown = sorted(set(self.search_space) - set(HYPERPARAMETER_FIELDS))
        if unknown:
            raise JobError(f"cannot tune {', '.join(unknown)}; tunable: {', '.join(HYPERPARAMETER_FIELDS)}")
        object.__setattr__(self, "search_space", dict(self.search_space))
        if self.base.best_metric != self.objective:  # the kept model is the one the objective picks
            object.__setattr__(self, "base", self.base.replace(best_metric=self.objective))

    @property
    def objective_type(self) -> str:
        """"Maximize" or "Minimize", as SageMaker spells it."""
        return OBJECTIVES[self.objective]

    @property
    def objective_metric(self) -> str:
        """The metric SageMaker's tuner ranks by: best_<objective>, the kept model's (see modeling.metric_log)."""
        return objective_metric_name(self.objective)

    def is_better(self, value: float, than: float | None) -> bool:
        if than is None:
            return True
        return value > than if self.objective_type == "Maximize" else value < than

    def trial_params(self, values: Mapping[str, Any]) -> TrainingParams:
        return self.base.replace(**dict(values))

    def check(self) -> None:
        """The base parameters, and every categorical value and both ends of every range, as train.py takes them."""
        self.base.check()
        for name, param in self.search_space.items():
            for value in param.values if isinstance(param, Categorical) else (param.low, param.high):
                self.trial_params({name: value}).check()

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "search_space": space_to_json(self.search_space),
                "objective": self.objective, "max_jobs": self.max_jobs, "max_parallel_jobs": self.max_parallel_jobs,
                "strategy": self.strategy, "early_stopping": self.early_stopping, "seed": self.seed}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TuningParams:
        try:
            space = space_from_json(doc["search_space"])
        except SearchSpaceError as exc:
            raise JobError(str(exc)) from None
        rest = {k: v for k, v in doc.items() if k not in ("base", "search_space")}
        return cls(base=TrainingParams.from_dict(doc["base"]), search_space=space, **rest)


def trial_value(metrics: list[dict[str, Any]], objective: str) -> float | None:
    """A trial's objective: its best epoch's value (max accuracy or min RMSE), None before any epoch; the figure
    SageMaker's tuner ranks by too (the last best_<objective> on train.py's epoch lines)."""
    values = [row[objective] for row in metrics if isinstance(row.get(objective), (int, float))]
    values = [v for v in values if v == v]  # NaN never wins
    if not values:
        return None
    return max(values) if OBJECTIVES[objective] == "Maximize" else min(values)
