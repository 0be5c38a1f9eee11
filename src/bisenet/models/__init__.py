"""The two architectures and `build_model`, the one way to make them."""

from __future__ import annotations

import numbers
from collections.abc import Callable

from torch import nn

from bisenet.errors import ConfigError, nearest

from bisenet.models.bisenetv1 import BiSeNetV1
from bisenet.models.bisenetv2 import BiSeNetV2

MODELS: dict[str, Callable[..., nn.Module]] = {
    "bisenetv1": BiSeNetV1,
    "bisenetv2": BiSeNetV2,
}


def build_model(arch: str, num_classes: int, pretrained: str | None = None) -> nn.Module:
    """Build a model by name; `pretrained` (V1 only) loads ImageNet backbone weights.

    Bad arguments raise ConfigError, which is both a BisenetError and a ValueError.
    """
    if arch not in MODELS:
        raise ConfigError(f"unknown arch {arch!r}{nearest(str(arch), MODELS)}; valid: {', '.join(MODELS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = MODELS[arch](num_classes=int(num_classes))  # a numpy int too, stored as a plain one
    if pretrained:
        if not hasattr(model, "load_pretrained_backbone"):
            raise ConfigError(f"{arch} trains from scratch and takes no pretrained backbone; set model.pretrained: null")
        model.load_pretrained_backbone(pretrained)
    return model


__all__ = ["MODELS", "BiSeNetV1", "BiSeNetV2", "build_model"]
