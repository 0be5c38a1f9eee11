"""Training-sample throughput per core: a plain pipeline vs bisenet.data (with and without cache).

    python bench/bench_data.py [--root ../shared/data/cityscapes_sample] [--samples 40]

"plain" is the usual reference pipeline: decode the whole PNG, resize the whole image by a
random scale, pad, random crop, flip, float colour jitter, normalise. "fast" is
`build_dataset(...)[(epoch, index)]`; "fast+cache" adds the decoded-image cache (the
first, filling pass is not timed). One process, one OpenCV/torch thread, CPU time: samples/s
per core. The pipelines alternate sample by sample so a busy machine affects all alike.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bisenet.config import load_config
from bisenet.data import build_dataset
from bisenet.data.catalog import build_lut

REPO = Path(__file__).resolve().parents[1]


def plain_sample(image_path: Path, label_path: Path, rng: np.random.Generator, cfg, lut: np.ndarray):
    """decode -> resize whole image -> pad -> crop -> flip -> jitter -> normalise, as references do."""
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    return plain_augment(image, cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED), rng, cfg, lut)


def plain_augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, cfg, lut: np.ndarray):
    """The reference augmentation on decoded BGR image / raw label arrays."""
    aug, data = cfg.augment, cfg.data
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    label = cv2.LUT(label, lut)
    scale = rng.uniform(*aug.scale_range)
    h, w = (math.ceil(v * scale) for v in image.shape[:2])
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    ch, cw = aug.crop_size
    ph, pw = max(0, ch - h), max(0, cw - w)
    if ph or pw:
        image = cv2.copyMakeBorder(image, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_CONSTANT, value=0)
        label = cv2.copyMakeBorder(label, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_CONSTANT,
                                   value=data.ignore_index)
    y = int(rng.integers(0, image.shape[0] - ch + 1))
    x = int(rng.integers(0, image.shape[1] - cw + 1))
    image, label = image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if aug.flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    im = image.astype(np.float32)
    im = np.clip(im * rng.uniform(1 - aug.brightness, 1 + aug.brightness), 0, 255)
    gray = im @ np.array([0.299, 0.587, 0.114], np.float32)
    c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    im = np.clip((im - gray.mean()) * c + gray.mean(), 0, 255)
    s = rng.uniform(1 - aug.saturation, 1 + aug.saturation)
    gray = (im @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    im = np.clip((im - gray) * s + gray, 0, 255)
    im = (im / 255.0 - np.array(data.mean, np.float32)) / np.array(data.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))), torch.from_numpy(label.astype(np.int64))


def interleaved_rates(pipelines: dict, keys: list) -> dict[str, float]:
    """Samples per CPU-second for each pipeline, alternating them sample by sample.

    CPU time of this single-threaded process is the per-core cost, and interleaving keeps
    the comparison fair when other jobs share the machine.
    """
    spent = dict.fromkeys(pipelines, 0.0)
    for key in keys:
        for name, fn in pipelines.items():
            start = time.process_time()
            fn(key)
            spent[name] += time.process_time() - start
    return {name: len(keys) / seconds for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / ".." / "shared" / "data" / "cityscapes_sample")
    parser.add_argument("--list", default="train.txt")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--crop", default="512x1024")
    parser.add_argument("--scale", default="0.25,2.0")
    args = parser.parse_args()
    if not (args.root / args.list).is_file():
        raise SystemExit(f"{args.root / args.list} not found; pass --root with a Cityscapes-layout folder")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    lo, hi = (float(v) for v in args.scale.split(","))
    cfg = load_config({"data": {"dataset": "cityscapes", "root": str(args.root.resolve()), "train_list": args.list},
                       "augment": {"crop_size": args.crop, "scale_range": [lo, hi]}})
    fast = build_dataset(cfg, "train")
    n = len(fast)
    keys = [(i // n, i % n) for i in range(args.samples)]
    lut = build_lut(cfg.data.label_map, cfg.data.ignore_index)
    rng = np.random.default_rng(0)
    cached = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for mode in ("disk", "memory"):
            ds = cached[mode] = build_dataset(load_config(cfg, [f"data.cache={mode}"]), "train")
            ds.cache.directory = Path(cache_dir)
            for i in range(n):  # fill the cache; later epochs are what training sees
                ds[(0, i)]
        results = interleaved_rates({
            "plain": lambda k: plain_sample(*fast.samples[k[1]], rng, cfg, lut),
            "fast": fast.__getitem__,
            "fast+cache (disk)": lambda k: cached["disk"][(k[0] + 1, k[1])],
            "fast+cache (memory)": lambda k: cached["memory"][(k[0] + 1, k[1])],
        }, keys)
        memory = cached["memory"].cache
        decoded = [(memory.image(img), memory.label(lab)) for img, lab in fast.samples]
        augment_only = interleaved_rates({
            "plain": lambda k: plain_augment(*decoded[k[1]], rng, cfg, lut),
            "fast": lambda k: cached["memory"][(k[0] + 1, k[1])],
        }, keys)
    h, w = cv2.imread(str(fast.samples[0][0])).shape[:2]
    print(f"{n} frames {w}x{h} from {args.root}, crop {args.crop}, scale {lo}-{hi}, flip + jitter, "
          f"{args.samples} samples each, 1 thread, per CPU-second")
    print(f"{'pipeline':<22}{'samples/s':>10}{'ms/sample':>11}{'speedup':>9}")
    for name, value in results.items():
        print(f"{name:<22}{value:>10.1f}{1000 / value:>11.1f}{value / results['plain']:>8.1f}x")
    plain_ms, fast_ms = (1000 / augment_only[k] for k in ("plain", "fast"))
    print(f"augmentation alone (decoded input): plain {plain_ms:.1f} ms, fast {fast_ms:.1f} ms "
          f"({plain_ms / fast_ms:.1f}x); the rest of 'plain' and 'fast' is PNG decoding")


if __name__ == "__main__":
    main()
