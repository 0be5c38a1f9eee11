"""`data.cache: device`: batches augmented on the training device match the CPU pipeline.

Run here with device="cpu" (the same tensor code runs on CUDA); bench/gpu_check.sh covers the GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bisenet
from bisenet.data import build_dataset
from bisenet.data.device_augment import DeviceBatches
from bisenet.engine.sampler import IterationSampler

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"
# Scales below crop/tile size pad the crop, those above crop inside the tile: both paths run.
OVERRIDES = {"data.root": str(EXAMPLE), "augment.crop_size": [256, 320], "augment.scale_range": [0.25, 1.5]}


@pytest.fixture(scope="module")
def train_set():
    return build_dataset(bisenet.load_config(CONFIG, OVERRIDES), "train")


def test_device_samples_match_the_cpu_pipeline(train_set) -> None:
    device = DeviceBatches(train_set, [], 4, "cpu")
    padded = 0
    agreements = []
    for epoch, index in [(e, i) for e in range(2) for i in range(0, len(train_set), 3)]:
        cpu_image, cpu_label = train_set[(epoch, index)]
        image, label = device.sample(epoch, index)
        assert image.shape == cpu_image.shape and image.dtype == torch.float32
        assert label.shape == cpu_label.shape and label.dtype == torch.int64
        diff = (image - cpu_image).abs()
        # Normalised units (std ~0.25): 0.1 is under 7 grey levels, seen only at interpolation rounding.
        assert diff.mean() < 0.005 and diff.max() < 0.1, (epoch, index, diff.mean(), diff.max())
        agreements.append((label == cpu_label).float().mean().item())
        ignored = cpu_label == 255
        padded += int(bool(ignored.all(dim=1).any() or ignored.all(dim=0).any()))  # whole padded rows or columns
    assert min(agreements) > 0.99 and sum(agreements) / len(agreements) > 0.999
    assert padded > 0, "no sample was padded: widen scale_range so the padding path runs"


def test_device_batches_follow_the_sampler(train_set) -> None:
    sampler = IterationSampler(len(train_set), 3, seed=0, start_iter=2, max_iters=4)
    batches = list(DeviceBatches(train_set, sampler, 3, "cpu"))
    assert len(batches) == 2
    keys = list(sampler)
    images, labels = batches[1]
    assert images.shape == (3, 3, 256, 320) and labels.shape == (3, 256, 320)
    expected = DeviceBatches(train_set, [], 3, "cpu").sample(*keys[3])
    assert torch.equal(images[0], expected[0]) and torch.equal(labels[0], expected[1])


def test_training_with_device_cache_matches_the_dataloader(tmp_path) -> None:
    # The first step's loss sees the data only; later ones amplify rounding through the updates.
    def first_losses(cache: str) -> list[float]:
        cfg = bisenet.load_config(CONFIG, {**OVERRIDES, "augment.crop_size": [128, 128], "data.cache": cache,
                                           "train.max_iters": 1, "train.batch_size": 4, "train.workers": 0,
                                           "train.eval_interval": 0, "train.log_interval": 1})
        bisenet.train(cfg, tmp_path / cache)
        lines = (tmp_path / cache / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["type"] == "train"]

    device, memory = first_losses("device"), first_losses("memory")
    assert len(device) == len(memory) == 1
    # The samples differ at interpolation rounding (labels on up to 1% of pixels, see above), which
    # moves OHEM's hard-pixel set: 0.9e-3 and 1.3e-3 apart with two versions of the model code.
    assert device[0] == pytest.approx(memory[0], rel=3e-3)
    assert (tmp_path / "device" / "last.pt").is_file()


def test_device_batches_refuse_an_eval_split() -> None:
    val_set = build_dataset(bisenet.load_config(CONFIG, OVERRIDES), "val")
    with pytest.raises(ValueError, match="train split"):
        DeviceBatches(val_set, [], 2, "cpu")
