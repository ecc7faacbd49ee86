"""Where the model's evidence lies in a photo: a Grad-CAM map for one count, drawn over the photo.

Grad-CAM (Selvaraju et al. 2017) weighs the last convolutional block's feature maps by the gradient of one class's
score: bright regions raised the score of that count. The maps come from the maintained `grad-cam` package
(pytorch_grad_cam), not from code of our own. The dashboard shows two: for the predicted count and for the record's
count, so an analyst sees whether the model looked at the items at all, and what argued for the record.

Dashboard-only: train.py and inference.py (the SageMaker code) never import this module or `grad-cam`.
The photo goes through the same preprocessing as scoring (modeling.preprocessing, the model's own config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from modeling.artifacts import load_model_dir
from modeling.model import ModelSpec
from modeling.preprocessing import EvalTransform, load_image, normalize_batch

# every architecture BinAudit trains is a torchvision ResNet: its blocks shrink the input by 4, 8, 16 and 32
RESNET_BLOCKS = (("layer4", 32), ("layer3", 16), ("layer2", 8), ("layer1", 4))
MIN_MAP_SIDE = 4  # a map of fewer cells cannot say where in the bin anything is


def target_block(image_size: int) -> tuple[str, int]:
    """The deepest ResNet block whose feature map is at least MIN_MAP_SIDE cells wide at this input size, and that
    width: layer4 (the usual Grad-CAM layer) from 128 px up; a small model's layer4 is 1x1 at 32 px, so layer2."""
    for block, stride in RESNET_BLOCKS:
        if -(-image_size // stride) >= MIN_MAP_SIDE:
            return block, -(-image_size // stride)
    return "layer1", -(-image_size // 4)


@dataclass(frozen=True)
class EvidenceMap:
    label: str  # the count it explains ("3", "6+")
    probability: float  # the model's probability of that count for this photo
    heatmap: np.ndarray  # (S, S) float in [0, 1], at the model's input size
    overlay: np.ndarray  # (H, W, 3) uint8: the photo with the heatmap over it


class Explainer:
    """One model, ready to explain photos: `Explainer.load(model_dir)`, then `maps(photo, class_indices)`."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec) -> None:
        self.model, self.spec = model.eval(), spec
        self.block, self.map_side = target_block(spec.preprocess.image_size)
        self.cam = GradCAM(model=self.model, target_layers=[getattr(self.model, self.block)[-1]])

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> Explainer:
        return cls(*load_model_dir(model_dir, "cpu"))

    def record_class(self, expected: int | None) -> int | None:
        """The class a record falls in (the open class for a count above N), None when the model has none."""
        if expected is None or expected < 0 or self.spec.classes.beyond_range(expected):
            return None
        return self.spec.classes.truncate(expected)

    def maps(self, photo: str | os.PathLike | bytes, class_indices: list[int], *, side: int = 480
             ) -> list[EvidenceMap]:
        """One map per class index, for the photo as the model sees it; overlays at most `side` pixels wide."""
        pre = self.spec.preprocess
        img = load_image(photo)
        x = normalize_batch(EvalTransform(pre.image_size)(img).unsqueeze(0), pre.mean, pre.std)
        with torch.no_grad():
            probs = torch.softmax(self.model(x), dim=1)[0].numpy()
        shown = img.copy()
        shown.thumbnail((side, side), Image.Resampling.BILINEAR)
        rgb = np.asarray(shown, dtype=np.float32) / 255.0
        out = []
        for index in class_indices:
            heatmap = self.cam(input_tensor=x, targets=[ClassifierOutputTarget(int(index))])[0]
            # the model saw the photo squashed to a square: stretch the map back to the photo's shape
            stretched = np.asarray(Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255))
                                   .resize(shown.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
            out.append(EvidenceMap(self.spec.classes.labels[index], float(probs[index]), heatmap,
                                   show_cam_on_image(rgb, stretched, use_rgb=True)))
        return out
