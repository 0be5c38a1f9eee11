"""Inference protocols on any callable model: ss, ssc (sliding crops), msf and mscf.

The model is anything that maps a normalised float32 N x 3 x H x W tensor (H, W multiples
of 32) to float32 N x C x H x W logits: an nn.Module in eval mode or a deploy backend.
Every protocol returns scores at the input's size: logits for plain `ss`, otherwise
softmax probabilities averaged over crops, scales and flips (argmax is what you want).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bisenet.config_checks import MAX_SCALE
from bisenet.errors import BisenetError

if TYPE_CHECKING:
    from bisenet.config import Config, EvalConfig

MODES = ("ss", "ssc", "msf", "mscf")
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
CITYSCAPES_CROP = (1024, 1024)

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Protocol:
    """A resolved evaluation protocol: which scales, flip, and sliding window to use."""

    mode: str = "ss"
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crop: tuple[int, int] | None = None  # sliding window (H, W); None: whole image
    stride: tuple[int, int] | None = None
    crop_batch: int = 4  # crops per forward pass

    def describe(self) -> str:
        """One line such as 'ss scale 2' or 'msf scales 0.5,1 flip' (msf/mscf always say their scales and flip or no flip)."""
        multi_scale = self.mode in ("msf", "mscf")
        text = self.mode
        if multi_scale or len(self.scales) > 1:
            text += " scales " + ",".join(f"{s:g}" for s in self.scales)
        elif self.scales[0] != 1.0:
            text += f" scale {self.scales[0]:g}"
        if self.crop:
            text += f" crop {self.crop[0]}x{self.crop[1]} stride {self.stride[0]}x{self.stride[1]}"
        return text + (" flip" if self.flip else " no flip" if multi_scale else "")


def check_batch_size(batch_size: int) -> int:
    """`batch_size` unchanged, or a one-line error naming it when it is not a whole number of at least 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        shown = batch_size if isinstance(batch_size, numbers.Real) else repr(batch_size)  # '2' is not 2
        raise BisenetError(f"--batch-size {shown}: must be a whole number of at least 1 (images per forward pass)")
    return int(batch_size)


def check_workers(workers: object) -> int:
    """`workers` as an int, or a one-line error when it is not a whole number of 0 or more."""
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
        shown = workers if isinstance(workers, numbers.Real) else repr(workers)
        raise BisenetError(f"--workers {shown}: must be a whole number, 0 (load in the main process) or more")
    return int(workers)


def check_window(size: object, name: str) -> tuple[int, int] | None:
    """crop/stride as (H, W): a pair of whole numbers or an 'HxW' string; a one-line error naming `name` otherwise."""
    from bisenet.config import parse_size

    if size is None:
        return None
    if isinstance(size, str):
        return parse_size(size, f"{name}={size!r}")
    if (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size)):
        return int(size[0]), int(size[1])
    raise BisenetError(f"{name}={size!r}: expected (H, W) whole numbers or an 'HxW' string, e.g. {name}=(512, 1024) "
                       f"or {name}='512x1024'")


def check_scale_list(scales: object) -> list[float] | None:
    """Explicit msf/mscf scales as floats: a list of distinct numbers in (0, MAX_SCALE]; a one-line error otherwise."""
    if scales is None:
        return None
    items = None if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__") else list(scales)
    if items is None or any(isinstance(s, bool) or not isinstance(s, numbers.Real) for s in items):
        raise BisenetError(f"scales={scales!r}: expected a list of numbers such as [0.75, 1, 1.25] (or None for "
                           "the config's eval.scales)")
    if not items:  # `scales or the config's` would run the config's six silently
        raise BisenetError("scales=[]: give at least one scale, e.g. [0.75, 1, 1.25], or None for eval.scales")
    values = check_scales(items)  # bounded as --scale is: --scales 0.5 100 would ask for tens of GB
    twice = next((s for k, s in enumerate(values) if s in values[:k]), None)
    if twice is not None:  # refused, not merged: a repeated scale would weigh twice in the average
        raise BisenetError(f"--scales {' '.join(f'{s:g}' for s in values)}: scale {twice:g} is given twice; "
                           "pass each scale once")
    return list(values)


def check_scale(scale: float, mode: str = "ss") -> float:
    """`scale` as a float, or a one-line error when it is not in (0, MAX_SCALE] or `mode` runs several scales."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale <= MAX_SCALE:  # also NaN
        shown = f"{scale:g}" if isinstance(scale, numbers.Real) else repr(scale)
        raise BisenetError(f"--scale {shown}: must be above 0 and at most {MAX_SCALE:g} (the factor ss/ssc resize "
                           "inputs by, e.g. 2)")
    if mode in ("msf", "mscf"):
        raise BisenetError(f"--scale {scale:g}: mode {mode} runs several scales (the config's eval.scales); "
                           "--scale is for --mode ss or ssc")
    return float(scale)


def check_scales(scales: Sequence[float], flag: str = "--scales") -> tuple[float, ...]:
    """`scales` as floats, or a one-line error naming `flag` when one is not in (0, MAX_SCALE]."""
    values = tuple(float(s) for s in scales)
    bad = [s for s in values if not 0 < s <= MAX_SCALE]  # also NaN
    if bad:
        raise BisenetError(f"{flag} {' '.join(f'{s:g}' for s in values)}: each must be above 0 and at most "
                           f"{MAX_SCALE:g}, not {bad[0]:g} (the factors msf/mscf resize inputs by, e.g. 0.75 1 1.25)")
    return values


def make_protocol(
    mode: str = "ss",
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    crop: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    crop_batch: int = 4,
    scale: float = 1.0,
) -> Protocol:
    """Check and fill a protocol: multi-scale modes default to the six scales plus flip, sliding ones need a crop.

    `scale` resizes the input of the single-scale modes (ss, ssc) first: CamVid papers score
    the 480x360 release at 960x720, i.e. scale 2.
    """
    if mode not in MODES:
        raise BisenetError(f"evaluation mode {mode!r} is not one of {', '.join(MODES)}")
    multi_scale = mode in ("msf", "mscf")
    sliding = mode in ("ssc", "mscf")
    scales = check_scales(scales or DEFAULT_SCALES, "scales") if multi_scale else (check_scale(scale),)
    flip = multi_scale if flip is None else bool(flip)
    if not sliding:
        return Protocol(mode, scales, flip, None, None, crop_batch)
    if crop is None:
        raise BisenetError(f"mode {mode} needs a crop size: pass --crop HxW (crop=(H, W) in Python) or set eval.crop_size")
    crop = (int(crop[0]), int(crop[1]))
    if crop[0] % 32 or crop[1] % 32 or min(crop) <= 0:
        raise BisenetError(
            f"--crop {crop[0]}x{crop[1]} (crop= in Python): must be positive multiples of 32 (the network's stride); "
            f"try --crop {_ceil32(crop[0])}x{_ceil32(crop[1])}"
        )
    if stride is None:
        stride = (max(1, math.ceil(crop[0] * 2 / 3)), max(1, math.ceil(crop[1] * 2 / 3)))
    stride = (int(stride[0]), int(stride[1]))
    if not (0 < stride[0] <= crop[0] and 0 < stride[1] <= crop[1]):
        raise BisenetError(
            f"--stride {stride[0]}x{stride[1]} (stride= in Python): must be positive and no larger than the crop "
            f"{crop[0]}x{crop[1]} (larger strides leave pixels unseen)"
        )
    return Protocol(mode, scales, flip, crop, stride, crop_batch)


def eval_settings(cfg: Config) -> EvalConfig:
    """cfg.eval with its sliding window filled in: eval.crop_size, else Cityscapes' 1024x1024, else the training crop."""
    crop = cfg.eval.crop_size or (CITYSCAPES_CROP if cfg.data.dataset == "cityscapes" else cfg.augment.crop_size)
    return dataclasses.replace(cfg.eval, crop_size=tuple(crop))


def config_protocol(settings: EvalConfig, mode: str | None = None, *, scales: Sequence[float] | None = None,
                    flip: bool | None = None, crop: tuple[int, int] | None = None,
                    stride: tuple[int, int] | None = None, scale: float | None = None) -> Protocol:
    """The protocol of an eval section (see eval_settings), as eval and predict run it; arguments given override it."""
    window, step = crop or settings.crop_size, settings.stride
    if stride is None and step is not None and window and (mode or settings.mode) in ("ssc", "mscf") \
            and not (0 < step[0] <= window[0] and 0 < step[1] <= window[1]):  # the config's: make_protocol says --stride
        raise BisenetError(f"eval.stride {step[0]}x{step[1]} (the config's): must be positive and no larger than the "
                           f"crop {window[0]}x{window[1]} (larger strides leave pixels unseen); fix eval.stride or "
                           "pass --stride HxW")
    return make_protocol(mode or settings.mode, scales or settings.scales, settings.flip if flip is None else flip,
                         crop or settings.crop_size, stride or settings.stride,
                         scale=settings.scale if scale is None else scale)


def _ceil32(n: int) -> int:
    return max(32, math.ceil(n / 32) * 32)


def forward_padded(model: Model, images: torch.Tensor) -> torch.Tensor:
    """Run the model on images padded bottom/right to multiples of 32; crop the logits back exactly."""
    h, w = images.shape[-2:]
    ph, pw = _ceil32(h) - h, _ceil32(w) - w
    # Zero in normalised space is the dataset's mean colour: the most neutral padding.
    padded = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    logits = model(padded)
    if isinstance(logits, (tuple, list)):  # a model left in training mode returns (main, *aux)
        logits = logits[0]
    if logits.shape[0] != images.shape[0] or logits.shape[-2:] != padded.shape[-2:]:
        raise BisenetError(
            f"the model returned {tuple(logits.shape)} for an input of {tuple(padded.shape)}; "
            "it must return N x C x H x W logits at the input size (is it in eval mode?)"
        )
    return logits[..., :h, :w].float()


def _windows(size: int, crop: int, stride: int) -> list[int]:
    """Window starts covering [0, size): a regular grid plus one window flush with the end."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride))
    return starts + [size - crop]


def _sliding(model: Model, images: torch.Tensor, protocol: Protocol, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities summed over overlapping crops (their flips averaged), and the crops per pixel."""
    n, _, h, w = images.shape
    ch, cw = min(protocol.crop[0], _ceil32(h)), min(protocol.crop[1], _ceil32(w))
    # Images smaller than the crop are padded up to it, then cropped back at the end.
    padded = F.pad(images, (0, max(0, cw - w), 0, max(0, ch - h)))
    ph, pw = padded.shape[-2:]
    boxes = [(y, x) for y in _windows(ph, ch, protocol.stride[0]) for x in _windows(pw, cw, protocol.stride[1])]
    probs = None
    counts = torch.zeros(1, 1, ph, pw, device=images.device)
    per_pass = max(1, protocol.crop_batch)
    for first in range(0, len(boxes), per_pass):
        chunk = boxes[first:first + per_pass]
        crops = torch.cat([padded[:, :, y:y + ch, x:x + cw] for y, x in chunk])
        crop_probs = _flip_averaged(model, crops, flip)
        if probs is None:
            probs = torch.zeros(n, crop_probs.shape[1], ph, pw, device=images.device)
        for i, (y, x) in enumerate(chunk):
            probs[:, :, y:y + ch, x:x + cw] += crop_probs[i * n:(i + 1) * n]
            counts[:, :, y:y + ch, x:x + cw] += 1
    return probs[..., :h, :w], counts[..., :h, :w]


def _flip_averaged(model: Model, images: torch.Tensor, flip: bool) -> torch.Tensor:
    """Softmax of the model on images (and their mirror images, in the same forward pass)."""
    n = images.shape[0]
    batch = torch.cat([images, images.flip(-1)]) if flip else images
    probs = forward_padded(model, batch).softmax(dim=1)
    if flip:
        return (probs[:n] + probs[n:].flip(-1)) / 2
    return probs


@torch.inference_mode()
def infer(model: Model, images: torch.Tensor, protocol: Protocol | None = None) -> torch.Tensor:
    """Scores N x C x H x W at the input size: logits for plain ss, else softmax probabilities (a weighted mean)."""
    protocol = protocol or Protocol()
    if images.ndim != 4 or images.shape[1] != 3:
        raise BisenetError(f"expected N x 3 x H x W images, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if protocol.scales == (1.0,) and not protocol.flip and protocol.crop is None:
        return forward_padded(model, images)
    total, counts = None, None
    for scale in protocol.scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        scaled = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        if protocol.crop is not None:
            probs, count = _sliding(model, scaled, protocol, protocol.flip)
        else:
            probs, count = _flip_averaged(model, scaled, protocol.flip), None
        if size != (h, w):
            probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
            count = None if count is None else F.interpolate(count, size=(h, w), mode="bilinear", align_corners=False)
        total = probs if total is None else total.add_(probs)
        if count is not None:
            counts = count if counts is None else counts.add_(count)
    # The protocol sums probabilities, every crop's in full (a scale whose crops overlap more
    # weighs more there, as in the reference); dividing by the sum's count per pixel keeps
    # them in [0, 1] and the argmax unchanged.
    return total / (counts if counts is not None else len(protocol.scales))


def labels_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Per-pixel class ids N x H x W (int64): the channel with the highest score, the first on ties."""
    # max(dim=1).indices, not argmax(dim=1): the same labels, but on the CPU argmax over the
    # channels of NCHW takes 5-10x longer (torch 2.13, 11 x 720 x 960: 70 ms against 14 ms).
    return scores.max(dim=1).indices


def predict_labels(model: Model, images: torch.Tensor, protocol: Protocol | None = None) -> torch.Tensor:
    """Per-pixel class ids N x H x W (int64) at the input size."""
    return labels_from_scores(infer(model, images, protocol))


def build_runner(model: torch.nn.Module, backend: str = "eager", device: str | torch.device = "cpu", **options) -> Model:
    """Wrap an eval-mode model in an inference backend (bisenet.deploy.backends); 'eager' is the model itself."""
    try:
        from bisenet.deploy.backends import build_backend
    except ImportError:
        if backend == "eager":
            return model
        raise BisenetError(
            f"backend {backend!r} needs bisenet.deploy.backends, which this install lacks; use --backend eager (backend='eager' in Python)"
        ) from None
    return build_backend(backend, model, device, **options)  # it resolves 'auto' as the CLI does
