"""The counting network: a torchvision ResNet whose head has one class per item count (index == count), and, for
an open model, one more class meaning "more than max_count" (modeling.counts).

`ModelSpec` holds the constructor arguments and the preprocessing; it is written to model_config.json and
is all that serving needs to rebuild the exact model (nanoGPT's habit: no model code copied anywhere).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from modeling.counts import CLOSED, OPEN, TOP_CLASSES, CountClasses, open_label
from modeling.preprocessing import PreprocessConfig
from modeling.settings import ARCHS, MAX_COUNT_LIMIT, PRETRAINED_CHOICES

_IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}


class ModelConfigError(ValueError):
    """A model folder or its config cannot be used; the message says what is wrong."""


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for and cannot be had; the message names the ways out."""


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds the model and its input exactly: architecture, classes -> counts, preprocessing.

    top_class "closed": classes 0..max_count; "open": one more class, "max_count + 1 or more" (modeling.counts).
    A config written before the open class existed has no top_class and loads as closed, as it always did.
    """

    arch: str
    max_count: int
    preprocess: PreprocessConfig
    class_to_count: tuple[int, ...] = field(default=())
    top_class: str = CLOSED

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ModelConfigError(f"unknown arch {self.arch!r}; only {', '.join(ARCHS)} are supported")
        if not 1 <= self.max_count <= MAX_COUNT_LIMIT:  # before range(max_count + 1) below allocates anything
            raise ModelConfigError(f"max_count must be from 1 to {MAX_COUNT_LIMIT}, got {self.max_count}")
        if self.top_class not in TOP_CLASSES:
            raise ModelConfigError(f"top_class must be one of {', '.join(TOP_CLASSES)}, got {self.top_class!r}")
        expected = list(self.classes.class_to_count)
        if not self.class_to_count:
            object.__setattr__(self, "class_to_count", tuple(expected))
        if list(self.class_to_count) != expected:
            top = f", the last meaning {open_label(self.max_count)}" if self.top_class == OPEN else ""
            raise ModelConfigError(
                f"class_to_count must be [0..{expected[-1]}] (class index == item count{top}), "
                f"got {list(self.class_to_count)}"
            )

    @property
    def classes(self) -> CountClasses:
        return CountClasses(self.max_count, self.top_class == OPEN)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **self.classes.to_dict(), **self.preprocess.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        try:
            spec = cls(
                arch=str(data["arch"]),
                max_count=int(data["max_count"]),
                preprocess=PreprocessConfig.from_dict(dict(data)),
                class_to_count=tuple(int(c) for c in data["class_to_count"]),
                top_class=str(data.get("top_class", CLOSED)),
            )
        except KeyError as exc:
            raise ModelConfigError(f"model config lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(1e400)
            if isinstance(exc, ModelConfigError):
                raise
            raise ModelConfigError(f"model config is invalid: {exc}") from None
        if not _same_int(data.get("num_classes", spec.num_classes), spec.num_classes):
            raise ModelConfigError(
                f"model config says num_classes={data['num_classes']} but class_to_count has {spec.num_classes}"
            )
        labels = data.get("class_labels")
        if labels is not None and list(labels) != list(spec.classes.labels):
            raise ModelConfigError(f"model config's class_labels {list(labels)} do not match its classes "
                                   f"{list(spec.classes.labels)}")
        return spec


def _same_int(value: Any, expected: int) -> bool:
    try:
        return int(value) == expected
    except (TypeError, ValueError, OverflowError):
        return False


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised ResNet with a `num_classes` head."""
    if arch not in ARCHS:
        raise ModelConfigError(f"unknown arch {arch!r}; only {', '.join(ARCHS)} are supported")
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


def head_size(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of output classes of a ResNet state dict (rows of fc.weight)."""
    if "fc.weight" not in state_dict:
        raise ModelConfigError("state dict has no fc.weight: not a torchvision ResNet")
    return int(state_dict["fc.weight"].shape[0])


def load_backbone(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor except a head of a different size (ImageNet's 1000 classes); strict otherwise."""
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise PretrainedWeightsError(f"{source} is not a state_dict (a mapping of parameter names to tensors)")
    own = model.state_dict()
    body = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    missing = [k for k in own if not k.startswith("fc.") and k not in body]
    unexpected = [k for k in body if k not in own]
    misshapen = [k for k in body if k in own and body[k].shape != own[k].shape]
    if missing or unexpected or misshapen:
        raise PretrainedWeightsError(
            f"{source} does not fit {type(model).__name__} of this --arch: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(misshapen)} differently shaped tensors "
            f"(e.g. {(missing + unexpected + misshapen)[:3]})"
        )
    head = {k: v for k, v in state_dict.items() if k.startswith("fc.") and k in own and v.shape == own[k].shape}
    model.load_state_dict({**body, **head}, strict=False)


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights from the torch cache, downloading them when the cache lacks them."""
    weights = getattr(torchvision.models, _IMAGENET_WEIGHTS[arch]).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any network or disk failure has the same ways out
        raise PretrainedWeightsError(
            f"--pretrained imagenet: the {arch} ImageNet weights are not in the torch cache ({cached}) and "
            f"could not be downloaded ({type(exc).__name__}: {exc}). Ways out: connect to the internet once "
            f"(or copy {os.path.basename(weights.url)} into {cached.parent}, or point TORCH_HOME at a cache that "
            f"has it); or pass --weights-path FILE with a saved state_dict; or train from scratch with "
            f"--pretrained none."
        ) from None


def create_model(arch: str, num_classes: int, pretrained: str = "none", weights_path: str | None = None) -> nn.Module:
    """The training model: random init, ImageNet weights, or a state dict file (`weights_path` wins)."""
    if pretrained not in PRETRAINED_CHOICES:
        raise ModelConfigError(f"unknown --pretrained {pretrained!r}; only {', '.join(PRETRAINED_CHOICES)}")
    model = build_model(arch, num_classes)
    if weights_path:
        if not os.path.isfile(weights_path):
            raise PretrainedWeightsError(f"--weights-path {weights_path}: no such file")
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - not a torch file, or one that needs unsafe unpickling
            raise PretrainedWeightsError(f"cannot read --weights-path {weights_path}: {exc}") from None
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):  # a training checkpoint
            state = state["model"]
        load_backbone(model, state, weights_path)
    elif pretrained == "imagenet":
        load_backbone(model, imagenet_state_dict(arch), f"ImageNet {arch} weights")
    return model


def load_trained(state_dict: Mapping[str, torch.Tensor], spec: ModelSpec) -> nn.Module:
    """Rebuild a trained model from its spec and check the head matches class_to_count."""
    classes = head_size(state_dict)
    if classes != spec.num_classes:
        raise ModelConfigError(
            f"model.pth has a {classes}-class head but model_config.json maps {spec.num_classes} classes "
            f"to counts {list(spec.class_to_count)}"
        )
    model = build_model(spec.arch, spec.num_classes)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:  # missing, unexpected or differently shaped tensors: weights of another architecture
        own = model.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        misshapen = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
        raise ModelConfigError(
            f"model.pth does not fit arch {spec.arch!r} of model_config.json: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(misshapen)} differently shaped tensors "
            f"(e.g. {(missing + unexpected + misshapen)[:3]})") from None
    return model
