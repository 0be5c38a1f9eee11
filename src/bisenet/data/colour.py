"""Label maps drawn in colour: the one palette lookup and blend that data, training and prediction share."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from bisenet.errors import BisenetError


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Map an HxW label map to an HxWx3 RGB uint8 image; ids without a colour (e.g. ignore) are black."""
    mask = np.asarray(mask)
    if mask.ndim != 2:  # indexing the table with an HxWx3 array would return HxWx3x3, not an error
        raise BisenetError(f"colorize: the mask has shape {mask.shape}; pass one HxW label map of class ids "
                           "(e.g. from Segmenter.predict), not a colour image or a batch")
    if mask.dtype.kind not in "ui":  # float ids would be truncated (1.9 -> class 1), bools drawn as ids 0 and 1
        raise BisenetError(f"colorize: the mask is {mask.dtype}; pass integer class ids, "
                           "e.g. mask.astype(np.int64) if it holds whole numbers (scores: argmax first)")
    if mask.size and mask.dtype.kind != "u" and mask.min() < 0:  # numpy would wrap it to the table's end
        raise BisenetError(f"colorize: the mask holds negative id {mask.min()}; "
                           "ids must be 0 or more (255 = ignore, drawn black)")
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    size = max(256, len(colours) + 1)  # one black row past the colours at least, for every uint8 id
    lut = np.zeros((size, 3), dtype=np.uint8)
    lut[: len(colours)] = colours
    if mask.size and int(mask.max()) >= size:  # a table as long as a huge id would not fit in memory
        mask = np.minimum(mask, size - 1)
    return lut[mask]


def overlay(image: np.ndarray, colour_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour mask onto a photo (same channel order): alpha * mask + (1 - alpha) * photo."""
    return cv2.addWeighted(colour_mask, float(alpha), image, 1.0 - float(alpha), 0.0)
