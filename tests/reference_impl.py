"""An independent, functional BiSeNetV1/V2 forward pass over a plain state_dict.

Written from /work/shared/reference/README.md ("What the released models compute") and the
entry names of the published state_dicts, with torch.nn.functional only; it deliberately
does not import `bisenet.models`. The tests use it as "the reference implementation":
a published-format state_dict loaded into our models must give the same logits.

Every BatchNorm runs in eval mode (running statistics, eps 1e-5) and dropout is off, so
the auxiliary outputs are the training-mode heads evaluated deterministically.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

State = Mapping[str, torch.Tensor]

BN_EPS = 1e-5


# --------------------------------------------------------------------------- primitives
def conv(x: torch.Tensor, sd: State, name: str, stride: int = 1, bias: str | None = None) -> torch.Tensor:
    """Convolution with weight `sd[name]`, 'same' padding (k // 2); groups from the shapes."""
    weight = sd[name]
    groups = x.shape[1] // weight.shape[1]
    padding = weight.shape[-1] // 2
    return F.conv2d(x, weight, sd[bias] if bias else None, stride=stride, padding=padding, groups=groups)


def bn(x: torch.Tensor, sd: State, prefix: str) -> torch.Tensor:
    """Eval-mode BatchNorm with the running statistics under `prefix`."""
    return F.batch_norm(
        x,
        sd[prefix + "running_mean"],
        sd[prefix + "running_var"],
        sd[prefix + "weight"],
        sd[prefix + "bias"],
        training=False,
        eps=BN_EPS,
    )


def conv_bn_relu(x: torch.Tensor, sd: State, prefix: str, stride: int = 1) -> torch.Tensor:
    """A ConvBNReLU module: `prefix`conv.weight, `prefix`bn.*."""
    return F.relu(bn(conv(x, sd, prefix + "conv.weight", stride), sd, prefix + "bn."))


def gmean(x: torch.Tensor) -> torch.Tensor:
    """Global pooling: mean over H and W, keepdim."""
    return x.mean(dim=(2, 3), keepdim=True)


def nearest_x(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, size=(x.shape[2] * factor, x.shape[3] * factor), mode="nearest")


def bilinear_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _check(x: torch.Tensor) -> tuple[int, int]:
    h, w = x.shape[-2:]
    if h % 32 or w % 32:
        raise ValueError(f"reference forward needs H and W multiples of 32, got {h}x{w}")
    return h, w


# --------------------------------------------------------------------------- BiSeNetV1
def _basic_block(x: torch.Tensor, sd: State, p: str, stride: int) -> torch.Tensor:
    out = F.relu(bn(conv(x, sd, p + "conv1.weight", stride), sd, p + "bn1."))
    out = bn(conv(out, sd, p + "conv2.weight"), sd, p + "bn2.")
    if p + "downsample.0.weight" in sd:
        shortcut = bn(conv(x, sd, p + "downsample.0.weight", stride), sd, p + "downsample.1.")
    else:
        shortcut = x
    return F.relu(out + shortcut)


def resnet18(x: torch.Tensor, sd: State, p: str = "cp.resnet.") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ResNet-18 trunk: features at 1/8, 1/16, 1/32."""
    x = F.relu(bn(conv(x, sd, p + "conv1.weight", stride=2), sd, p + "bn1."))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    feats = []
    for layer, stride in ((1, 1), (2, 2), (3, 2), (4, 2)):
        for block in (0, 1):
            x = _basic_block(x, sd, f"{p}layer{layer}.{block}.", stride if block == 0 else 1)
        feats.append(x)
    return feats[1], feats[2], feats[3]


def _arm(x: torch.Tensor, sd: State, p: str) -> torch.Tensor:
    feat = conv_bn_relu(x, sd, p + "conv.")
    att = torch.sigmoid(bn(conv(gmean(feat), sd, p + "conv_atten.weight"), sd, p + "bn_atten."))
    return feat * att


def _v1_head(x: torch.Tensor, sd: State, p: str, size: tuple[int, int]) -> torch.Tensor:
    x = conv_bn_relu(x, sd, p + "conv.")
    x = conv(x, sd, p + "conv_out.weight", bias=p + "conv_out.bias")
    return bilinear_to(x, size)


def bisenetv1_forward(sd: State, x: torch.Tensor) -> list[torch.Tensor]:
    """[main, aux on the 1/8 context (conv_out16), aux on the 1/16 one (conv_out32)].

    The aux outputs are included only when the state_dict holds their entries.
    """
    size = _check(x)
    _, feat16, feat32 = resnet18(x, sd)
    # Context path.
    context = conv_bn_relu(gmean(feat32), sd, "cp.conv_avg.")
    up32 = conv_bn_relu(nearest_x(_arm(feat32, sd, "cp.arm32.") + context, 2), sd, "cp.conv_head32.")
    up16 = conv_bn_relu(nearest_x(_arm(feat16, sd, "cp.arm16.") + up32, 2), sd, "cp.conv_head16.")
    context8, context16 = up16, up32
    # Spatial path.
    sp = conv_bn_relu(x, sd, "sp.conv1.", stride=2)
    sp = conv_bn_relu(sp, sd, "sp.conv2.", stride=2)
    sp = conv_bn_relu(sp, sd, "sp.conv3.", stride=2)
    sp = conv_bn_relu(sp, sd, "sp.conv_out.")
    # Feature fusion.
    feat = conv_bn_relu(torch.cat([sp, context8], dim=1), sd, "ffm.convblk.")
    att = torch.sigmoid(bn(conv(gmean(feat), sd, "ffm.conv.weight"), sd, "ffm.bn."))
    fused = feat * att + feat
    outputs = [_v1_head(fused, sd, "conv_out.", size)]
    if "conv_out16.conv_out.weight" in sd:
        outputs.append(_v1_head(context8, sd, "conv_out16.", size))
    if "conv_out32.conv_out.weight" in sd:
        outputs.append(_v1_head(context16, sd, "conv_out32.", size))
    return outputs


# --------------------------------------------------------------------------- BiSeNetV2
def _detail(x: torch.Tensor, sd: State) -> torch.Tensor:
    for stage, n in (("S1", 2), ("S2", 3), ("S3", 3)):
        for i in range(n):
            x = conv_bn_relu(x, sd, f"detail.{stage}.{i}.", stride=2 if i == 0 else 1)
    return x


def _stem(x: torch.Tensor, sd: State, p: str = "segment.S1S2.") -> torch.Tensor:
    x = conv_bn_relu(x, sd, p + "conv.", stride=2)
    left = conv_bn_relu(conv_bn_relu(x, sd, p + "left.0."), sd, p + "left.1.", stride=2)
    right = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    return conv_bn_relu(torch.cat([left, right], dim=1), sd, p + "fuse.")


def _ge_s1(x: torch.Tensor, sd: State, p: str) -> torch.Tensor:
    f = conv_bn_relu(x, sd, p + "conv1.")
    f = F.relu(bn(conv(f, sd, p + "dwconv.0.weight"), sd, p + "dwconv.1."))
    f = bn(conv(f, sd, p + "conv2.0.weight"), sd, p + "conv2.1.")
    return F.relu(f + x)


def _ge_s2(x: torch.Tensor, sd: State, p: str) -> torch.Tensor:
    f = conv_bn_relu(x, sd, p + "conv1.")
    f = bn(conv(f, sd, p + "dwconv1.0.weight", stride=2), sd, p + "dwconv1.1.")
    f = F.relu(bn(conv(f, sd, p + "dwconv2.0.weight"), sd, p + "dwconv2.1."))
    f = bn(conv(f, sd, p + "conv2.0.weight"), sd, p + "conv2.1.")
    s = bn(conv(x, sd, p + "shortcut.0.weight", stride=2), sd, p + "shortcut.1.")
    s = bn(conv(s, sd, p + "shortcut.2.weight"), sd, p + "shortcut.3.")
    return F.relu(f + s)


def _semantic(x: torch.Tensor, sd: State) -> tuple[torch.Tensor, ...]:
    feat2 = _stem(x, sd)
    feat3 = _ge_s1(_ge_s2(feat2, sd, "segment.S3.0."), sd, "segment.S3.1.")
    feat4 = _ge_s1(_ge_s2(feat3, sd, "segment.S4.0."), sd, "segment.S4.1.")
    feat5_4 = _ge_s2(feat4, sd, "segment.S5_4.0.")
    for i in (1, 2, 3):
        feat5_4 = _ge_s1(feat5_4, sd, f"segment.S5_4.{i}.")
    # Context embedding.
    g = bn(gmean(feat5_4), sd, "segment.S5_5.bn.")
    g = conv_bn_relu(g, sd, "segment.S5_5.conv_gap.")
    feat5_5 = conv_bn_relu(g + feat5_4, sd, "segment.S5_5.conv_last.")
    return feat2, feat3, feat4, feat5_4, feat5_5


def _bga(detail: torch.Tensor, semantic: torch.Tensor, sd: State, p: str = "bga.") -> torch.Tensor:
    a = conv(bn(conv(detail, sd, p + "left1.0.weight"), sd, p + "left1.1."), sd, p + "left1.2.weight")
    b = bn(conv(detail, sd, p + "left2.0.weight", stride=2), sd, p + "left2.1.")
    b = F.avg_pool2d(b, kernel_size=3, stride=2, padding=1)
    c = nearest_x(bn(conv(semantic, sd, p + "right1.0.weight"), sd, p + "right1.1."), 4)
    d = conv(bn(conv(semantic, sd, p + "right2.0.weight"), sd, p + "right2.1."), sd, p + "right2.2.weight")
    out = a * torch.sigmoid(c) + nearest_x(b * torch.sigmoid(d), 4)
    return F.relu(bn(conv(out, sd, p + "conv.0.weight"), sd, p + "conv.1."))


def _v2_main_head(x: torch.Tensor, sd: State, size: tuple[int, int]) -> torch.Tensor:
    x = conv_bn_relu(x, sd, "head.conv.")  # dropout 0.1: identity in eval mode
    x = conv(x, sd, "head.conv_out.1.weight", bias="head.conv_out.1.bias")
    return bilinear_to(x, size)


def _v2_booster_head(x: torch.Tensor, sd: State, p: str, size: tuple[int, int]) -> torch.Tensor:
    x = conv_bn_relu(x, sd, p + "conv.")  # dropout off
    x = conv_bn_relu(nearest_x(x, 2), sd, p + "conv_out.0.1.")
    x = conv(x, sd, p + "conv_out.1.weight", bias=p + "conv_out.1.bias")
    return bilinear_to(x, size)


V2_AUX = ("aux2", "aux3", "aux4", "aux5_4")


def bisenetv2_forward(sd: State, x: torch.Tensor) -> list[torch.Tensor]:
    """[main, aux2 (stem), aux3 (S3), aux4 (S4), aux5_4 (S5_4)]; aux only if in the state_dict."""
    size = _check(x)
    feat2, feat3, feat4, feat5_4, feat5_5 = _semantic(x, sd)
    outputs = [_v2_main_head(_bga(_detail(x, sd), feat5_5, sd), sd, size)]
    for name, feat in zip(V2_AUX, (feat2, feat3, feat4, feat5_4)):
        if f"{name}.conv_out.1.weight" in sd:
            outputs.append(_v2_booster_head(feat, sd, f"{name}.", size))
    return outputs


FORWARDS = {"bisenetv1": bisenetv1_forward, "bisenetv2": bisenetv2_forward}


@torch.no_grad()
def reference_forward(arch: str, state_dict: State, x: torch.Tensor) -> list[torch.Tensor]:
    """Eval-mode logits [main, *aux] of `arch` for the weights in `state_dict`."""
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    return FORWARDS[arch](sd, x.float())
