"""`bisenet data show`: what a config feeds the network, drawn as photo | train ids | overlay.

The quickest check that a custom label encoding, a label map or the augmentation is what you
meant: every row is one list line, after the same decoding, label map and (with `augment`) the
same random crop, scale, flip and colour jitter that training draws for that epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from bisenet.config import Config, load_config
from bisenet.data.catalog import palette_for
from bisenet.data.colour import colorize, overlay
from bisenet.data.dataset import SegmentationDataset, build_dataset, spread_indices
from bisenet.data.lists import plural
from bisenet.data.transforms import map_label
from bisenet.errors import DataError, write_atomic

MAX_COUNT, MAX_WIDTH = 100, 2048  # a picture a screen shows, not gigabytes of pixels
IGNORE_TILE = 8  # ignore pixels drawn as a grey checkerboard: no class colour (black included) looks like it
GAP = 6  # pixels between panels
CAPTION = 22  # height of the bar naming each row's list line
LEGEND_COLUMN = 190  # width of one legend entry
FONT, CAPTION_SCALE, LEGEND_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0.42


def show_samples(
    config: Config | str | os.PathLike | dict,
    out: str | os.PathLike = "samples.png",
    split: str = "train",
    count: int = 6,
    augment: bool = False,
    data_root: str | os.PathLike | None = None,
    list_file: str | os.PathLike | None = None,
    epoch: int = 0,
    width: int = 400,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write a PNG of `count` samples spread over the split, with a legend of the classes shown.

    `log` gets a one-line note when the list holds fewer pairs than `count` (all of them are shown).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    if not 1 <= count <= MAX_COUNT or not 32 <= width <= MAX_WIDTH:
        raise DataError(f"--count {count}, --width {width}: need 1-{MAX_COUNT} samples and 32-{MAX_WIDTH} pixels per panel")
    if Path(out).suffix.lower() != ".png":
        raise DataError(f"--out {out}: the drawing is a PNG (lossless colours); name it {Path(out).with_suffix('.png').name}")
    if augment and split != "train":
        raise DataError(f"--augment draws the training augmentation; it needs --split train, not {split}")
    if epoch and not augment:
        raise DataError(f"--epoch {epoch} needs --augment (it picks which epoch's random augmentation to draw)")
    if epoch < 0:
        raise DataError(f"--epoch {epoch}: epochs count from 0")
    dataset = build_dataset(cfg, split, data_root, list_file)
    _refuse_input(out, config, dataset)  # before decoding anything
    for note in dataset.list_notes if log is not None else ():
        log(note)
    if count > len(dataset) and log is not None:  # else the picture silently has fewer rows than asked for
        log(f"{dataset.list_file} has {plural(len(dataset), 'pair')}; showing {len(dataset)}, not --count {count}")
    palette = palette_for(cfg.data.palette, cfg.num_classes)
    names = cfg.data.class_names or [f"class {i}" for i in range(cfg.num_classes)]
    rows, shown = [], set()
    for index in spread_indices(len(dataset), count):
        photo, label = _sample(dataset, index, augment, epoch)
        shown.update(np.unique(label).tolist())
        caption = f"{dataset.list_file.name} line {dataset.lines[index]}: {dataset.samples[index][0].name}"
        rows.append(_row(photo, label, palette, cfg.data.ignore_index, width, caption))
    panel_width = rows[0].shape[1]
    canvas = np.vstack(rows + [_legend(sorted(shown), names, palette, cfg.data.ignore_index, panel_width)])
    png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))[1]
    return write_atomic(out, lambda tmp: tmp.write_bytes(png.tobytes()), "--out", "samples.png")


def _refuse_input(out: str | os.PathLike, config: object, dataset: SegmentationDataset) -> None:
    """A one-line DataError when --out is the config, the list or one of its images or labels (it would be replaced)."""
    from bisenet.data.dataset import dataset_inputs
    from bisenet.errors import first_clash

    given = [("config", config)] if isinstance(config, (str, os.PathLike)) else []
    clash = first_clash([Path(out)], given + dataset_inputs(dataset))
    if clash is not None:
        _, kind, source = clash
        of = "" if kind in ("config", "list file") else f" of {dataset.list_file}"
        raise DataError(f"--out {out} is the {kind} {source}{of}: the drawing would replace it; pass another path "
                        "(none of the dataset's files), e.g. --out samples.png")


def _sample(dataset: SegmentationDataset, index: int, augment: bool, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 photo and uint8 train ids of one sample, augmented as in training or as stored."""
    if augment:
        image, label = dataset[(epoch, index)]
        mean = np.asarray(dataset.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(dataset.std, np.float32).reshape(3, 1, 1)
        photo = np.clip((image.numpy() * std + mean) * 255, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
        return np.ascontiguousarray(photo), label.numpy().astype(np.uint8)
    image, label, lut = dataset.decoded(index)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), map_label(label, lut)


def _checkerboard(height: int, width: int, tile: int = IGNORE_TILE) -> np.ndarray:
    """The ignore pattern: light and dark grey squares."""
    y, x = np.mgrid[:height, :width] // tile
    return np.where(((x + y) % 2 == 0)[..., None], 200, 110).astype(np.uint8).repeat(3, axis=2)


def _row(photo: np.ndarray, label: np.ndarray, palette: list[list[int]], ignore_index: int, width: int,
         caption: str) -> np.ndarray:
    """Caption bar over photo | colour labels | overlay, each `width` pixels wide."""
    height = max(1, round(photo.shape[0] * width / photo.shape[1]))
    photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
    colour = colorize(label, palette)
    colour[label == ignore_index] = _checkerboard(height, width)[label == ignore_index]
    gap = np.full((height, GAP, 3), 255, np.uint8)
    panels = np.hstack([photo, gap, colour, gap, overlay(photo, colour, 0.5)])
    bar = np.full((CAPTION, panels.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, fit_text(caption, panels.shape[1] - 8, CAPTION_SCALE), (4, CAPTION - 7), FONT, CAPTION_SCALE,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, panels, np.full((GAP, panels.shape[1], 3), 255, np.uint8)])


def _legend(ids: list[int], names: list[str], palette: list[list[int]], ignore_index: int, width: int) -> np.ndarray:
    """Swatch and name of each class id shown (the ignore id as the panels' checkerboard)."""
    entries = [(names[i] if i < len(names) else f"id {i}", palette[i] if i < len(palette) else [0, 0, 0])
               for i in ids if i != ignore_index]
    if ignore_index in ids:
        entries.append((f"ignore ({ignore_index})", None))
    columns = max(1, width // LEGEND_COLUMN)
    lines = -(-len(entries) // columns)
    legend = np.full((lines * 20 + 6, width, 3), 255, np.uint8)
    for k, (name, colour) in enumerate(entries):
        x, y = (k % columns) * LEGEND_COLUMN + 4, (k // columns) * 20 + 4
        if colour is None:
            legend[y:y + 15, x:x + 15] = _checkerboard(15, 15, tile=5)
        else:
            cv2.rectangle(legend, (x, y), (x + 14, y + 14), tuple(int(c) for c in colour), -1)
        cv2.rectangle(legend, (x, y), (x + 14, y + 14), (120, 120, 120), 1)
        room = min(LEGEND_COLUMN, width - x) - 24  # up to the next column or the picture's edge
        cv2.putText(legend, fit_text(name, room, LEGEND_SCALE), (x + 20, y + 12), FONT, LEGEND_SCALE, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return legend


def fit_text(text: str, room: int, scale: float) -> str:
    """`text`, or its longest start that fits `room` pixels with '...' appended: never a letter cut at the edge."""
    def width(candidate: str) -> int:
        return cv2.getTextSize(candidate, FONT, scale, 1)[0][0]

    if width(text) <= room:
        return text
    keep = len(text)
    while keep > 0 and width(text[:keep].rstrip() + "...") > room:
        keep -= 1
    return text[:keep].rstrip() + "..." if keep else ""
