"""Geometry of every inference protocol: a model that echoes its input must be recovered exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bisenet.errors import BisenetError
from bisenet.evaluation import Protocol, infer, labels_from_scores, make_protocol, predict_labels
from bisenet.evaluation.inference import _windows


class Echo(nn.Module):
    """Logits = the input's three colour channels; checks the input size is a multiple of 32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0, x.shape
        return x[:, :3].clone()


def identity_conv() -> nn.Module:
    """A 1x1 convolution with identity weights: the same echo, as a real layer."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    return conv.eval()


def images(n: int = 2, h: int = 37, w: int = 53) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h * w))


def smooth_images(n: int = 1, h: int = 75, w: int = 101) -> torch.Tensor:
    """Slowly varying channels, so that bilinear rescaling keeps the argmax almost everywhere."""
    y = torch.linspace(0, 3.0, h).view(1, h, 1)
    x = torch.linspace(0, 4.0, w).view(1, 1, w)
    channels = torch.cat([torch.sin(y + x), torch.cos(2 * y - x), torch.sin(x * 1.3) * torch.cos(y)])
    return channels.expand(n, 3, h, w).clone()


@pytest.mark.parametrize("model", [Echo(), identity_conv()], ids=["echo", "conv1x1"])
@pytest.mark.parametrize("size", [(37, 53), (32, 64), (1, 1), (65, 31)])
def test_ss_pads_and_crops_back_exactly(model: nn.Module, size: tuple[int, int]) -> None:
    x = images(2, *size)
    out = infer(model, x, make_protocol("ss"))
    assert out.shape == x.shape
    assert torch.equal(out, x)
    assert torch.equal(predict_labels(model, x), x.argmax(dim=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_labels_from_scores_is_argmax_first_on_ties(dtype: torch.dtype, channels_last: bool) -> None:
    scores = torch.randn(2, 11, 33, 47, generator=torch.Generator().manual_seed(3)).to(dtype)
    scores[:, 4, :5] = scores[:, 9, :5] = 100.0  # ties: the lower class wins, as with argmax
    if channels_last:
        scores = scores.contiguous(memory_format=torch.channels_last)
    labels = labels_from_scores(scores)
    assert labels.dtype == torch.int64 and labels.shape == (2, 33, 47)
    assert torch.equal(labels, scores.argmax(dim=1))
    assert (labels[:, :5] == 4).all()


@pytest.mark.parametrize("size,crop,stride", [
    ((70, 91), (32, 64), (21, 40)),  # many overlapping windows, odd sizes
    ((37, 53), (64, 64), None),  # image smaller than the crop: padded, one window
    ((96, 130), (64, 64), (64, 64)),  # stride = crop: windows flush with the end overlap the last one
])
def test_ssc_averages_softmax_over_windows_exactly(size, crop, stride) -> None:
    x = images(2, *size)
    protocol = make_protocol("ssc", crop=crop, stride=stride)
    out = infer(identity_conv(), x, protocol)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x.softmax(dim=1), rtol=0, atol=1e-6)
    assert torch.equal(out.argmax(dim=1), x.argmax(dim=1))


@pytest.mark.parametrize("mode", ["ss", "ssc"])
def test_flip_is_mapped_back(mode: str) -> None:
    x = images(1, 45, 77)
    protocol = make_protocol(mode, flip=True, crop=(32, 32))
    out = infer(Echo(), x, protocol)
    # Forgetting to flip the mirrored output back would give softmax(x.flip(-1)) in half the sum.
    torch.testing.assert_close(out, x.softmax(dim=1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["msf", "mscf"])
def test_multi_scale_at_scale_one_is_exact(mode: str) -> None:
    x = images(1, 45, 77)
    out = infer(identity_conv(), x, make_protocol(mode, scales=[1.0, 1.0], crop=(32, 64)))
    torch.testing.assert_close(out, x.softmax(dim=1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["msf", "mscf"])
def test_multi_scale_keeps_geometry(mode: str) -> None:
    x = smooth_images(1, 75, 101)
    out = infer(Echo(), x, make_protocol(mode, scales=[0.5, 0.75, 1.25, 1.5], crop=(64, 64)))
    assert out.shape == x.shape
    assert torch.allclose(out.sum(dim=1), torch.ones(1, 75, 101), atol=1e-5)  # averaged probabilities
    agree = (out.argmax(dim=1) == x.argmax(dim=1)).float().mean()
    assert agree > 0.97, agree


def test_protocol_defaults_and_errors() -> None:
    assert make_protocol("msf").scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert make_protocol("msf").flip is True
    assert make_protocol("ss").flip is False and make_protocol("ss", scales=[2.0]).scales == (1.0,)
    assert make_protocol("ssc", crop=(1024, 1024)).stride == (683, 683)
    assert "crop 1024x1024" in make_protocol("mscf", crop=(1024, 1024)).describe()
    # msf/mscf always say their scales and flip: "msf" alone hid a one-scale, unflipped run.
    assert make_protocol("msf", scales=[1.0], flip=False).describe() == "msf scales 1 no flip"
    assert make_protocol("ss").describe() == "ss" and make_protocol("ss", flip=True).describe() == "ss flip"
    with pytest.raises(BisenetError, match="multiples of 32"):
        make_protocol("ssc", crop=(100, 100))
    with pytest.raises(BisenetError, match="no larger than the crop"):
        make_protocol("ssc", crop=(64, 64), stride=(65, 10))
    with pytest.raises(BisenetError, match="needs a crop"):
        make_protocol("mscf")
    with pytest.raises(BisenetError, match="not one of"):
        make_protocol("fast")


def test_single_scale_at_another_scale_resizes_the_input() -> None:
    seen = []

    class Recorder(Echo):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    protocol = make_protocol("ss", scale=2.0)
    assert protocol.scales == (2.0,) and protocol.describe() == "ss scale 2"
    x = smooth_images(1, 64, 96)
    out = infer(Recorder(), x, protocol)
    assert seen == [(128, 192)] and out.shape == x.shape  # run at 2x, scored at the label's size
    assert (out.argmax(dim=1) == x.argmax(dim=1)).float().mean() > 0.97


def test_eval_scale_is_checked_in_the_config() -> None:
    import bisenet

    assert bisenet.load_config(None, {"data.dataset": "camvid", "eval.scale": 2.0}).eval.scale == 2.0
    with pytest.raises(BisenetError, match=r"eval.scale = 0.0 must lie in \(0, 8\]"):
        bisenet.load_config(None, {"data.dataset": "camvid", "eval.scale": 0.0})


def test_wrong_output_size_is_a_clear_error() -> None:
    class Half(nn.Module):
        def forward(self, x):
            return x[:, :3, ::2, ::2]

    with pytest.raises(BisenetError, match="at the input size"):
        infer(Half(), images(1, 32, 32), Protocol())


def test_windows_cover_everything() -> None:
    assert _windows(50, 64, 43) == [0]
    assert _windows(128, 64, 43) == [0, 43, 64]
    for size in range(64, 300, 7):
        starts = _windows(size, 64, 43)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            covered[s:s + 64] = True
        assert covered.all() and starts[-1] + 64 == size


def _textbook_mscf_labels(model: nn.Module, x: torch.Tensor, scales, crop: int, stride: int, average: bool):
    """The reference's mscf written out plainly: each crop's (flip-summed) softmax added in, per scale summed
    after upsampling; `average` divides each scale's sum by its crops per pixel first (not the reference)."""
    h, w = x.shape[-2:]
    total = 0
    for scale in scales:
        size = (round(h * scale), round(w * scale))
        xs = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        sums, counts = torch.zeros(1, 4, *size), torch.zeros(1, 1, *size)
        for y in sorted(set(list(range(0, size[0] - crop, stride)) + [size[0] - crop])):
            for x0 in sorted(set(list(range(0, size[1] - crop, stride)) + [size[1] - crop])):
                tile = xs[..., y:y + crop, x0:x0 + crop]
                with torch.no_grad():
                    p = model(tile).softmax(1) + model(tile.flip(-1)).softmax(1).flip(-1)
                sums[..., y:y + crop, x0:x0 + crop] += p
                counts[..., y:y + crop, x0:x0 + crop] += 1
        if average:
            sums = sums / counts
        total = total + torch.nn.functional.interpolate(sums, size=(h, w), mode="bilinear", align_corners=False)
    return total.argmax(1)


def test_mscf_weighs_crops_as_the_reference_sums_them() -> None:
    # A scale whose crops overlap more counts more there (probabilities summed, not averaged per scale).
    torch.manual_seed(3)
    model = nn.Conv2d(3, 4, 7, padding=3).eval()
    x = torch.randn(1, 3, 64, 96)
    scales, crop, stride = (0.75, 1.0, 1.5), 32, 12
    protocol = make_protocol("mscf", scales=scales, crop=(crop, crop), stride=(stride, stride), flip=True)
    with torch.no_grad():
        ours = infer(model, x, protocol).argmax(1)
    reference = _textbook_mscf_labels(model, x, scales, crop, stride, average=False)
    averaged = _textbook_mscf_labels(model, x, scales, crop, stride, average=True)
    assert not torch.equal(reference, averaged)  # the weighting matters on this input: the test can fail
    assert torch.equal(ours, reference)
