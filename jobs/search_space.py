"""The hyperparameter search space: one definition both tuners use (the local one samples it, seeded; SageMaker's
gets `sagemaker.core.parameter` ranges). Names are TrainingParams fields ("batch_size"). The JSON form (CLI
`--search-space`, the job's stored params):

    {"lr": {"type": "continuous", "low": 0.0001, "high": 0.1, "log": true},
     "batch_size": {"type": "integer", "low": 16, "high": 64},
     "arch": {"type": "categorical", "values": ["resnet18", "resnet34"]}}
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PARAMETER_TYPES = ("continuous", "integer", "categorical")


class SearchSpaceError(ValueError):
    """A search space that cannot be sampled; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class Continuous:
    low: float
    high: float
    log: bool = False  # sample the exponent uniformly: learning rates and weight decays span decades

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise SearchSpaceError(f"continuous range needs low < high, got {self.low} .. {self.high}")
        if self.log and self.low <= 0:
            raise SearchSpaceError(f"a log-scale range needs low > 0, got {self.low}")

    def _to_unit(self, value: float) -> float:
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> float:
        u = min(1.0, max(0.0, u))
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def sample(self, rng: random.Random) -> float:
        return float(f"{self._from_unit(rng.random()):.6g}")

    def near(self, center: float, rng: random.Random, spread: float) -> float:
        """A value around `center`: Gaussian in the (log-)unit interval, clipped to the range."""
        return float(f"{self._from_unit(self._to_unit(center) + rng.gauss(0.0, spread)):.6g}")


@dataclass(frozen=True)
class Integer:
    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise SearchSpaceError(f"integer range needs low <= high, got {self.low} .. {self.high}")
        if self.log and self.low <= 0:
            raise SearchSpaceError(f"a log-scale range needs low > 0, got {self.low}")

    def _as_continuous(self) -> Continuous:
        return Continuous(self.low - 0.4999 if not self.log else max(self.low - 0.4999, 0.5), self.high + 0.4999,
                          self.log)

    def sample(self, rng: random.Random) -> int:
        if self.low == self.high:
            return self.low
        return int(round(self._as_continuous().sample(rng)))

    def near(self, center: int, rng: random.Random, spread: float) -> int:
        if self.low == self.high:
            return self.low
        return min(self.high, max(self.low, int(round(self._as_continuous().near(center, rng, spread)))))


@dataclass(frozen=True)
class Categorical:
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise SearchSpaceError("a categorical parameter needs at least one value")
        object.__setattr__(self, "values", tuple(self.values))

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.values)

    def near(self, center: Any, rng: random.Random, spread: float) -> Any:
        """Keep the best value most of the time; try another one with probability ~2*spread."""
        return center if center in self.values and rng.random() > 2 * spread else rng.choice(self.values)


Parameter = Continuous | Integer | Categorical
SearchSpace = Mapping[str, Parameter]

# The space: log-scale lr and weight decay, batch size, arch, image size.
DEFAULT_SEARCH_SPACE: dict[str, Parameter] = {
    "lr": Continuous(1e-4, 1e-1, log=True),
    "weight_decay": Continuous(1e-6, 1e-3, log=True),
    "batch_size": Integer(16, 64),
    "arch": Categorical(("resnet18", "resnet34", "resnet50")),
    "image_size": Categorical((160, 224)),
    # the ordinal loss beat cross-entropy on the synthetic benchmark (docs/benchmarks.md), by less than
    # the seed-to-seed noise can rule out: let the tuner decide
    "loss": Categorical(("ce", "ordinal")),
}


# ---------------------------------------------------------------- sampling

def sample_random(space: SearchSpace, rng: random.Random) -> dict[str, Any]:
    """One independent draw per parameter (names in sorted order, so a seed gives the same trials)."""
    return {name: space[name].sample(rng) for name in sorted(space)}


def sample_near(space: SearchSpace, best: Mapping[str, Any], rng: random.Random, spread: float = 0.15
                ) -> dict[str, Any]:
    """A draw around the best trial so far (the local "bayesian" strategy's exploitation step)."""
    return {name: space[name].near(best[name], rng, spread) if name in best else space[name].sample(rng)
            for name in sorted(space)}


# ---------------------------------------------------------------- JSON

def parameter_to_json(param: Parameter) -> dict[str, Any]:
    if isinstance(param, Categorical):
        return {"type": "categorical", "values": list(param.values)}
    kind = "continuous" if isinstance(param, Continuous) else "integer"
    return {"type": kind, "low": param.low, "high": param.high, "log": param.log}


def parameter_from_json(name: str, doc: Any) -> Parameter:
    if not isinstance(doc, Mapping) or doc.get("type") not in PARAMETER_TYPES:
        raise SearchSpaceError(f"search space entry {name!r} needs \"type\": one of {', '.join(PARAMETER_TYPES)}")
    try:
        if doc["type"] == "categorical":
            values = doc["values"]
            if not isinstance(values, list):
                raise SearchSpaceError(f"search space entry {name!r}: \"values\" must be a list")
            return Categorical(tuple(values))
        if doc["type"] == "continuous":
            return Continuous(float(doc["low"]), float(doc["high"]), bool(doc.get("log", False)))
        return Integer(int(doc["low"]), int(doc["high"]), bool(doc.get("log", False)))
    except KeyError as exc:
        raise SearchSpaceError(f"search space entry {name!r} lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"search space entry {name!r}: {exc}") from None


def space_to_json(space: SearchSpace) -> dict[str, Any]:
    return {name: parameter_to_json(param) for name, param in space.items()}


def space_from_json(doc: Mapping[str, Any]) -> dict[str, Parameter]:
    if not isinstance(doc, Mapping) or not doc:
        raise SearchSpaceError("a search space is a non-empty JSON object of name -> {\"type\": ...}")
    return {name: parameter_from_json(name, entry) for name, entry in doc.items()}


# ---------------------------------------------------------------- SageMaker

def to_sagemaker_range(param: Parameter):
    """The `sagemaker.core.parameter` range for one parameter (imports the SDK: AWS path only)."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    if isinstance(param, Categorical):
        return CategoricalParameter([str(v) for v in param.values])
    scaling = "Logarithmic" if param.log else "Linear"
    if isinstance(param, Continuous):
        return ContinuousParameter(param.low, param.high, scaling_type=scaling)
    return IntegerParameter(param.low, param.high, scaling_type=scaling)
