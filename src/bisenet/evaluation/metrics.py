"""The official Cityscapes metric: one confusion matrix over the whole split, then IoU per class.

The matrix has one row per class (ground truth) and one column per class plus a last
"other" column for predicted values that are not a class (e.g. 255 in a saved PNG): those
pixels are false negatives of their ground-truth class and false positives of nobody, as in
cityscapesScripts (where predicting an ignored label id does the same). Ground-truth
ignore pixels are counted nowhere. No +1 smoothing anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist


def new_confusion(num_classes: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """An empty C x (C+1) int64 confusion matrix (rows: ground truth; last column: not a class)."""
    return torch.zeros(num_classes, num_classes + 1, dtype=torch.int64, device=device)


def update_confusion(confusion: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Add one batch of (pred, target) label maps to `confusion` in place, on its device.

    Target values outside [0, C) are ignored; predictions outside [0, C) land in the last column.
    """
    num_classes = confusion.shape[0]
    pred = pred.reshape(-1).to(confusion.device, non_blocking=True)
    target = target.reshape(-1).to(confusion.device, non_blocking=True)
    valid = (target >= 0) & (target < num_classes)
    target = target[valid].long()
    pred = pred[valid].long()
    pred = torch.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = torch.bincount(target * (num_classes + 1) + pred, minlength=confusion.numel())
    confusion += counts.view_as(confusion)
    return confusion


def all_reduce_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Sum the confusion matrix over processes when torch.distributed is initialised (no-op otherwise)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(confusion, op=dist.ReduceOp.SUM)
    return confusion


def compute_metrics(confusion: torch.Tensor | np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """mIoU, per-class IoU (None for classes absent from both prediction and GT), pixel acc, fwIoU.

    Accepts a C x C or C x (C+1) matrix (rows: ground truth, columns: prediction).
    """
    cm = torch.as_tensor(confusion).detach().to("cpu", torch.float64)
    num_classes = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a confusion matrix of {num_classes} classes")
    tp = cm.diagonal()[:num_classes] if cm.shape[1] > num_classes else cm.diagonal()
    gt_total = cm.sum(dim=1)  # TP + FN (includes predictions that are not a class)
    pred_total = cm[:, :num_classes].sum(dim=0)  # TP + FP (GT-ignored pixels never got here)
    union = gt_total + pred_total - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    total = gt_total.sum()
    freq = gt_total / total if total > 0 else torch.zeros_like(gt_total)
    iou_values = [float(v) if ok else None for v, ok in zip(iou.tolist(), present.tolist())]
    return {
        "mIoU": float(iou[present].mean()) if present.any() else None,
        "IoU": dict(zip(names, iou_values)),
        "pixel_acc": float(tp.sum() / total) if total > 0 else None,
        "fwIoU": float((freq * iou)[present].sum()) if total > 0 else None,
        "pixels": int(total),
    }


def confusion_to_list(confusion: torch.Tensor) -> list[list[int]]:
    """The C x C part of the matrix as plain ints (for JSON)."""
    num_classes = confusion.shape[0]
    return confusion[:, :num_classes].cpu().tolist()


def confusion_fields(confusion: torch.Tensor) -> dict[str, list]:
    """The JSON's "confusion_matrix" (C x C) and "predicted_ignore" (per true class, pixels predicted as no class).

    Together they hold every scored pixel, so the metrics recomputed from them equal the reported ones;
    predicted_ignore is all zeros unless saved predictions (--pred-dir) hold values such as 255.
    """
    num_classes = confusion.shape[0]
    other = confusion[:, num_classes] if confusion.shape[1] > num_classes else torch.zeros(num_classes, dtype=torch.int64)
    return {"confusion_matrix": confusion_to_list(confusion), "predicted_ignore": other.cpu().tolist()}
