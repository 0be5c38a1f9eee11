"""Fold BatchNorm into the convolution that feeds it, on a copy of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv_bn_pairs(model: nn.Module, size: tuple[int, int] = (64, 64)) -> list[tuple[str, str]]:
    """Names of (conv, bn) pairs where the BN reads exactly the conv's output.

    Found by running the model once with hooks rather than by module order, so a BN that
    follows a pooling op or a sum is never folded by mistake.
    """
    outputs: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    keep: list[torch.Tensor] = []  # holds outputs alive so that their ids stay unique

    def on_conv(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            outputs[id(out)] = name
            keep.append(out)
        return hook

    def on_bn(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            conv = outputs.get(id(args[0]))
            if conv is not None:
                pairs.append((conv, name))
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv(name)))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(on_bn(name)))
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, *size, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return pairs


def fold_batchnorm(model: nn.Module, check: bool = True) -> nn.Module:
    """An eval-mode copy of `model` with every conv -> BN pair folded into one conv.

    BNs that follow no conv keep their place but get their statistics absorbed into weight and
    bias (see absorb_statistics), so the copy is safe to cast to fp16.

    With `check`, the copy is compared with the original on a random input and a
    RuntimeError is raised if they differ (a fold that changed the maths).
    """
    folded = copy.deepcopy(model).eval()
    modules = dict(folded.named_modules())
    pairs = conv_bn_pairs(folded)
    convs = [conv for conv, _ in pairs]
    if len(set(convs)) != len(convs):
        # A conv whose output feeds two BNs cannot be folded into either.
        pairs = [(c, b) for c, b in pairs if convs.count(c) == 1]
    for conv_name, bn_name in pairs:
        _replace(folded, conv_name, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        _replace(folded, bn_name, nn.Identity())
    for module in folded.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            absorb_statistics(module)
    if check:
        _check_same(model, folded)
    return folded


def absorb_statistics(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Rewrite an eval-mode BN in place as the same affine map with mean 0 and variance 1.

    Trained running variances reach 1e5 and more, past fp16's largest value (65504): a plain
    model.half() turns them into inf and zeroes those channels. The affine form has small numbers.
    """
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.float() + bn.eps)
        weight = bn.weight.float() * scale if bn.affine else scale
        bias = (bn.bias.float() if bn.affine else 0.0) - bn.running_mean.float() * weight
        if bn.affine:
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        else:
            bn.weight, bn.bias = nn.Parameter(weight), nn.Parameter(bias)
            bn.affine = True
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # var + eps == 1


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _check_same(model: nn.Module, folded: nn.Module, size: tuple[int, int] = (64, 96)) -> None:
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *size, generator=generator).to(device=param.device, dtype=param.dtype)
    try:
        with torch.no_grad():
            ref, out = model(x), folded(x)
    finally:
        model.train(was_training)
    scale = ref.abs().max().item() + 1e-6
    err = (ref - out).abs().max().item()
    if err > 1e-3 * scale:
        raise RuntimeError(f"folding BatchNorm changed the output (max |diff| {err:.3g}, scale {scale:.3g})")
