"""Losses: the fused upsampled cross-entropy equals the textbook one, values and gradients."""

from __future__ import annotations

import re

import pytest
import torch
from torch.nn import functional as F

from bisenet.errors import ConfigError, DataError
from bisenet.losses import CrossEntropy, OhemCrossEntropy, SegmentationLoss, pixel_cross_entropy


def textbook(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    up = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, labels, ignore_index=255, reduction="none")


@pytest.mark.parametrize("factor", [4, 8, 32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampled_cross_entropy_matches_interpolate_then_cross_entropy(factor, channels_last) -> None:
    gen = torch.Generator().manual_seed(factor)
    logits = torch.randn(3, 7, 4, 6, generator=gen, dtype=torch.float64).float() * 3
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 7, (3, 4 * factor, 6 * factor), generator=gen)
    labels[0, :3] = 255
    labels[2] = 255  # one image entirely ignored
    weights = torch.rand(labels.shape, generator=gen)

    a = logits.clone().requires_grad_()
    fused = pixel_cross_entropy(a, labels)
    (fused * weights).sum().backward()
    b = logits.clone().requires_grad_()
    ref = textbook(b, labels)
    (ref * weights).sum().backward()

    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    assert (fused[2] == 0).all() and (a.grad[2] == 0).all()


def test_bf16_logits_get_a_bf16_gradient() -> None:
    logits = torch.randn(2, 5, 8, 8).bfloat16().requires_grad_()
    labels = torch.randint(0, 5, (2, 64, 64))
    loss = pixel_cross_entropy(logits, labels)
    assert loss.dtype == torch.float32
    loss.mean().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


@pytest.mark.parametrize("criterion", [OhemCrossEntropy(0.7, 1 / 16), CrossEntropy()])
def test_criteria_give_the_same_loss_and_gradient_on_low_resolution_logits(criterion) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, generator=gen) * 4
    labels = torch.randint(0, 5, (2, 64, 64), generator=gen)
    labels[:, :5] = 255
    low = logits.clone().requires_grad_()
    full = logits.clone().requires_grad_()
    loss_low = criterion(low, labels)
    loss_full = criterion(F.interpolate(full, size=(64, 64), mode="bilinear", align_corners=False), labels)
    loss_low.backward()
    loss_full.backward()
    torch.testing.assert_close(loss_low, loss_full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(low.grad, full.grad, rtol=1e-4, atol=1e-6)


def test_upsampled_cross_entropy_stays_exact_when_neighbouring_logits_differ_by_hundreds() -> None:
    # Between a pixel sure of class 0 and one sure of class 1 every class gets a shifted logit
    # near -200: exp() underflows there, and the loss must take its exact path.
    logits = torch.zeros(2, 3, 2, 2)
    logits[:, 0, :, 0], logits[:, 1, :, 0] = 200.0, -200.0
    logits[:, 0, :, 1], logits[:, 1, :, 1] = -200.0, 200.0
    labels = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    a = logits.clone().requires_grad_()
    fused = pixel_cross_entropy(a, labels)
    fused.sum().backward()
    b = logits.clone().requires_grad_()
    ref = textbook(b, labels)
    ref.sum().backward()
    assert torch.isfinite(fused).all() and torch.isfinite(a.grad).all()
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("low_resolution", [True, False], ids=["upsampled", "full-size"])
@pytest.mark.parametrize("criterion", [OhemCrossEntropy(0.7, 1 / 16), CrossEntropy()], ids=["ohem", "ce"])
def test_any_integer_label_dtype_and_a_channel_dim_give_the_same_loss(criterion, low_resolution) -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 8, 8, generator=gen) * 3
    if not low_resolution:
        logits = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    labels = torch.randint(0, 5, (2, 64, 64), generator=gen)
    labels[:, :4] = 255
    expected = criterion(logits, labels)
    for variant in (labels.to(torch.uint8), labels.int(), labels.short(), labels.unsqueeze(1), labels.byte().unsqueeze(1)):
        torch.testing.assert_close(criterion(logits, variant), expected, rtol=0, atol=0)
    torch.testing.assert_close(pixel_cross_entropy(logits, labels.to(torch.uint8)), pixel_cross_entropy(logits, labels))


@pytest.mark.parametrize(("labels", "message"), [
    (torch.zeros(2, 16, 16), "labels are torch.float32; pass integer class ids"),
    (torch.zeros(2, 16, 16, dtype=torch.bool), "labels are torch.bool; pass integer class ids"),
    (torch.zeros(16, 16, dtype=torch.long), "labels of shape (16, 16) do not fit logits of shape (2, 5, 4, 4); pass N x H x W"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.long), "labels of shape (2, 3, 16, 16) do not fit logits"),
    (torch.zeros(3, 16, 16, dtype=torch.long), "labels of shape (3, 16, 16) do not fit logits"),
    (torch.full((2, 16, 16), 7), "labels hold values 7 outside [0, 5) that are not the ignore index 255"),
    (torch.full((2, 16, 16), -1), "labels hold values -1 outside [0, 5)"),
])
@pytest.mark.parametrize("criterion", [OhemCrossEntropy(), CrossEntropy(), pixel_cross_entropy], ids=["ohem", "ce", "pixel"])
def test_bad_labels_are_one_line_errors(criterion, labels, message) -> None:
    with pytest.raises(DataError, match=re.escape(message)) as info:
        criterion(torch.randn(2, 5, 4, 4), labels)
    assert "\n" not in str(info.value)


def test_an_out_of_range_label_beside_the_ignore_index_is_found() -> None:
    # min/max alone would pass: the extremes are 0 and the ignore index 255.
    labels = torch.randint(0, 5, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    labels[0, 0, :5] = 255
    labels[1, 3, 3] = 9
    for logits in (torch.randn(2, 5, 4, 4), torch.randn(2, 5, 32, 32)):
        with pytest.raises(DataError, match=re.escape("labels hold values 9 outside [0, 5)")):
            OhemCrossEntropy()(logits, labels)


def test_segmentation_loss_refuses_an_aux_weight_count_that_differs_from_the_outputs() -> None:
    logits, labels = torch.randn(2, 5, 4, 4), torch.randint(0, 5, (2, 16, 16))
    total, parts = SegmentationLoss(CrossEntropy(), [0.5, 0.5])([logits, logits, logits], labels.byte())
    assert len(parts) == 3
    torch.testing.assert_close(total, 2 * parts[0])
    for weights, outputs in (([1.0, 1.0, 1.0], [logits, logits]), ([1.0], [logits, logits, logits])):
        with pytest.raises(ConfigError, match=re.escape(f"the model returned {len(outputs) - 1} aux outputs but "
                                                        f"{len(weights)} aux weights are set")):
            SegmentationLoss(CrossEntropy(), weights)(outputs, labels)
    # A model in eval mode returns the main logits alone: the main loss, e.g. for a validation loss.
    total, parts = SegmentationLoss(CrossEntropy(), [1.0, 1.0])(logits, labels)
    assert len(parts) == 1 and torch.equal(total, parts[0])


@pytest.mark.parametrize("thresh", [0.0, 1.5])
def test_ohem_threshold_outside_the_unit_interval_is_refused(thresh) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"OHEM thresh {thresh} (train.ohem_thresh) must lie in (0, 1]")):
        OhemCrossEntropy(thresh)


def test_training_loss_skips_the_value_check_but_gives_the_same_loss() -> None:
    # bisenet train's labels were checked by the dataset; its loss only converts them to int64.
    logits, labels = torch.randn(2, 5, 4, 4), torch.randint(0, 5, (2, 16, 16))
    labels[0, :2] = 255
    checked = SegmentationLoss(OhemCrossEntropy(), [0.5])([logits, logits], labels.byte())
    trusted = SegmentationLoss(OhemCrossEntropy(), [0.5], check_values=False)([logits, logits], labels.byte())
    torch.testing.assert_close(checked[0], trusted[0])
    bad = labels.clone()
    bad[1, 0, 0] = 9
    with pytest.raises(DataError, match="outside"):
        SegmentationLoss(OhemCrossEntropy(), [0.5])([logits, logits], bad)
