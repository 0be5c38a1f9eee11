"""Losses: OHEM cross-entropy on the main output plus weighted auxiliary outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class OhemCrossEntropy(nn.Module):
    """Cross-entropy averaged over the hard pixels only.

    A pixel is hard when its loss exceeds -ln(thresh), i.e. the correct class gets less
    than `thresh` probability; at least `min_kept_fraction` of the valid pixels are kept
    (the hardest ones), so the loss never averages over almost nothing.
    """

    def __init__(self, thresh: float = 0.7, min_kept_fraction: float = 1 / 16, ignore_index: int = 255) -> None:
        super().__init__()
        self.loss_thresh = -math.log(thresh)
        self.min_kept_fraction = min_kept_fraction
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pixel_loss = F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index, reduction="none").flatten()
        num_valid = int((labels != self.ignore_index).sum())
        if num_valid == 0:
            return pixel_loss.sum() * 0.0  # keeps the graph; nothing to learn from this batch
        min_kept = max(1, int(num_valid * self.min_kept_fraction))
        hard = pixel_loss[pixel_loss > self.loss_thresh]
        if hard.numel() < min_kept:
            hard = pixel_loss.topk(min_kept).values
        return hard.mean()


class CrossEntropy(nn.Module):
    """Plain cross-entropy over the valid pixels (0 when a batch has none)."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not (labels != self.ignore_index).any():
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index)


class SegmentationLoss(nn.Module):
    """Main loss plus weighted auxiliary-head losses; returns (total, per-head losses)."""

    def __init__(self, criterion: nn.Module, aux_weights: Sequence[float]) -> None:
        super().__init__()
        self.criterion = criterion
        self.aux_weights = list(aux_weights)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        if len(outputs) - 1 > len(self.aux_weights):
            raise ValueError(f"model returned {len(outputs) - 1} aux outputs but {len(self.aux_weights)} aux weights are set")
        parts = [self.criterion(out, labels) for out in outputs]
        total = parts[0] + sum(w * p for w, p in zip(self.aux_weights, parts[1:]))
        return total, parts


def build_loss(train_cfg, ignore_index: int, num_aux: int) -> SegmentationLoss:
    """The configured criterion ('ohem' or 'ce') on the main and `num_aux` aux outputs."""
    if train_cfg.loss == "ohem":
        criterion = OhemCrossEntropy(train_cfg.ohem_thresh, train_cfg.ohem_min_kept_fraction, ignore_index)
    else:
        criterion = CrossEntropy(ignore_index)
    weights = train_cfg.aux_weights if train_cfg.aux_weights is not None else [1.0] * num_aux
    if len(weights) != num_aux:
        from bisenet.errors import ConfigError

        raise ConfigError(f"train.aux_weights has {len(weights)} values but the model has {num_aux} aux heads")
    return SegmentationLoss(criterion, weights)
