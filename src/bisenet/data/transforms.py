"""Training augmentation and normalisation, image and label always moved together.

Why it is fast: the crop window is chosen first, then ONE affine warp per array maps the
crop straight from the source pixels (scale, translation and horizontal flip folded into
the matrix), so nothing outside the crop is ever resized. Colour jitter and normalisation
are then a 3x3 uint8 colour transform (saturation) plus one float lookup table per channel
(brightness, contrast, /255, mean, std) that writes the CHW output directly.

Geometry matches "resize the whole image by s (pixel centres aligned, as cv2.resize does),
pad with 0 / ignore to the crop size, crop, flip": a crop pixel (x, y) reads the scaled
image at (ox + x, oy + y), i.e. the source at ((ox + x + 0.5) / s - 0.5, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# ITU-R BT.601 luma weights in OpenCV's BGR channel order.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float64)


@dataclass(frozen=True)
class CropParams:
    """One random draw of the training augmentation for a source of size (H, W)."""

    scaled_hw: tuple[int, int]  # size of the (virtual) scaled image
    offset: tuple[int, int]  # top-left of the crop in scaled coordinates; negative = padding
    flip: bool
    brightness: float
    contrast: float
    saturation: float


def sample_params(
    rng: np.random.Generator,
    source_hw: tuple[int, int],
    crop_hw: tuple[int, int],
    scale_range: Sequence[float],
    flip: bool,
    brightness: float,
    contrast: float,
    saturation: float,
) -> CropParams:
    """Draw scale, crop offset, flip and jitter factors (always in the same order)."""
    h, w = source_hw
    ch, cw = crop_hw
    scale = rng.uniform(scale_range[0], scale_range[1])
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    # Offsets cover every placement: inside the image when it is larger than the crop,
    # else every position of the image inside a padded crop.
    oy = int(rng.integers(min(0, sh - ch), max(0, sh - ch) + 1))
    ox = int(rng.integers(min(0, sw - cw), max(0, sw - cw) + 1))
    do_flip = bool(rng.random() < 0.5) and flip
    # Always draw all three so the random stream does not depend on which jitters are on.
    factors = [float(rng.uniform(1 - x, 1 + x)) for x in (brightness, contrast, saturation)]
    return CropParams((sh, sw), (oy, ox), do_flip, *factors)


def normalise_tables(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, 256) float32 tables: RGB channel c, pixel v -> (v / 255 - mean[c]) / std[c]."""
    values = np.arange(256, dtype=np.float64) / 255.0
    return np.stack([(values - m) / s for m, s in zip(mean, std)]).astype(np.float32)


def to_chw(image_bgr: np.ndarray, tables: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 HxWx3 -> normalised RGB float32 3xHxW via one table lookup per channel."""
    h, w = image_bgr.shape[:2]
    if out is None:
        out = np.empty((3, h, w), dtype=np.float32)
    planes = cv2.split(image_bgr)
    for c in range(3):  # output channel c (R, G, B) comes from BGR plane 2 - c
        cv2.LUT(planes[2 - c], tables[c], dst=out[c])
    return out


def map_label(label: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """Raw label values -> train ids through a 256-entry uint8 table (None: unchanged)."""
    return label if lut is None else cv2.LUT(label, lut)


def eval_sample(
    image_bgr: np.ndarray, label: np.ndarray, lut: np.ndarray | None, tables: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """No augmentation: normalised CHW image and mapped label at the original size."""
    return to_chw(image_bgr, tables), np.ascontiguousarray(map_label(label, lut))


def crop_axis(src_len: int, scaled_len: int, crop_len: int, offset: int,
              flipped: bool) -> tuple[float, float, tuple[int, int], tuple[int, int]]:
    """Affine source coordinate a * x + b for crop index x, the source span and valid crop span."""
    f = src_len / scaled_len
    if flipped:
        a, b = -f, f * (offset + crop_len - 1 + 0.5) - 0.5
        lo, hi = max(0, offset + crop_len - scaled_len), min(crop_len, offset + crop_len)
    else:
        a, b = f, f * (offset + 0.5) - 0.5
        lo, hi = max(0, -offset), min(crop_len, scaled_len - offset)
    # Source pixels the valid crop span touches, with a margin for bilinear support.
    ends = (a * lo + b, a * (hi - 1) + b)
    s0 = max(0, math.floor(min(ends)) - 1)
    s1 = min(src_len, math.ceil(max(ends)) + 2)
    return a, b - s0, (s0, s1), (lo, hi)


def _jitter_tables(crop: np.ndarray, rows: slice, cols: slice, p: CropParams, tables_rgb: np.ndarray) -> np.ndarray:
    """Per-channel tables doing brightness, contrast about the crop's mean luma, then normalise."""
    if p.brightness == 1.0 and p.contrast == 1.0:
        return tables_rgb
    v = np.clip(np.arange(256, dtype=np.float64) * p.brightness, 0, 255)
    if p.contrast != 1.0:
        means_bgr = np.array(cv2.mean(crop[rows, cols])[:3])
        luma = min(255.0, float(_LUMA_BGR @ means_bgr) * p.brightness)
        v = np.clip((v - luma) * p.contrast + luma, 0, 255)
    # Channel tables are affine in the pixel value: table[c][v] = t0 + (t255 - t0) * v / 255.
    t0 = tables_rgb[:, :1].astype(np.float64)
    slope = (tables_rgb[:, 255:256].astype(np.float64) - t0) / 255.0
    return (t0 + slope * v[None, :]).astype(np.float32)


def train_sample(
    image_bgr: np.ndarray,
    label: np.ndarray,
    params: CropParams,
    crop_hw: tuple[int, int],
    lut: np.ndarray | None,
    ignore_index: int,
    tables: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale + pad + crop + flip + jitter + normalise; returns (3xHxW float32, HxW uint8)."""
    h, w = image_bgr.shape[:2]
    ch, cw = crop_hw
    sh, sw = params.scaled_hw
    oy, ox = params.offset
    ay, by, (y0, y1), (r0, r1) = crop_axis(h, sh, ch, oy, False)
    ax, bx, (x0, x1), (c0, c1) = crop_axis(w, sw, cw, ox, params.flip)
    matrix = np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64)  # offsets already relative to (x0, y0)
    # BORDER_REPLICATE gives cv2.resize's edge behaviour; padding is written explicitly below.
    flags = cv2.WARP_INVERSE_MAP
    crop = cv2.warpAffine(image_bgr[y0:y1, x0:x1], matrix, (cw, ch), flags=flags | cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    lab = cv2.warpAffine(label[y0:y1, x0:x1], matrix, (cw, ch), flags=flags | cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_REPLICATE)
    lab = map_label(lab, lut)
    rows, cols = slice(r0, r1), slice(c0, c1)
    if params.saturation != 1.0:
        s = params.saturation
        mix = (1.0 - s) * np.tile(_LUMA_BGR, (3, 1)) + s * np.eye(3)
        crop = cv2.transform(crop, mix)  # uint8 in and out: saturates like a real image would
    out = to_chw(crop, _jitter_tables(crop, rows, cols, params, tables))
    padded = (r0, r1, c0, c1) != (0, ch, 0, cw)
    if padded:
        # Padding is pixel value 0 before normalisation and the ignore index in the label.
        keep = np.zeros((ch, cw), dtype=bool)
        keep[rows, cols] = True
        out[:, ~keep] = tables[:, :1]
        lab[~keep] = ignore_index
    return out, np.ascontiguousarray(lab)
