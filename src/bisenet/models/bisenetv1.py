"""BiSeNetV1 (Yu et al., ECCV 2018) with a ResNet-18 context path.

Module names match the published CoinCheung/BiSeNet checkpoints (`cp.*`, `sp.*`, `ffm.*`,
`conv_out*`), so their state_dicts load unchanged.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import torch
from torch import nn

from bisenet.errors import CheckpointError
from bisenet.models.layers import ConvBNReLU, check_input_size, global_mean, upsample_bilinear, upsample_nearest

RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with an identity or 1x1 projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class AttentionRefinement(nn.Module):
    """ARM: 3x3 ConvBNReLU, then a channel attention from the global mean."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(global_mean(feat))))
        return feat * attention


class ContextPath(nn.Module):
    """ResNet-18 + ARMs + global context; returns the 1/8 and 1/16 context features."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(global_mean(feat32))
        up32 = self.conv_head32(upsample_nearest(self.arm32(feat32) + context, 2))
        up16 = self.conv_head16(upsample_nearest(self.arm16(feat16) + up32, 2))
        return up16, up32  # at 1/8 and 1/16 of the input


class SpatialPath(nn.Module):
    """Three stride-2 convs keep spatial detail at 1/8 resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 7, stride=2)
        self.conv2 = ConvBNReLU(64, 64, 3, stride=2)
        self.conv3 = ConvBNReLU(64, 64, 3, stride=2)
        self.conv_out = ConvBNReLU(64, 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class FeatureFusion(nn.Module):
    """FFM: concat, 1x1 ConvBNReLU, then feat * attention + feat."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, 1)
        self.conv = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.bn(self.conv(global_mean(feat))))
        return feat * attention + feat


class OutputHead(nn.Module):
    """3x3 ConvBNReLU -> 1x1 conv (bias) -> bilinear upsampling to the input size."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, up_factor: int) -> None:
        super().__init__()
        self.up_factor = up_factor
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.conv_out = nn.Conv2d(mid_ch, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        logits = self.conv_out(self.conv(x))
        return upsample_bilinear(logits, self.up_factor) if upsample else logits


class BiSeNetV1(nn.Module):
    """BiSeNetV1. Train mode returns (main, aux8, aux16) logits; eval mode the main logits."""

    # Parameters of these submodules train with the larger "head" learning rate.
    head_modules = ("ffm", "conv_out", "conv_out16", "conv_out32")
    aux_heads = ("conv_out16", "conv_out32")
    # Kept in bf16 by int8 quantisation, as in BiSeNetV2: the attention-gated fusion and the main head.
    quant_float_modules = ("ffm", "conv_out")
    # OpenVINO int8 (convolution inputs only): the fusion and the classifier stay bf16.
    openvino_float_modules = ("ffm", "conv_out.conv_out")

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cp = ContextPath()
        self.sp = SpatialPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, num_classes, 8)
        self.conv_out16 = OutputHead(128, 64, num_classes, 8)
        self.conv_out32 = OutputHead(128, 64, num_classes, 16)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits at the input size; upsample=False leaves each head's logits at its own stride
        (the training loss upsamples them itself, without storing full-size logits)."""
        check_input_size(x, training=self.training)
        context8, context16 = self.cp(x)
        logits = self.conv_out(self.ffm(self.sp(x), context8), upsample)
        if not self.training:
            return logits
        return logits, self.conv_out16(context8, upsample), self.conv_out32(context16, upsample)

    def load_pretrained_backbone(self, source: str) -> None:
        """Load ImageNet ResNet-18 weights (torchvision format) into the context path.

        `source` is a path to a `resnet18-*.pth` file, or "imagenet" to use the torch hub
        cache (downloading once where the network allows).
        """
        path = _find_resnet18(source)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or non-tensor file
            raise CheckpointError(f"{path}: cannot read ResNet-18 weights ({exc}); re-download or delete the file") from None
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.cp.resnet.load_state_dict(state, strict=False)
        if missing or unexpected:
            first = (missing or unexpected)[0]
            raise CheckpointError(
                f"{path}: not a torchvision ResNet-18 state_dict ({'missing' if missing else 'unexpected'} "
                f"entry '{first}'); use a resnet18-*.pth file from torchvision"
            )


def _find_resnet18(source: str) -> str:
    if source != "imagenet":
        if not os.path.isfile(source):
            raise CheckpointError(
                f"model.pretrained: {source} not found; give a torchvision resnet18-*.pth file, "
                "'imagenet' to use the torch hub cache, or null for random init"
            )
        return source
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(glob.glob(str(cache / "resnet18-*.pth")))
    if found:
        return found[0]
    try:
        torch.hub.load_state_dict_from_url(RESNET18_URL, map_location="cpu", progress=False)
    except Exception as exc:
        raise CheckpointError(
            f"model.pretrained: imagenet: no resnet18-*.pth in {cache} and the download failed "
            f"({type(exc).__name__}); copy {RESNET18_URL.rsplit('/', 1)[1]} there, pass its path, "
            "or set model.pretrained: null to train from random init"
        ) from None
    return sorted(glob.glob(str(cache / "resnet18-*.pth")))[0]
