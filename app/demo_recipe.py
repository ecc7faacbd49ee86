"""The demo's recipe (what the first `make run` draws and trains) and what it was measured to do on real photos.

The demo model is trained on synthetic bins only, so its validation accuracy is measured on synthetic bins
too. How it does on real ABID photos it never saw is a separate figure, measured by `bench/bench_sim2real.py`
on the shared ABID sample and stored here (`REAL_PHOTO_CHECK`): a user's machine has no real photos to
recompute it from. The dashboard shows it beside the synthetic figure for a model trained by this recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DemoPlan:
    """How much the first run draws and how it trains; `tiny()` is the same demo in seconds, for tests.

    The defaults are the recipe measured on real photos (REAL_PHOTO_CHECK): every variant tried so far in
    docs/benchmarks.md (sim-to-real) did no better on real ABID photos, so none replaced it.
    """

    history_bins: int = 1200
    history_style: str = "plain"  # data_tools.synth styles: plain, realistic or mixed
    history_counts: str = "uniform"  # or "abid": ABID's count histogram
    history_max_count: int = 8  # counts drawn evenly from 0..8: a third of the bins above 5, in the open class "6+"
    audit_bins: int = 300
    audit_max_count: int = 8  # the open model audits a bin of 8 as "6+"
    mismatch_rate: float = 0.12
    photo_width: int = 192
    photo_height: int = 176
    image_size: int = 96
    epochs: int = 15
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 1e-4
    loss: str = "ordinal"
    label_smoothing: float = 0.0

    @classmethod
    def tiny(cls) -> DemoPlan:
        """For tests: seconds, not minutes."""
        return cls(history_bins=90, audit_bins=30, photo_width=64, photo_height=56, image_size=32, epochs=1,
                   batch_size=16)

    def training_args(self) -> dict[str, Any]:
        """The train.py hyperparameters this plan trains with (the keys of `resolved_args` they must match)."""
        return {"arch": "resnet18", "image_size": self.image_size, "epochs": self.epochs,
                "batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr,
                "weight_decay": self.weight_decay, "loss": self.loss, "label_smoothing": self.label_smoothing, "seed": 0,
                "max_count": 5, "top_class": "open"}


@dataclass(frozen=True)
class RealPhotoCheck:
    """A recipe's figures on real ABID photos it never saw (argmax decoding), as the benchmark measured them."""

    photos: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    rmse: float
    rmse_ci: tuple[float, float]
    command: str = "python -m bench.bench_sim2real"

    def sentence(self) -> str:
        low, high = self.accuracy_ci
        return (f"{self.accuracy:.1%} accuracy (95% CI {low:.0%}–{high:.0%}) and RMSE {self.rmse:.2f} on "
                f"{self.photos} real ABID photos with 0–5 items that it never saw, measured by `{self.command}`")


# Measured with the default DemoPlan by bench/bench_sim2real.py on the shared sample's 66 bins with 0-5 items
# (see docs/benchmarks.md); rerun the benchmark and update this whenever the plan or the generator changes.
REAL_PHOTO_CHECK = RealPhotoCheck(photos=66, accuracy=0.227, accuracy_ci=(0.121, 0.333), rmse=2.202, rmse_ci=(1.792, 2.579))


def trained_by_demo_recipe(resolved_args: Mapping[str, Any], plan: DemoPlan = DemoPlan()) -> bool:
    """Whether a model's train.py arguments are the demo recipe's, on the demo's own synthetic training bins."""
    if any(resolved_args.get(k) != v for k, v in plan.training_args().items()):
        return False
    train = str(resolved_args.get("train", "")).replace("\\", "/")
    return train.endswith("demo/dataset/train")
