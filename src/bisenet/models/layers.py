"""Blocks shared by BiSeNetV1 and BiSeNetV2.

Submodule names follow the published checkpoints (conv / bn / relu), so that their
state_dicts load without any key renaming.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bisenet.errors import BisenetError


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU, 'same' padding for odd kernels."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)


def conv_bn(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Conv (no bias) and BatchNorm as a list, for nn.Sequential with numeric names."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_ch)]


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling as a mean over H and W (keepdim), as the reference does."""
    return x.mean(dim=(2, 3), keepdim=True)


def upsample_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling by an integer factor (align_corners=False)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def upsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling by an integer factor."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


class NearestUp(nn.Module):
    """Nearest x`factor` upsampling as a module (parameter-free, so no state_dict entries)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_nearest(x, self.factor)


class BilinearUp(nn.Module):
    """Bilinear x`factor` upsampling as a module."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_bilinear(x, self.factor)


def _phase_taps(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3-tap kernel axis seen by the even and the odd outputs of a nearest x2 upsampling: 2 taps each."""
    a, b, c = weight.unbind(dim)
    return torch.stack([a, b + c], dim), torch.stack([a + b, c], dim)


def nearest_up2_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(nearest x2 upsampling of x, 3x3 weight, padding 1), computed at x's resolution.

    Each of the four output phases (row and column parity) sees a 2x2 window of x whose taps
    are sums of the 3x3 weights, so one 2x2 conv with 4x the output channels on x padded by 1
    gives them all: 16 instead of 36 multiply-adds per output value, and no upsampled input to
    store for backward. The result equals the upsample-then-conv one (tested in float64).
    """
    n, _, h, w = x.shape
    out_ch = weight.shape[0]
    rows = _phase_taps(weight, -2)
    # Output channel o * 4 + 2 * row phase + column phase, as F.pixel_shuffle would order them.
    kernel = torch.stack([k for r in rows for k in _phase_taps(r, -1)], 1).flatten(0, 1)
    z = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel, None if bias is None else bias.repeat_interleave(4))
    z = z.unflatten(1, (out_ch, 2, 2))  # n, o, row phase, column phase, h + 1, w + 1
    # Phase (s, t) of output pixel (r, c) is window (r + s, c + t). Interleave them channels-last.
    phases = [[z[:, :, s, t, s:s + h, t:t + w].permute(0, 2, 3, 1) for t in (0, 1)] for s in (0, 1)]
    nhwc = torch.stack([torch.stack(row, 3) for row in phases], 2)  # n, h, 2, w, 2, o
    return nhwc.reshape(n, 2 * h, 2 * w, out_ch).permute(0, 3, 1, 2)


class NearestUpConvBNReLU(nn.Sequential):
    """NearestUp(2) -> 3x3 ConvBNReLU, with the conv run at the input's resolution (nearest_up2_conv3x3).

    The children and so the state_dict keys are those of the plain Sequential.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(NearestUp(2), ConvBNReLU(in_ch, out_ch, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self[1]
        return block.relu(block.bn(nearest_up2_conv3x3(x, block.conv.weight, block.conv.bias)))


class FastDropout(nn.Dropout):
    """nn.Dropout whose training mask on a CPU costs a third as much: 16 random bits per element.

    bernoulli_ draws one random number per element: 100 of the 150 ms (forward + backward) of
    the main head's dropout on 4 x 1024 x 64 x 64 on a 2-core CPU. Here one 64-bit draw gives
    four elements' bits. The drop probability is rounded to a multiple of 1/65536 (0.1 ->
    0.100006). Other devices, in-place use and evaluation go to F.dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = round(self.p * 65536)
        if not self.training or self.inplace or x.device.type != "cpu" or not 0 < dropped < 65536:
            return F.dropout(x, self.p, self.training, self.inplace)
        words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
        keep = words.view(torch.int16)[: x.numel()] >= dropped - 32768
        # Lay the mask out as x is (channels_last or contiguous), so the product runs in one pass.
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        keep = keep.as_strided(x.shape, x.stride()) if dense else keep.view(x.shape)
        return x * keep.to(x.dtype).mul_(65536 / (65536 - dropped))


def use_textbook_blocks(model: nn.Module, blocks: tuple[str, ...] = ("dropout", "upconv")) -> nn.Module:
    """Swap FastDropout for nn.Dropout ("dropout") and NearestUpConvBNReLU for upsample-then-conv ("upconv"), in place.

    Same weights and the same function; what the reference implementation computes, for timing
    against it (bench's fp32_plain step), for RNG-compatible dropout, or to compare training runs.
    """
    unknown = set(blocks) - {"dropout", "upconv"}
    if unknown:
        raise ValueError(f"unknown block(s) {sorted(unknown)}; valid: dropout, upconv")
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, FastDropout) and "dropout" in blocks:
                setattr(module, name, nn.Dropout(child.p, child.inplace))
            elif isinstance(child, NearestUpConvBNReLU) and "upconv" in blocks:
                setattr(module, name, nn.Sequential(*child))
    return model


def check_input_size(x: torch.Tensor, multiple: int = 32, training: bool = False) -> None:
    """Raise a ValueError naming the fix if H or W is not a multiple, or a training batch has 1 image."""
    if x.dim() != 4:
        raise ValueError(f"expected an N x C x H x W tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        raise ValueError(
            f"input height and width must be multiples of {multiple}, got {h}x{w}; "
            f"pad or resize to {ph}x{pw}"
        )
    if training and x.shape[0] < 2:
        # BatchNorm over the 1x1 global-context map needs more than one value per channel.
        raise ValueError("training mode needs a batch of at least 2 images per process; raise the batch size or call model.eval()")


def init_kaiming_fan_out(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) conv weights, zero biases, BN weight 1 / bias 0.

    A BatchNorm flagged with `zero_init = True` starts with weight 0 (the residual
    branch then starts as identity).
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.zeros_(module.weight) if getattr(module, "zero_init", False) else nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def check_multiple_of_32(height: int, width: int, multiple: int = 32, flag: str = "size") -> None:
    """Raise a BisenetError naming `flag` and the nearest valid size unless H and W are multiples of 32."""
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        ph = max(multiple, -(-height // multiple) * multiple)
        pw = max(multiple, -(-width // multiple) * multiple)
        raise BisenetError(f"{flag} {height}x{width}: height and width must be positive multiples of {multiple}; "
                           f"use {ph}x{pw}")
