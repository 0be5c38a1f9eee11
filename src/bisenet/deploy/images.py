"""Small image helpers for calibration and agreement: read a folder, resize, normalise."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from bisenet.data.catalog import IMAGENET_MEAN, IMAGENET_STD
from bisenet.data.layouts import IMAGE_EXTS
from bisenet.errors import BisenetError


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files directly in `folder`, sorted by name; at most `limit` of them."""
    folder = Path(folder)
    if folder.is_file():
        example = _folder_for_file(folder)
        raise BisenetError(f"{folder} is a file, not a folder; pass the folder of .jpg/.png images"
                           + (f" (e.g. {example})" if example is not None else ""))
    if not folder.is_dir():
        raise BisenetError(f"{folder}: image folder not found; pass a folder of .jpg/.png images")
    files = _images_in(folder)
    if not files:
        below = _image_folder_below(folder)  # subfolders are not searched: name one that would work
        if below is not None:
            raise BisenetError(f"no images directly in {folder} (subfolders are not searched); {below[0]} "
                               f"holds {below[1]} image(s): pass that folder")
        raise BisenetError(f"{folder}: no images ({', '.join(IMAGE_EXTS)}) in this folder or its subfolders")
    return files[:limit] if limit else files


def _images_in(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name; none when it cannot be read."""
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    except OSError:
        return []


def _image_folder_below(top: Path, max_folders: int = 2000) -> tuple[Path, int] | None:
    """(folder, image count) of the first folder below `top`, breadth first, that holds images directly.

    Bounded, so that a hint on a huge tree costs no more than a moment; hidden folders are skipped.
    """
    queue, seen = [top], 0
    while queue and seen < max_folders:
        folder = queue.pop(0)
        seen += 1
        try:
            children = sorted(p for p in folder.iterdir()
                              if p.is_dir() and not p.name.startswith(".") and not _label_folder(p.name))
        except OSError:
            continue
        for child in children:
            count = len(_images_in(child))
            if count:
                return child, count
        queue.extend(children)
    return None


LABEL_FOLDERS = {"gtfine", "gtcoarse", "annotations", "annotation", "labels", "label", "masks", "mask", "gt"}


def _label_folder(name: str) -> bool:
    """True for a folder of label maps by its name (Cityscapes' gtFine, ADE's annotations, CamVid's trainannot):
    calibrating int8 on masks would quantise for the wrong inputs, silently."""
    name = name.lower()
    return name in LABEL_FOLDERS or name.endswith("annot")


def _folder_for_file(path: Path) -> Path | None:
    """A folder that really holds images, to suggest for a file given as one: an image's own folder, the folder
    of a list file's first image, else the first image folder below the file's folder; None when there is none."""
    if path.suffix.lower() in IMAGE_EXTS:
        return path.parent
    first = _first_listed_image(path)
    if first is not None:
        return first.parent
    if _images_in(path.parent):
        return path.parent
    below = _image_folder_below(path.parent)
    return below[0] if below is not None else None


def _first_listed_image(list_file: Path) -> Path | None:
    """The first image of an 'image,label' list file that exists (paths relative to the list's folder or the cwd)."""
    from bisenet.data.lists import parse_line

    try:
        with open(list_file, encoding="utf-8-sig") as handle:
            lines = [line.strip() for _, line in zip(range(100), handle)]  # a list's head; not a whole big file
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        pair = parse_line(line) if line and not line.startswith("#") else None
        if pair is None:
            continue
        image = Path(pair[0]).expanduser()
        for candidate in ([image] if image.is_absolute() else [list_file.parent / image, image]):
            if candidate.is_file() and candidate.suffix.lower() in IMAGE_EXTS:
                return candidate
    return None


def read_image(
    path: str | os.PathLike,
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """One image as a normalised float32 3 x H x W tensor (RGB on [0, 1], resized to `size`)."""
    return _normalise(_read_rgb(path), size, mean, std)


def _read_rgb(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8, or a one-line BisenetError saying why the file cannot be read (corrupt, truncated, empty)."""
    import cv2

    from bisenet.data.decode import FileProblem
    from bisenet.data.decode import read_image as decode

    try:
        return cv2.cvtColor(decode(path), cv2.COLOR_BGR2RGB)  # predict's reader: 16-bit PNGs read alike
    except FileProblem as exc:
        raise BisenetError(str(exc)) from None


def _normalise(rgb: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB uint8 resized to `size` and normalised, as a float32 3 x H x W tensor."""
    import cv2

    h, w = size
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    x = (rgb.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def read_folder(
    folder: str | os.PathLike | Sequence[str | os.PathLike],
    size: tuple[int, int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    limit: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[torch.Tensor]:
    """Every readable image of a folder, or of a list of image files, (up to `limit`) as normalised 3 x H x W tensors.

    size=None: the first readable image's size rounded to multiples of 32 (at least 32), for all of them.
    Unreadable files are skipped with one note to `log` (default: stderr); none readable is an error.
    `limit` None or 0 reads them all.
    """
    if limit is not None and limit < 0:  # else nothing is read and the "none readable" message has no example
        raise BisenetError(f"limit {limit}: pass at least 1 image (0 or None: all of them)")
    if isinstance(folder, (str, os.PathLike)):
        files = list_images(folder)  # all: `limit` counts readable images
    else:
        files, folder = [Path(p) for p in folder], "the calibration images"
        if not files:
            raise BisenetError("no calibration images given; pass a folder of images like the ones to segment")
    images, problems = [], []
    for path in files:
        if limit and len(images) >= limit:
            break
        try:
            rgb = _read_rgb(path)
        except BisenetError as exc:  # one corrupt file in a folder of photos should not end the run
            problems.append(str(exc))
            continue
        if size is None:
            size = tuple(max(32, round(side / 32) * 32) for side in rgb.shape[:2])
        images.append(_normalise(rgb, size, mean, std))
    if not images:
        raise BisenetError(f"{folder}: none of its {len(files)} image file(s) can be read ({problems[0]}); "
                           "pass a folder of readable .jpg/.png images")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
            f"note: skipped {len(problems)} unreadable image file(s) in {folder}: {problems[0]}{more}")
    return images


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
