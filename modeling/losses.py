"""Training losses: plain cross-entropy, and an ordinal-aware loss that knows counts are ordered.

`--loss ordinal` is cross-entropy plus a squared Earth Mover's Distance term (Hou, Yu & Samaras 2016):

    loss = CE(logits, y; label smoothing) + w * sum_k (P(count <= k) - [y <= k])^2

The EMD term compares cumulative distributions, so probability put on a count far from the truth costs more
than probability on a neighbour (for a peaked prediction it equals |predicted - true|), which is what RMSE
rewards. Cross-entropy stays in the sum because the audit needs calibrated probabilities
(`mismatch_probability`), and EMD alone learns slowly from a random start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modeling.settings import LOSSES


class OrdinalEMDLoss(nn.Module):
    """Cross-entropy plus `emd_weight` x squared EMD between the predicted and the true count distributions."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, emd_weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.emd_weight = emd_weight
        self.register_buffer("classes", torch.arange(num_classes), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        return ce + self.emd_weight * squared_emd(logits, target, self.classes)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, label_smoothing={self.label_smoothing}, emd_weight={self.emd_weight}"


def squared_emd(logits: torch.Tensor, target: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum_k (CDF_pred(k) - CDF_true(k))^2, computed in float32 (safe under AMP)."""
    cdf_pred = logits.float().softmax(dim=1).cumsum(dim=1)
    cdf_true = (classes.unsqueeze(0) >= target.unsqueeze(1)).float()
    return (cdf_pred - cdf_true).pow(2).sum(dim=1).mean()


def build_loss(name: str, num_classes: int, label_smoothing: float = 0.0, ordinal_weight: float = 1.0) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "ordinal":
        return OrdinalEMDLoss(num_classes, label_smoothing=label_smoothing, emd_weight=ordinal_weight)
    raise ValueError(f"Invalid loss {name!r}. Only {', '.join(LOSSES)} are supported.")
