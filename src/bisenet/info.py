"""Model size and cost (parameters, FLOPs by torch's own FLOP counter) and what a weights file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def weights_summary(path: str) -> dict[str, Any]:
    """What a weights file records: kind, arch, classes, iteration, its run's dataset and class names, parameters."""
    from bisenet.checkpoint import model_arch, model_from_weights, read_weights

    ckpt = read_weights(path)
    model = model_from_weights(ckpt, path)  # also proves that the entries fit the arch and class count
    params = dict(model.named_parameters())
    aux = tuple(f"{name}." for name in getattr(model, "aux_heads", ()))
    state = ckpt["model"]
    if "iteration" in ckpt:
        best = ckpt.get("best_miou")
        kind = f"training checkpoint at iteration {ckpt['iteration']}" + (
            f", best val mIoU {100 * best:.2f}%" if isinstance(best, (int, float)) else "")
    elif Path(path).suffix == ".safetensors":
        kind = "eval-only .safetensors weights"
    elif "arch" in ckpt:
        kind = "weights with their arch and class count recorded"
    else:
        kind = "plain state_dict (arch and classes read from its entries' names and shapes)"
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    summary: dict[str, Any] = {
        "path": str(path),
        "kind": kind,
        "arch": model_arch(model),
        "num_classes": model.num_classes,
        "params_file": sum(value.numel() for key, value in state.items() if key in params),
        "aux_heads": any(key.startswith(aux) for key in state) if aux else False,
    }
    if "iteration" in ckpt:
        summary["iteration"] = int(ckpt["iteration"])
        summary["best_miou"] = ckpt.get("best_miou")
    if data.get("dataset"):
        summary["dataset"] = data["dataset"]
    if data.get("class_names"):
        summary["class_names"] = list(data["class_names"])
    return summary
