"""The model's classes and what each one means: exact counts 0..N, and optionally one open class "N+1 or more".

    closed (the published ABID setting):  classes 0..N, one per item count; a bin with more items is outside
                                          the model's range (it never saw one, and cannot say so).
    open (the default for new datasets):  classes 0..N and one more, index N+1, meaning "N+1 or more" items,
                                          labelled "6+" for N = 5 (and its class folder is named so).

In count arithmetic (RMSE, MAE, the expected count, the confusion matrix) the open class counts as N+1: counts
are truncated at N+1. A true count of 9 and a prediction of "6+" is therefore a hit, and a prediction of 4 is
off by 2. Whatever is shown to a person uses `label()`, which writes the open class as "N+1+", never as N+1.

Stdlib only: train.py and inference.py import it (modeling.CONTAINER_MODULES).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPEN, CLOSED = "open", "closed"
TOP_CLASSES = (CLOSED, OPEN)


def open_label(max_count: int) -> str:
    """The open class's label and class folder name: "6+" for max_count 5."""
    return f"{max_count + 1}+"


@dataclass(frozen=True)
class CountClasses:
    """Class index -> count and label for a model with exact classes 0..max_count and an optional open top class."""

    max_count: int
    open_top: bool = False

    def __post_init__(self) -> None:
        if self.max_count < 0:
            raise ValueError(f"max_count must not be negative, got {self.max_count}")

    @property
    def top_class(self) -> str:
        return OPEN if self.open_top else CLOSED

    @property
    def num_classes(self) -> int:
        return self.max_count + 1 + int(self.open_top)

    @property
    def class_to_count(self) -> tuple[int, ...]:
        """Class index -> count; the open class counts as max_count + 1 (counts truncated at N+1)."""
        return tuple(range(self.num_classes))

    @property
    def open_index(self) -> int | None:
        return self.max_count + 1 if self.open_top else None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.label(c) for c in self.class_to_count)

    def label(self, count: int | None) -> str:
        """How a count reads beside this model: "3"; "6+" for any count above N when the top class is open."""
        if count is None:
            return "–"
        count = int(count)
        return open_label(self.max_count) if self.open_top and count > self.max_count else str(count)

    def beyond_range(self, count: int) -> bool:
        """True when a bin of `count` items has no class here (a closed model, more than N items)."""
        return not self.open_top and count > self.max_count

    def truncate(self, count: int) -> int:
        """The class (and the count arithmetic's value) of a true count; ValueError when it has none."""
        if self.beyond_range(count):
            raise ValueError(f"a count of {count} is beyond this closed model's range 0..{self.max_count}")
        return min(int(count), self.max_count + 1)

    def to_dict(self) -> dict[str, Any]:
        """What model_config.json says about the classes, explicitly."""
        return {"max_count": self.max_count, "top_class": self.top_class, "num_classes": self.num_classes,
                "class_to_count": list(self.class_to_count), "class_labels": list(self.labels)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CountClasses:
        """From a model_config.json (or a registered version's config). A config written before the open class
        existed has no "top_class": it is closed, with classes 0..max_count as before."""
        top = config.get("top_class", CLOSED)
        if top not in TOP_CLASSES:
            raise ValueError(f"top_class must be one of {', '.join(TOP_CLASSES)}, got {top!r}")
        if "max_count" in config:
            max_count = int(config["max_count"])
        else:
            max_count = len(config["class_to_count"]) - 1 - int(top == OPEN)
        return cls(max_count, top == OPEN)
