"""Optimiser and learning-rate schedule of the reference recipe."""

from __future__ import annotations

import torch
from torch import nn

from bisenet.config import TrainConfig


def parameter_groups(model: nn.Module, train_cfg: TrainConfig) -> list[dict]:
    """SGD groups: no weight decay on BN and biases; heads get `head_lr_factor` x lr."""
    head_prefixes = tuple(f"{name}." for name in getattr(model, "head_modules", ()))
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.removeprefix("module.").startswith(head_prefixes)
        decays = param.dim() > 1  # conv and linear weights; BN weights and biases are 1-D
        groups.setdefault((is_head, decays), []).append(param)
    result = []
    for (is_head, decays), params in sorted(groups.items()):
        result.append({
            "params": params,
            "lr_scale": train_cfg.head_lr_factor if is_head else 1.0,
            "weight_decay": train_cfg.weight_decay if decays else 0.0,
            "name": f"{'head' if is_head else 'body'}_{'decay' if decays else 'no_decay'}",
        })
    return result


def build_optimizer(model: nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (or AdamW) over `parameter_groups`; lr is set per step by the schedule."""
    groups = parameter_groups(model, train_cfg)
    for group in groups:
        group["lr"] = train_cfg.lr * group["lr_scale"]
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train_cfg.lr, betas=(train_cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=train_cfg.momentum)


def lr_factor(iteration: int, train_cfg: TrainConfig) -> float:
    """Warm-up (exponential from warmup_ratio) then poly decay to 0 at max_iters."""
    warmup = min(train_cfg.warmup_iters, train_cfg.max_iters - 1)
    if iteration < warmup:
        return train_cfg.warmup_ratio ** (1.0 - iteration / warmup)
    progress = (iteration - warmup) / max(1, train_cfg.max_iters - warmup)
    return max(0.0, 1.0 - progress) ** train_cfg.poly_power


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor` (its state is the iteration count)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, train_cfg))
