"""Losses: OHEM cross-entropy on the main output plus weighted auxiliary outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from bisenet.errors import ConfigError, DataError

if TYPE_CHECKING:
    from bisenet.config import TrainConfig


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Per-pixel cross-entropy of low-resolution logits bilinearly upsampled to the label size.

    Equal to F.cross_entropy(F.interpolate(logits, size), labels, reduction="none"), but the
    full-size logits are neither stored for backward nor kept for more than one image at a
    time: backward recomputes them. With 5 heads x 19 classes at 512x512 that full-size
    work was half of a bf16 training step on CPU. Each low-resolution pixel is first shifted
    by its largest logit: bilinear weights are convex, so every upsampled value is then <= 0
    and exp() cannot overflow, which saves log-sum-exp's own max pass and subtraction over
    the full-size tensor (the loss is unchanged: a per-pixel shift cancels in softmax).
    Everything runs channels_last, where bilinear upsampling and its adjoint are 2x faster.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        size = labels.shape[-2:]
        losses, lses = [], []
        for image, label in zip(logits.split(1), labels.split(1)):
            up = F.interpolate(_shifted(image), size=size, mode="bilinear", align_corners=False)
            valid = label != ignore_index
            target = label.masked_fill(~valid, 0).unsqueeze(1)
            picked = up.gather(1, target).squeeze(1)
            lse = up.exp_().sum(1).log_()
            if not bool(lse.min() > _LOWEST_SAFE_LSE):  # neighbours disagree wildly: exp() underflowed
                lse = torch.logsumexp(F.interpolate(_shifted(image), size=size, mode="bilinear", align_corners=False), 1)
            losses.append((lse - picked).masked_fill_(~valid, 0.0))
            lses.append(lse)
        ctx.save_for_backward(logits, labels, torch.cat(lses))
        ctx.ignore_index = ignore_index
        return torch.cat(losses)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, labels, lse = ctx.saved_tensors
        size = list(labels.shape[-2:])
        grads = []
        for image, label, image_lse, image_grad in zip(logits.split(1), labels.split(1), lse.split(1), grad.split(1)):
            low = _shifted(image)
            up = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
            valid = label != ctx.ignore_index
            target = label.masked_fill(~valid, 0).unsqueeze(1)
            weight = (image_grad * valid).unsqueeze(1)
            # d loss / d up = weight * (softmax(up) - onehot(target)), computed in place;
            # softmax = exp(up) / exp(lse), the division folded into the per-pixel weight.
            if bool(image_lse.min() > _LOWEST_SAFE_LSE):
                up.exp_().mul_(weight * torch.exp(-image_lse).unsqueeze(1))
            else:
                up.sub_(image_lse.unsqueeze(1)).exp_().mul_(weight)
            up.scatter_add_(1, target, -weight)
            grads.append(torch.ops.aten.upsample_bilinear2d_backward(up, size, list(low.shape), False, None, None))
        return torch.cat(grads).to(logits.dtype), None, None


# Below this the shifted log-sum-exp has lost precision to float32 underflow (exp(-87) is the
# smallest normal float), so the exact path recomputes it.
_LOWEST_SAFE_LSE = -80.0


def _shifted(image: torch.Tensor) -> torch.Tensor:
    """One image's float32 logits, channels_last, minus each pixel's largest logit."""
    low = image.float().contiguous(memory_format=torch.channels_last)
    return low - low.amax(1, keepdim=True)


def check_labels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """`labels` as N x H x W int64 for N x C x h x w `logits`: any integer dtype, N x 1 x H x W squeezed.

    Refuses (DataError, one line) a float or bool dtype, another shape, and a value outside
    [0, C) that is not the ignore index, which torch would report as a bare index error (or, on
    CUDA, a device-side assert that kills the process).
    """
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(f"labels are {labels.dtype}; pass integer class ids (e.g. labels.long()), "
                        f"with the ignore index {ignore_index} for unlabelled pixels")
    if labels.dim() == 4 and labels.shape[1] == 1:
        labels = labels.squeeze(1)
    if labels.dim() != 3 or logits.dim() != 4 or labels.shape[0] != logits.shape[0]:
        raise DataError(f"labels of shape {tuple(labels.shape)} do not fit logits of shape {tuple(logits.shape)}; "
                        "pass N x H x W (or N x 1 x H x W) class ids, one map per image")
    labels = labels.long()
    num_classes = logits.shape[1]
    # One fused pass and one host sync (the OHEM count syncs anyway); only the error path names values.
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if bad.any():
        values = torch.unique(labels[bad])
        shown = ", ".join(str(int(v)) for v in values[:10]) + (" ..." if values.numel() > 10 else "")
        raise DataError(f"labels hold values {shown} outside [0, {num_classes}) that are not the ignore index "
                        f"{ignore_index}; check data.num_classes / data.label_map (bisenet data check)")
    return labels


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """N x H x W float32 cross-entropy (0 at ignored pixels); smaller logits are bilinearly upsampled first."""
    return _pixel_cross_entropy(logits, check_labels(logits, labels, ignore_index), ignore_index)


def _pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """pixel_cross_entropy on labels that check_labels has passed."""
    if logits.shape[-2:] == labels.shape[-2:]:
        return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")
    return _UpsampledCrossEntropy.apply(logits, labels, ignore_index)


class OhemCrossEntropy(nn.Module):
    """Cross-entropy averaged over the hard pixels only.

    A pixel is hard when its loss exceeds -ln(thresh), i.e. the correct class gets less
    than `thresh` probability; at least `min_kept_fraction` of the valid pixels are kept
    (the hardest ones), so the loss never averages over almost nothing.
    """

    def __init__(self, thresh: float = 0.7, min_kept_fraction: float = 1 / 16, ignore_index: int = 255) -> None:
        super().__init__()
        if not 0 < thresh <= 1:  # 0: -ln fails; 1: every pixel is "hard" (plain cross-entropy); above 1 meaningless
            raise ConfigError(f"OHEM thresh {thresh} (train.ohem_thresh) must lie in (0, 1], e.g. 0.7")
        self.loss_thresh = -math.log(thresh)
        self.min_kept_fraction = min_kept_fraction
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean loss over the hard pixels (at least the hardest min_kept_fraction of the valid ones)."""
        return self.forward_checked(logits, check_labels(logits, labels, self.ignore_index))

    def forward_checked(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """forward on labels that check_labels has passed (SegmentationLoss checks them once for all heads)."""
        pixel_loss = _pixel_cross_entropy(logits, labels, self.ignore_index).flatten()
        num_valid = int((labels != self.ignore_index).sum())
        if num_valid == 0:
            return pixel_loss.sum() * 0.0  # keeps the graph; nothing to learn from this batch
        min_kept = max(1, int(num_valid * self.min_kept_fraction))
        hard = pixel_loss > self.loss_thresh
        num_hard = int(hard.sum())
        if num_hard < min_kept:
            return pixel_loss.topk(min_kept).values.mean()
        # A masked sum, not pixel_loss[hard]: no index tensor and a dense, cheap backward.
        return (pixel_loss * hard).sum() / num_hard


class CrossEntropy(nn.Module):
    """Plain cross-entropy over the valid pixels (0 when a batch has none)."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean loss over the pixels that are not the ignore index."""
        return self.forward_checked(logits, check_labels(logits, labels, self.ignore_index))

    def forward_checked(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """forward on labels that check_labels has passed (SegmentationLoss checks them once for all heads)."""
        num_valid = int((labels != self.ignore_index).sum())
        if num_valid == 0:
            return logits.float().sum() * 0.0
        return _pixel_cross_entropy(logits, labels, self.ignore_index).sum() / num_valid


class SegmentationLoss(nn.Module):
    """Main loss plus weighted auxiliary-head losses; returns (total, per-head losses)."""

    def __init__(self, criterion: nn.Module, aux_weights: Sequence[float], check_values: bool = True) -> None:
        super().__init__()
        self.criterion = criterion
        self.aux_weights = list(aux_weights)
        # False where the labels come from our dataset, which checks each label's values once: no
        # per-step pass over the batch and host sync for what cannot have changed.
        self.check_values = check_values

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(main loss + sum of weight x aux loss, [main loss, aux losses...])."""
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        # One output is an eval-mode model (main logits only, e.g. a validation loss); else one per aux weight.
        if len(outputs) != 1 and len(outputs) - 1 != len(self.aux_weights):
            raise ConfigError(f"the model returned {len(outputs) - 1} aux outputs but {len(self.aux_weights)} aux "
                              "weights are set (train.aux_weights: one per aux head)")
        criterion = self.criterion
        if hasattr(criterion, "forward_checked"):  # ours: the labels are checked once, not once per head
            labels = check_labels(outputs[0], labels, criterion.ignore_index) if self.check_values else labels.long()
            criterion = criterion.forward_checked
        parts = [criterion(out, labels) for out in outputs]
        total = parts[0] + sum(w * p for w, p in zip(self.aux_weights, parts[1:]))
        return total, parts


def build_loss(train_cfg: TrainConfig, ignore_index: int, num_aux: int, check_values: bool = True) -> SegmentationLoss:
    """The configured criterion ('ohem' or 'ce') on the main and `num_aux` aux outputs (see SegmentationLoss)."""
    if train_cfg.loss == "ohem":
        criterion = OhemCrossEntropy(train_cfg.ohem_thresh, train_cfg.ohem_min_kept_fraction, ignore_index)
    else:
        criterion = CrossEntropy(ignore_index)
    weights = train_cfg.aux_weights if train_cfg.aux_weights is not None else [1.0] * num_aux
    if len(weights) != num_aux:
        raise ConfigError(f"train.aux_weights has {len(weights)} values but the model has {num_aux} aux heads")
    return SegmentationLoss(criterion, weights, check_values)
