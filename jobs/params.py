"""What a training or tuning job is asked to do: `TrainingParams` and `TuningParams`.

`TrainingParams.to_hyperparameters()` gives exactly the `--name value` flags modeling/train.py takes (a test checks
every field against train.py's parser); the data locations travel separately, as channels (SM_CHANNEL_TRAIN/VAL/TEST
locally and on SageMaker). Cheap to import: train.py's parser is only loaded by `check_against_train_parser`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.records import JobError
from jobs.search_space import (
    DEFAULT_SEARCH_SPACE,
    Parameter,
    SearchSpaceError,
    space_from_json,
    space_to_json,
)
from modeling.metric_log import objective_metric_name

# TrainingParams fields that are train.py hyperparameters (flag = name with "-" for "_")
HYPERPARAMETER_FIELDS = (
    "arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer", "lr_schedule", "lr_step_size",
    "lr_gamma", "image_size", "loss", "ordinal_weight", "label_smoothing", "seed", "pretrained", "workers",
    "max_count", "best_metric",
)
# train.py flags a job sets itself (channels and output folders), never through `extra`
RESERVED_FLAGS = ("train", "val", "test", "recounts", "model-dir", "output-data-dir", "checkpoint-dir")
OBJECTIVES = {"val_accuracy": "Maximize", "val_rmse": "Minimize"}
STRATEGIES = ("random", "bayesian")


def flag_name(field_name: str) -> str:
    """"batch_size" -> "batch-size": train.py's flag (and the SageMaker hyperparameter name)."""
    return field_name.replace("_", "-")


@dataclass(frozen=True)
class TrainingParams:
    """A training run: train.py's hyperparameters, the data channels and (SageMaker) the compute.

    train / val / test: local folders of <count>/<image> (local backend) or s3:// prefixes (SageMaker).
    include_recounts: add the analysts' recounts (audit.export.build_recount_dataset) to the training data.
    extra: more train.py flags, {"lr-gamma": "0.5"}; the channel and output flags are the job's to set.
    """

    train: str = ""
    val: str = ""
    test: str = ""
    arch: str = "resnet18"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    lr_schedule: str = "cosine"
    lr_step_size: int = 0  # step schedule: epochs between steps (0: a third of the epochs)
    lr_gamma: float = 0.1  # step schedule: factor of each step
    image_size: int = 224
    loss: str = "ce"
    ordinal_weight: float = 1.0  # weight of the squared-EMD term of the ordinal loss
    label_smoothing: float = 0.0
    seed: int = 0
    pretrained: str = "none"
    workers: int | None = None  # None: train.py's default (min(4, cores))
    max_count: int = 5
    best_metric: str = "val_accuracy"
    include_recounts: bool = False
    instance_type: str | None = None  # SageMaker; None: settings.training_instance_type
    instance_count: int | None = None  # SageMaker; None: settings.training_instance_count; > 1 runs torchrun
    extra: dict[str, str] = field(default_factory=dict)

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

    def channels(self) -> dict[str, str]:
        """{"train": ..., "val": ..., "test": ...} without the empty ones."""
        return {name: value for name, value in (("train", self.train), ("val", self.val), ("test", self.test))
                if value}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TrainingParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise JobError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(doc))

    def replace(self, **changes: Any) -> TrainingParams:
        return dataclasses.replace(self, **changes)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_against_train_parser(params: TrainingParams) -> None:
    """Parse the hyperparameters with train.py's own parser; JobError with argparse's message (allowed values).

    Imports modeling.train (and torch): call it where a job is started, not where jobs are listed.
    """
    from modeling.train import get_args_parser

    parser = get_args_parser(add_help=False)
    parser.exit_on_error = False

    def fail(message: str) -> None:
        raise JobError(f"invalid training parameters: {message}")

    parser.error = fail  # type: ignore[method-assign]  # argparse would print usage and exit the dashboard
    args = params.to_cli_args()
    try:
        _, unknown = parser.parse_known_args(args)
    except Exception as exc:  # argparse.ArgumentError, or JobError from fail()
        if isinstance(exc, JobError):
            raise
        raise JobError(f"invalid training parameters: {exc}") from None
    if unknown:
        raise JobError(f"train.py has no flag(s) {' '.join(a for a in unknown if a.startswith('--'))}; "
                       f"see python -m modeling.train --help")


@dataclass(frozen=True)
class TuningParams:
    """A tuning run: trials of `base` with the search space's parameters drawn by the strategy.

    objective: val_accuracy (maximised) or val_rmse (minimised); a trial's value is its best epoch's, which is the
    model train.py keeps (its --best-metric is set to the objective). Both backends rank by that value: locally
    `trial_value`, on SageMaker the `objective_metric` (best_val_accuracy or best_val_rmse) that train.py prints
    for the kept model after every epoch, whose latest value is the best epoch's.
    max_parallel_jobs: the local backend runs 1 or 2 trials at a time.
    strategy: random, or bayesian (SageMaker's Bayesian optimisation; locally: random first trials, then draws
    around the best trial so far).
    early_stopping: SageMaker's "Auto"; locally a trial is stopped when its objective after an epoch is worse than
    the median of the finished trials at that epoch.
    """

    base: TrainingParams
    search_space: Mapping[str, Parameter] = field(default_factory=lambda: dict(DEFAULT_SEARCH_SPACE))
    objective: str = "val_accuracy"
    max_jobs: int = 4
    max_parallel_jobs: int = 1
    strategy: str = "bayesian"
    early_stopping: bool = False
    seed: int = 0  # the sampler's seed (trials' own seeds come from base.seed)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise JobError(f"Invalid objective {self.objective!r}. Only {', '.join(OBJECTIVES)} are supported.")
        if self.strategy not in STRATEGIES:
            raise JobError(f"Invalid strategy {self.strategy!r}. Only {', '.join(STRATEGIES)} are supported.")
        if self.max_jobs < 1:
            raise JobError(f"max_jobs must be at least 1, got {self.max_jobs}")
        if self.max_parallel_jobs < 1:
            raise JobError(f"max_parallel_jobs must be at least 1, got {self.max_parallel_jobs}")
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
    """A trial's objective: its best epoch's value (max accuracy or min RMSE), None before any epoch.

    The same figure as the last best_<objective> that train.py prints at the end of an epoch line (its
    --best-metric is the objective), which is what SageMaker's tuner ranks by; NaN epochs never win in either."""
    values = [row[objective] for row in metrics if isinstance(row.get(objective), (int, float))]
    values = [v for v in values if v == v]  # NaN never wins
    if not values:
        return None
    return max(values) if OBJECTIVES[objective] == "Maximize" else min(values)
