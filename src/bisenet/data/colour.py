"""Label maps drawn in colour: the one palette lookup and blend that data, training and prediction share."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from bisenet.errors import BisenetError


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Map an HxW label map to an HxWx3 RGB uint8 image; ids without a colour (e.g. ignore) are black.

    `palette`: [[R, G, B], ...] (0-255), a flat [R, G, B, R, ...] list or an Nx3 array; anything else is refused.
    """
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
    colours = palette_table(palette)
    size = max(256, len(colours) + 1)  # one black row past the colours at least, for every uint8 id
    lut = np.zeros((size, 3), dtype=np.uint8)
    lut[: len(colours)] = colours
    if mask.size and int(mask.max()) >= size:  # a table as long as a huge id would not fit in memory
        mask = np.minimum(mask, size - 1)
    return lut[mask]


def palette_table(palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """A palette ([[R, G, B], ...], a flat [R, G, B, R, ...] or an Nx3 array) as Nx3 uint8, or a one-line error."""
    array_like = isinstance(palette, (Sequence, np.ndarray)) or hasattr(palette, "__array__")  # e.g. a torch tensor
    if isinstance(palette, (str, bytes)) or not array_like:
        raise BisenetError(f"colorize: the palette is {type(palette).__name__}; pass a list of [R, G, B] colours "
                           "0-255, one per class (e.g. Segmenter.palette)")
    try:
        values = np.asarray(palette)
    except ValueError:  # ragged: numpy's "inhomogeneous shape"
        values = None
    if values is None or values.dtype == object:
        raise BisenetError("colorize: the palette's colours differ in length; give each one as [R, G, B]")
    if values.size == 0:  # every id would be drawn black, as the ignore pixels are
        raise BisenetError("colorize: the palette has no colours; pass one [R, G, B] per class")
    if values.dtype.kind not in "iuf":
        hint = " (a '#RRGGBB' string: [int(s[i:i + 2], 16) for i in (1, 3, 5)])" if values.dtype.kind in "US" else ""
        raise BisenetError(f"colorize: the palette holds {values.dtype} values; colours are [R, G, B] numbers "
                           f"0-255{hint}")
    if not (values.ndim == 2 and values.shape[1] == 3 or values.ndim == 1 and values.size % 3 == 0):
        raise BisenetError(f"colorize: the palette has shape {values.shape}; pass N colours as [R, G, B] each "
                           "(an Nx3 list or array, or a flat list of 3N numbers)")
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise BisenetError("colorize: the palette holds fractional values; colours are whole numbers 0-255 "
                           "(0-1 floats: (palette * 255).round())")
    if values.min() < 0 or values.max() > 255:  # uint8 would wrap them, or numpy refuses with an OverflowError
        bad = values.min() if values.min() < 0 else values.max()
        raise BisenetError(f"colorize: the palette holds {bad:g}; colour values must lie in 0-255")
    return values.astype(np.uint8).reshape(-1, 3)


def overlay(image: np.ndarray, colour_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour mask onto a photo (same channel order): alpha * mask + (1 - alpha) * photo."""
    return cv2.addWeighted(colour_mask, float(alpha), image, 1.0 - float(alpha), 0.0)
