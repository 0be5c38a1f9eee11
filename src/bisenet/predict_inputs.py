"""`bisenet predict`'s inputs: the images and videos named or found in folders, each with its output stem."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from bisenet.data.layouts import IMAGE_EXTS as LAYOUT_IMAGE_EXTS

if TYPE_CHECKING:  # only annotated here: predict_files imports this module
    from bisenet.predict_files import PredictSummary

IMAGE_EXTS = set(LAYOUT_IMAGE_EXTS)
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}

IMAGE_OUTPUTS = ("_label.png", "_color.png", "_overlay.png")  # what predict writes per image, after its stem
VIDEO_OUTPUT = "_overlay.mp4"  # ... and per video


def expand_inputs(inputs: Iterable[str | os.PathLike], summary: PredictSummary,
                  out_dir: str | os.PathLike | None = None) -> tuple[list[Path], list[Path]]:
    """Split inputs into image and video files; folders are searched recursively, leaving out `out_dir` and earlier outputs."""
    images, videos = _expand(inputs, summary, out_dir)
    return [path for path, _ in images], [path for path, _ in videos]


Named = tuple[Path, PurePath]  # an input file and its output stem relative to --out


def _expand(inputs: Iterable[str | os.PathLike], summary: PredictSummary,
            out_dir: str | os.PathLike | None) -> tuple[list[Named], list[Named]]:
    """`expand_inputs`, each file with its output stem: the subfolders below its input folder, then its own stem."""
    images: list[Named] = []
    videos: list[Named] = []
    out = Path(out_dir).resolve() if out_dir is not None else None
    first: dict[object, Path] = {}  # each file's identity -> the INPUT it first came from
    repeats: dict[tuple[Path, Path], int] = {}  # (INPUT, earlier INPUT) -> how many of its files were dropped
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files, earlier, hidden = _search(path, out)
            summary.earlier_outputs += earlier
            if not files:
                summary.skipped.append(_empty_folder(path, out, earlier, hidden))
            if files and earlier:
                summary.notes.append(f"skipped {earlier} file(s) in {path}: outputs of an earlier predict run "
                                     f"(<stem>{'/'.join(IMAGE_OUTPUTS)} side by side, <stem>{VIDEO_OUTPUT}); "
                                     "name one as an INPUT to segment it anyway")
            if files and hidden:
                shown = ", ".join(str(p) for p in hidden[:3]) + (" ..." if len(hidden) > 3 else "")
                summary.notes.append(f"skipped {len(hidden)} hidden file(s) in {path} (name or folder starting "
                                     f"with '.'): {shown}; name one as an INPUT to segment it anyway")
            named = [(file, PurePath(file.relative_to(path).parent, file.stem)) for file in files]
        elif path.is_file():  # named by the user: segmented whatever its name
            named = [(path, PurePath(path.stem))]
        else:
            summary.skipped.append(f"{path}: not found")
            continue
        for file, stem in named:
            key = _identity(file)
            if key in first:  # segmenting it again would only write a numbered copy of the same outputs
                repeats[path, first[key]] = repeats.get((path, first[key]), 0) + 1
                continue
            first[key] = path
            (videos if file.suffix.lower() in VIDEO_EXTS else images).append((file, stem))
    summary.notes += [_given_twice(path, earlier, count) for (path, earlier), count in repeats.items()]
    return images, videos


def _identity(file: Path) -> object:
    """What makes two spellings (a/../x.png, a link, X.png on macOS) the same file."""
    try:
        stat = file.stat()
    except OSError:
        return file.resolve()
    return (stat.st_dev, stat.st_ino) if stat.st_ino else file.resolve()


def _given_twice(path: Path, earlier: Path, count: int) -> str:
    """The note for `count` files of INPUT `path` that an earlier INPUT already gave."""
    if path.is_dir() and earlier.is_dir():
        if path == earlier:
            return f"{path} given twice: its files segmented once"
        return f"{path}: {count} of its file(s) also in {earlier}/: segmented once"
    if path.is_dir() or earlier.is_dir():  # one file, also found in a folder
        file, folder = (earlier, path) if path.is_dir() else (path, earlier)
        return f"{file} given twice (also in {folder}/): segmented once"
    also = "" if path == earlier else f" (also as {earlier})"
    return f"{path} given twice{also}: segmented once"


def _search(folder: Path, out: Path | None) -> tuple[list[Path], int, list[Path]]:
    """Images and videos under `folder`, sorted, how many earlier outputs were left out, and the hidden files left out.

    None from `out`. Hidden: a name or a folder below `folder` starting with '.', as `bisenet data lists` skips them.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
    # Only when `out` is the folder or below it: an input folder inside --out (e.g. --out .) is still read.
    if out is not None and out.is_relative_to(folder.resolve()):
        files = [p for p in files if not p.resolve().is_relative_to(out)]
    # macOS leaves an AppleDouble ._x.jpg beside each x.jpg on some drives: no image, though named like one.
    is_hidden = [any(part.startswith(".") for part in p.relative_to(folder).parts) for p in files]
    hidden = [p for p, dot in zip(files, is_hidden) if dot]
    files = [p for p, dot in zip(files, is_hidden) if not dot]
    earlier = _earlier_outputs(files)
    return [p for p in files if p not in earlier], len(earlier), hidden


def _earlier_outputs(files: list[Path]) -> set[Path]:
    """The files predict wrote on an earlier run: a STEM_label/_color/_overlay.png trio side by side, STEM_overlay.mp4."""
    present = set(files)
    earlier = set()
    for path in files:
        if path.name.endswith(VIDEO_OUTPUT):
            earlier.add(path)
        elif path.name.endswith(IMAGE_OUTPUTS[0]):
            # All three, not one suffix: a photo or dataset label that merely ends in _label.png is still read.
            stem = path.name[:-len(IMAGE_OUTPUTS[0])]
            trio = {path.with_name(stem + suffix) for suffix in IMAGE_OUTPUTS}
            if trio <= present:
                earlier |= trio
    return earlier


def _empty_folder(folder: Path, out: Path | None, earlier: int = 0, hidden: list[Path] | None = None) -> str:
    """Why a folder search found nothing to segment."""
    if earlier:
        return (f"{folder}: its {earlier} image(s) and video(s) are outputs of an earlier predict run; "
                "name one as an INPUT to segment it anyway")
    if hidden:
        return (f"{folder}: its only images and videos are hidden (name or folder starting with '.', such as "
                f"{hidden[0]}); name one as an INPUT to segment it anyway")
    if out is not None and _search(folder, None) != ([], 0, []):  # it holds some, all inside --out
        return f"{folder}: all its images and videos lie inside the output folder {out}; choose an --out outside it"
    return f"{folder}: folder holds no images or videos ({', '.join(sorted(IMAGE_EXTS))})"
