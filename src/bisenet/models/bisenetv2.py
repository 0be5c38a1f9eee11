"""BiSeNetV2 (Yu et al., IJCV 2021): detail branch, semantic branch, guided aggregation.

Module names match the published CoinCheung/BiSeNet checkpoints (`detail.*`, `segment.*`,
`bga.*`, `head.*`, `aux*`), so their state_dicts load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from bisenet.models.layers import (
    BilinearUp,
    ConvBNReLU,
    FastDropout,
    NearestUpConvBNReLU,
    check_input_size,
    conv_bn,
    global_mean,
    init_kaiming_fan_out,
    upsample_nearest,
)


class DetailBranch(nn.Module):
    """Wide, shallow branch keeping spatial detail at 1/8 resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, 3, 2), ConvBNReLU(64, 64))
        self.S2 = nn.Sequential(ConvBNReLU(64, 64, 3, 2), ConvBNReLU(64, 64), ConvBNReLU(64, 64))
        self.S3 = nn.Sequential(ConvBNReLU(64, 128, 3, 2), ConvBNReLU(128, 128), ConvBNReLU(128, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    """Stem to 1/4: a conv, then a conv pair and a max-pool side by side, fused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvBNReLU(3, 16, 3, 2)
        self.left = nn.Sequential(ConvBNReLU(16, 8, 1), ConvBNReLU(8, 16, 3, 2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = ConvBNReLU(32, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class ContextEmbedding(nn.Module):
    """Global mean -> BN -> 1x1 ConvBNReLU, added back, then 3x3 ConvBNReLU."""

    def __init__(self, ch: int = 128) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(ch)
        self.conv_gap = ConvBNReLU(ch, ch, 1)
        self.conv_last = ConvBNReLU(ch, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.conv_gap(self.bn(global_mean(x))) + x)


def _last_bn(bn: nn.Module) -> nn.Module:
    bn.zero_init = True  # zero gamma: the layer starts as its shortcut
    return bn


class GatherExpand(nn.Module):
    """GE layer, stride 1: expand with a depthwise conv, project, add the input."""

    def __init__(self, in_ch: int, out_ch: int, expansion: int = 6) -> None:
        super().__init__()
        mid = in_ch * expansion
        self.conv1 = ConvBNReLU(in_ch, out_ch, 3)
        self.dwconv = nn.Sequential(*conv_bn(out_ch, mid, 3, groups=out_ch), nn.ReLU(inplace=True))
        conv, bn = conv_bn(mid, out_ch, 1)
        self.conv2 = nn.Sequential(conv, _last_bn(bn))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + x)


class GatherExpandDown(nn.Module):
    """GE layer, stride 2: two depthwise convs (one strided) and a projected shortcut."""

    def __init__(self, in_ch: int, out_ch: int, expansion: int = 6) -> None:
        super().__init__()
        mid = in_ch * expansion
        self.conv1 = ConvBNReLU(in_ch, in_ch, 3)
        self.dwconv1 = nn.Sequential(*conv_bn(in_ch, mid, 3, stride=2, groups=in_ch))
        self.dwconv2 = nn.Sequential(*conv_bn(mid, mid, 3, groups=mid), nn.ReLU(inplace=True))
        conv, bn = conv_bn(mid, out_ch, 1)
        self.conv2 = nn.Sequential(conv, _last_bn(bn))
        self.shortcut = nn.Sequential(*conv_bn(in_ch, in_ch, 3, stride=2, groups=in_ch), *conv_bn(in_ch, out_ch, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.dwconv2(self.dwconv1(self.conv1(x))))
        return self.relu(out + self.shortcut(x))


class SemanticBranch(nn.Module):
    """Narrow, deep branch down to 1/32; returns every stage for the booster heads."""

    def __init__(self) -> None:
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GatherExpandDown(16, 32), GatherExpand(32, 32))
        self.S4 = nn.Sequential(GatherExpandDown(32, 64), GatherExpand(64, 64))
        self.S5_4 = nn.Sequential(GatherExpandDown(64, 128), *(GatherExpand(128, 128) for _ in range(3)))
        self.S5_5 = ContextEmbedding(128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feat2 = self.S1S2(x)
        feat3 = self.S3(feat2)
        feat4 = self.S4(feat3)
        feat5_4 = self.S5_4(feat4)
        return feat2, feat3, feat4, feat5_4, self.S5_5(feat5_4)


class BilateralGuidedAggregation(nn.Module):
    """BGA: each branch gates the other at its own resolution, then the two are summed."""

    def __init__(self, ch: int = 128) -> None:
        super().__init__()
        self.left1 = nn.Sequential(*conv_bn(ch, ch, 3, groups=ch), nn.Conv2d(ch, ch, 1, bias=False))
        self.left2 = nn.Sequential(*conv_bn(ch, ch, 3, stride=2), nn.AvgPool2d(3, 2, 1, ceil_mode=False))
        self.right1 = nn.Sequential(*conv_bn(ch, ch, 3))
        self.right2 = nn.Sequential(*conv_bn(ch, ch, 3, groups=ch), nn.Conv2d(ch, ch, 1, bias=False))
        self.conv = nn.Sequential(*conv_bn(ch, ch, 3), nn.ReLU(inplace=True))

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        detail_keep = self.left1(detail) * torch.sigmoid(upsample_nearest(self.right1(semantic), 4))
        semantic_keep = self.left2(detail) * torch.sigmoid(self.right2(semantic))
        return self.conv(detail_keep + upsample_nearest(semantic_keep, 4))


class SegmentHead(nn.Module):
    """3x3 ConvBNReLU -> dropout -> [aux: nearest x2 + ConvBNReLU] -> 1x1 conv -> bilinear."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, up_factor: int, aux: bool) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.drop = FastDropout(0.1)
        # Aux heads spend part of the upsampling on a learned x2 step with up^2 channels.
        out_mid = up_factor * up_factor if aux else mid_ch
        expand = NearestUpConvBNReLU(mid_ch, out_mid) if aux else nn.Identity()
        self.conv_out = nn.Sequential(
            expand,
            nn.Conv2d(out_mid, num_classes, 1, bias=True),
            BilinearUp(up_factor // 2 if aux else up_factor),
        )

    def forward(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        expand, classify, up = self.conv_out
        logits = classify(expand(self.drop(self.conv(x))))
        return up(logits) if upsample else logits


class BiSeNetV2(nn.Module):
    """BiSeNetV2. Train mode returns (main, aux2, aux3, aux4, aux5_4); eval mode the main logits."""

    head_modules = ("head", "aux2", "aux3", "aux4", "aux5_4")
    aux_heads = ("aux2", "aux3", "aux4", "aux5_4")
    # Kept in float by int8 quantisation (torchao: bf16; onnxruntime: fp32): the sigmoid-gated
    # aggregation, the segmentation head and the semantic branch. Quantising the first two
    # dropped label agreement with fp32 on trained Dubai models to 98.1-98.9% (99.1-99.5% kept);
    # the deep, light semantic branch compounds int8 error: on the CamVid model 96.7% -> 99.2%
    # when kept, Dubai 99.1% -> 99.2%.
    quant_float_modules = ("bga", "head", "segment")
    # OpenVINO int8 quantises convolution inputs only, so the detail branch and the head's big
    # 3x3 conv (together most of the 49 GFLOPs at 512x1024) run in int8 without quantising the
    # logits. The deep, light semantic branch compounds int8 error and stays bf16 at no
    # measurable cost, as do the aggregation, the classifier and the stem conv that sees the
    # image. Agreement with fp32 at 512x1024: Dubai model 99.2%, CamVid model 99.0% (96.6% with
    # the semantic branch in int8).
    openvino_float_modules = ("head.conv_out", "bga", "segment", "detail.S1.0")
    # Tried first, kept where it holds >= 99% agreement on the calibration images: the
    # aggregation's output conv in int8 as well, ~7% faster (52 -> 48 ms at 512x1024 on 12-02c)
    # for 0.03% (CamVid weights) to 0.09% (a Dubai quickstart model) of the labels.
    openvino_float_modules_fast = ("head.conv_out", "bga.left1", "bga.left2", "bga.right1", "bga.right2", "segment",
                                   "detail.S1.0")

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.detail = DetailBranch()
        self.segment = SemanticBranch()
        self.bga = BilateralGuidedAggregation(128)
        self.head = SegmentHead(128, 1024, num_classes, 8, aux=False)
        self.aux2 = SegmentHead(16, 128, num_classes, 4, aux=True)
        self.aux3 = SegmentHead(32, 128, num_classes, 8, aux=True)
        self.aux4 = SegmentHead(64, 128, num_classes, 16, aux=True)
        self.aux5_4 = SegmentHead(128, 128, num_classes, 32, aux=True)
        init_kaiming_fan_out(self)

    def forward(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits at the input size; upsample=False leaves each head's logits at its own stride
        (the training loss upsamples them itself, without storing full-size logits)."""
        check_input_size(x, training=self.training)
        feat2, feat3, feat4, feat5_4, semantic = self.segment(x)
        logits = self.head(self.bga(self.detail(x), semantic), upsample)
        if not self.training:
            return logits
        return (logits, self.aux2(feat2, upsample), self.aux3(feat3, upsample), self.aux4(feat4, upsample),
                self.aux5_4(feat5_4, upsample))
