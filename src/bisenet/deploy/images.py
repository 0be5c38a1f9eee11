"""Small image helpers for calibration and agreement: read a folder, resize, normalise."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from bisenet.errors import BisenetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files directly in `folder`, sorted by name; at most `limit` of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BisenetError(f"{folder}: image folder not found; pass a folder of .jpg/.png images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BisenetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files[:limit] if limit else files


def read_image(
    path: str | os.PathLike,
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """One image as a normalised float32 3 x H x W tensor (RGB on [0, 1], resized to `size`)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BisenetError(f"{path}: cannot read this image file")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = size
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    x = (rgb.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def read_folder(
    folder: str | os.PathLike,
    size: tuple[int, int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    limit: int | None = None,
) -> list[torch.Tensor]:
    """Every image of a folder (up to `limit`) as normalised 3 x H x W tensors at `size`.

    size=None: the first image's size rounded to multiples of 32 (at least 32), for all of them.
    """
    files = list_images(folder, limit)
    if size is None:
        import cv2

        first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise BisenetError(f"{files[0]}: cannot read this image file")
        size = tuple(max(32, round(side / 32) * 32) for side in first.shape[:2])
    return [read_image(p, size, mean, std) for p in files]


def as_batches(images: Iterable[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
    """Normalised images (3 x H x W or N x 3 x H x W, arrays or tensors) as float32 NCHW tensors."""
    batches = []
    for image in images:
        x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise BisenetError(f"calibration image of shape {tuple(x.shape)}: expected normalised 3 x H x W or N x 3 x H x W")
        batches.append(x.cpu())
    if not batches:
        raise BisenetError("no calibration images given; pass a folder or a list of normalised images")
    return batches
