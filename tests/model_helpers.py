"""Helpers shared by the model tests: small inputs, reference-format state_dicts, comparisons."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

import bisenet

# The published checkpoints' state_dict listings (entry name, shape, dtype; 19 classes, training
# mode), copied from the project's reference notes so these tests need no shared folder.
REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference"
SIZE = (64, 96)  # H, W: multiples of 32, not square
BATCH = 2
ARCHS = ("bisenetv1", "bisenetv2")
AUX_PREFIXES = {"bisenetv1": ("conv_out16.", "conv_out32."), "bisenetv2": ("aux2.", "aux3.", "aux4.", "aux5_4.")}


def make_input(batch: int = BATCH, size: tuple[int, int] = SIZE, seed: int = 0) -> torch.Tensor:
    """A reproducible random image batch."""
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def eval_bn_train_heads(model: nn.Module) -> nn.Module:
    """Train mode (so aux heads run) with every BatchNorm and Dropout in eval mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            module.eval()
    return model


@torch.no_grad()
def calibrate_bn(model: nn.Module, steps: int = 3) -> nn.Module:
    """Set BN running stats from a few train-mode forwards (cumulative average), then eval."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for step in range(steps):
        model(make_input(seed=100 + step))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model.eval()


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the reference's scale (at least 1)."""
    return ((a.float() - b.float()).abs().max() / b.abs().max().clamp(min=1.0)).item()


def random_state_dict(arch: str, num_classes: int = 19, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Every entry random: He-scaled conv weights, BN affine near 1/0, positive random variances."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, value in bisenet.build_model(arch, num_classes).state_dict().items():
        shape = value.shape
        if name.endswith("num_batches_tracked"):
            state[name] = torch.randint(1, 100_000, (), generator=g, dtype=torch.long)
        elif name.endswith("running_mean"):
            state[name] = torch.randn(shape, generator=g) * 0.1
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        elif value.dim() == 4:
            state[name] = torch.randn(shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
        elif name.endswith("weight"):
            state[name] = torch.rand(shape, generator=g) * 0.5 + 0.75
        else:
            state[name] = torch.randn(shape, generator=g) * 0.1
    return state



def strip_aux(arch: str, state: dict) -> OrderedDict:
    return OrderedDict((k, v) for k, v in state.items() if not k.startswith(AUX_PREFIXES[arch]))

