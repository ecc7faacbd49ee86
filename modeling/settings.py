"""The training settings, defined once: train.py's flags, the job parameters, the jobs CLI and the Retrain form.

    train.py          get_args_parser() adds one flag per setting (`--batch-size`), grouped as here
    jobs.params       TrainingParams has one field per job setting, with the same default; it is sent to train.py
                      as `--name value` flags (SageMaker: hyperparameters) and checked with `parse_setting`
    jobs.cli          `python -m jobs train` has one flag per job setting
    Retrain page      one input per job setting (choices as a select box)

A job setting (`job=True`) is a hyperparameter a job passes on; the others (--device, --weights-path) are options
of a run on one machine, reachable from a job only through TrainingParams.extra. The choice lists (architectures,
losses, ...) live here too, so the modules that act on them (model.py, losses.py) and the forms agree.

Stdlib only: train.py imports it, so it ships in the SageMaker source dir (modeling.CONTAINER_MODULES).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modeling.argtypes import (
    int_between,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)

ARCHS = ("resnet18", "resnet34", "resnet50")
# Bounds a model config is checked against before anything is allocated (an image_size of 100,000 once asked for
# ~30 GB per photo). Bin photos are about 500 x 400 px: 1,024 px is twice that; a count head of 1,001 classes is far
# past any bin (ABID's hold a few dozen items) and still a few KB of weights.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024
MAX_COUNT_LIMIT = 1000
PRETRAINED_CHOICES = ("none", "imagenet")
LOSSES = ("ce", "ordinal")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "cosine")
DEVICES = ("auto", "cpu", "cuda")
BEST_METRICS = {"val_accuracy": "max", "val_rmse": "min"}
TOP_CLASS_CHOICES = ("auto", "open", "closed")
GROUPS = ("model", "optimisation", "runtime")


@dataclass(frozen=True)
class Setting:
    name: str  # TrainingParams field; train.py flag and SageMaker hyperparameter with "-" for "_"
    kind: type  # int, float or str: the value's type (and the form's input)
    default: Any  # None: a job leaves it to train.py, which takes machine_default() on the machine that trains
    help: str
    group: str  # one of GROUPS
    label: str  # the form's label
    parse: Callable[[str], Any] | None = None  # argparse type; None: kind
    choices: tuple[Any, ...] = ()
    job: bool = True  # a job hyperparameter (False: an option of a run on one machine)
    machine_default: Callable[[], Any] | None = None  # train.py's default when it depends on the machine

    @property
    def train_default(self) -> Any:
        """The default of train.py's flag."""
        return self.machine_default() if self.machine_default else self.default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def parser(self) -> Callable[[str], Any]:
        return self.parse or self.kind


SETTINGS: tuple[Setting, ...] = (
    Setting("arch", str, "resnet18", "torchvision ResNet", "model", "Architecture", choices=ARCHS),
    Setting("pretrained", str, "none", "initial weights: random, or torchvision's ImageNet weights (needs internet "
            "or the torch cache)", "model", "Initial weights", choices=PRETRAINED_CHOICES),
    Setting("weights_path", str, "", "initial weights from a state_dict file (wins over --pretrained)", "model",
            "Weights file", job=False),
    Setting("max_count", int, 5, "exact counts 0..N: the head has N+1 classes (N+2 with an open top class)", "model",
            "Max count", int_between(1, MAX_COUNT_LIMIT)),
    Setting("top_class", str, "auto", "open: one more class, 'more than N items' (class folder 'N+1+', e.g. 6+); "
            "closed: counts 0..N only (the published ABID setting); auto: open when the training folder has the "
            "'N+1+' folder", "model", "Top class", choices=TOP_CLASS_CHOICES),
    Setting("image_size", int, 224, "square side the photos are squashed to", "model", "Image size",
            int_between(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, " px")),
    Setting("epochs", int, 10, "total epochs (a resumed run continues to this)", "optimisation", "Epochs",
            positive_int),
    Setting("batch_size", int, 32, "images per step and process", "optimisation", "Batch size", positive_int),
    Setting("lr", float, 0.01, "initial learning rate", "optimisation", "Learning rate", positive_float),
    Setting("momentum", float, 0.9, "SGD momentum; AdamW's beta1", "optimisation", "Momentum", unit_interval),
    Setting("weight_decay", float, 1e-4, "weight decay of conv and linear weights (never of norms and biases)",
            "optimisation", "Weight decay", non_negative_float),
    Setting("optimizer", str, "sgd", "optimizer", "optimisation", "Optimizer", choices=OPTIMIZERS),
    Setting("lr_schedule", str, "cosine", "per-epoch schedule: step (x lr-gamma every lr-step-size epochs) or "
            "cosine to zero", "optimisation", "LR schedule", choices=LR_SCHEDULES),
    Setting("lr_step_size", int, 0, "epochs between steps of the step schedule (0: a third of --epochs)",
            "optimisation", "LR step size", non_negative_int),
    Setting("lr_gamma", float, 0.1, "factor of each step of the step schedule", "optimisation", "LR gamma",
            positive_float),
    Setting("label_smoothing", float, 0.0, "label smoothing of cross-entropy", "optimisation", "Label smoothing",
            unit_interval),
    Setting("loss", str, "ce", "ce: cross-entropy; ordinal: cross-entropy + squared EMD over the count "
            "distribution", "optimisation", "Loss", choices=LOSSES),
    Setting("ordinal_weight", float, 1.0, "weight of the squared-EMD term of --loss ordinal", "optimisation",
            "Ordinal weight", non_negative_float),
    Setting("best_metric", str, "val_accuracy", "validation metric that picks the saved model", "optimisation",
            "Keep the model best by", choices=tuple(BEST_METRICS)),
    Setting("workers", int, None, "DataLoader worker processes per training process (default: min(4, cores))",
            "runtime", "DataLoader workers", non_negative_int, machine_default=lambda: min(4, os.cpu_count() or 1)),
    Setting("seed", int, 0, "random seed; same seed and data give the same run on CPU", "runtime", "Seed"),
    Setting("device", str, "auto", "auto: CUDA (with AMP and channels_last) when present, else CPU", "runtime",
            "Device", choices=DEVICES, job=False),
)
BY_NAME = {s.name: s for s in SETTINGS}
JOB_SETTINGS = tuple(s for s in SETTINGS if s.job)


def add_setting_arguments(parser: argparse.ArgumentParser, settings: tuple[Setting, ...] = SETTINGS, *,
                          defaults: bool = True) -> None:
    """One flag per setting, in its group's argument group; defaults=False: every flag defaults to None (a caller
    that sends only what was given, such as the jobs CLI)."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS if any(s.group == name for s in settings)}
    for s in settings:
        groups[s.group].add_argument(s.flag, type=s.parser, choices=s.choices or None,
                                     default=s.train_default if defaults else None,
                                     help=s.help if defaults else f"{s.help} (default {s.default})")


def parse_setting(name: str, value: Any) -> Any:
    """`value` (or its text) as train.py would parse it; ValueError naming what is allowed."""
    s = BY_NAME[name]
    try:
        parsed = s.parser(str(value))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ValueError(f"{s.flag} {exc}" if isinstance(exc, argparse.ArgumentTypeError) else
                         f"{s.flag} must be {s.kind.__name__}, got {value!r}") from None
    if s.choices and parsed not in s.choices:
        raise ValueError(f"{s.flag}: invalid choice {value!r}; only {', '.join(map(str, s.choices))} are supported")
    return parsed
