"""Model size and cost: parameters and FLOPs, counted by torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from bisenet.models import build_model


def count_flops(model: torch.nn.Module, size: tuple[int, int], batch: int = 1) -> int:
    """FLOPs of one forward pass in eval mode (2 per multiply-add; conv and matmul)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, *size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def model_info(arch: str, num_classes: int, size: tuple[int, int]) -> dict[str, int | float | str]:
    """Parameters (inference and training model) and GFLOPs at `size` (H, W)."""
    model = build_model(arch, num_classes)
    aux = tuple(f"{name}." for name in model.aux_heads)
    total = sum(p.numel() for p in model.parameters())
    infer = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(aux))
    return {
        "arch": arch,
        "num_classes": num_classes,
        "size": f"{size[0]}x{size[1]}",
        "params_inference": infer,
        "params_training": total,
        "gflops": count_flops(model, size) / 1e9,
    }
