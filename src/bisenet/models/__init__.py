"""The two architectures and `build_model`, the one way to make them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from bisenet.models.bisenetv1 import BiSeNetV1
from bisenet.models.bisenetv2 import BiSeNetV2

MODELS: dict[str, Callable[..., nn.Module]] = {
    "bisenetv1": BiSeNetV1,
    "bisenetv2": BiSeNetV2,
}


def build_model(arch: str, num_classes: int, pretrained: str | None = None, **options) -> nn.Module:
    """Build a model by name; `pretrained` (V1 only) loads ImageNet backbone weights."""
    if arch not in MODELS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = MODELS[arch](num_classes=num_classes, **options)
    if pretrained:
        if not hasattr(model, "load_pretrained_backbone"):
            raise ValueError(f"{arch} trains from scratch and takes no pretrained backbone; set model.pretrained: null")
        model.load_pretrained_backbone(pretrained)
    return model


__all__ = ["MODELS", "BiSeNetV1", "BiSeNetV2", "build_model"]
