"""`bisenet predict` on files: name and write each output of the inputs (predict_inputs finds them), run videos."""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import cv2
import numpy as np
from tqdm import tqdm

from bisenet.data.colour import overlay
from bisenet.errors import BisenetError, make_dir
from bisenet.predict import Segmenter
from bisenet.predict_inputs import (  # noqa: F401 (IMAGE_EXTS, VIDEO_EXTS, expand_inputs: re-exported from here)
    IMAGE_EXTS,
    IMAGE_OUTPUTS,
    VIDEO_EXTS,
    VIDEO_OUTPUT,
    Named,
    _expand,
    expand_inputs,
)


@dataclass
class PredictSummary:
    """What a `predict_paths` run wrote and what it skipped (one message each, besides `notes`)."""

    images: int = 0
    videos: int = 0
    frames: int = 0
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    earlier_outputs: int = 0  # files of input folders left out as outputs of an earlier run
    notes: list[str] = field(default_factory=list)


def _load_rgb(path: Path) -> np.ndarray | str:
    """The image as RGB uint8, or a one-line reason it cannot be read."""
    from bisenet.data.decode import FileProblem, read_image

    try:
        return cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)
    except FileProblem as exc:
        return str(exc)


def _prefetch(items: list[Named], pool: ThreadPoolExecutor,
              ahead: int) -> Iterator[tuple[Path, PurePath, np.ndarray | str]]:
    """Decode images in background threads, at most `ahead` in flight (bounded memory)."""
    queue: deque[tuple[Path, PurePath, Future]] = deque()
    for path, name in items:
        queue.append((path, name, pool.submit(_load_rgb, path)))
        if len(queue) >= ahead:
            head, head_name, job = queue.popleft()
            yield head, head_name, job.result()
    while queue:
        head, head_name, job = queue.popleft()
        yield head, head_name, job.result()


def _key(name: PurePath) -> str:
    # Case-folded, since X.png and x.png outputs overwrite each other on macOS and Windows.
    return name.as_posix().casefold()


class _Namer:
    """Output stems under --out, one per input: its own (subfolders kept), else the first free STEM_2, STEM_3 ...

    Same inputs, same names. `owners` maps each name given to the input that got it.
    """

    def __init__(self, names: Iterable[PurePath]) -> None:
        # Every input's own stem is reserved: a real x_2.png keeps x_2 even when a second x.png comes first.
        self.reserved = {_key(name) for name in names}
        self.owners: dict[str, Path] = {}

    def __call__(self, path: Path, own: PurePath) -> PurePath:
        name, count = own, 1
        while _key(name) in self.owners or (count > 1 and _key(name) in self.reserved):
            count += 1
            name = own.with_name(f"{own.name}_{count}")
        self.owners[_key(name)] = path
        return name


def _make_folder(folder: Path, created: set[Path]) -> None:
    """Create `folder` and its missing parents (a one-line error names --out), remembering the ones made."""
    if folder.is_dir():
        return
    missing = [folder]
    missing += [parent for parent in folder.parents if not parent.exists()]
    make_dir(folder, "--out")
    created.update(missing)


def _remove_empty(created: set[Path]) -> None:
    """Remove the folders this run made that stayed empty (every input skipped, or stopped before writing)."""
    for folder in sorted(created, key=lambda p: len(p.parts), reverse=True):  # children before parents
        try:
            folder.rmdir()
        except OSError:  # not empty: outputs, or files someone else put there
            pass


def _check_outputs(targets: Iterable[Path], out: Path) -> None:
    """Refuse, before anything is written, an output path taken by a folder or a mirrored subfolder taken by a file."""
    for target in targets:
        if target.is_dir():
            raise BisenetError(f"output {target} is a folder; remove it or choose another --out")
        for sub in list(target.relative_to(out).parents)[:-1]:  # the mirrored subfolders below --out
            if (out / sub).exists() and not (out / sub).is_dir():
                raise BisenetError(f"output folder {out / sub} is a file; remove it or choose another --out")


def _write(path: Path, image: np.ndarray, created: set[Path]) -> Path:
    _make_folder(path.parent, created)  # mirrored input subfolders, made only when they get an output
    if not cv2.imwrite(str(path), image):
        raise BisenetError(f"could not write {path}; check that the output folder is writable and has space")
    return path


def _write_set(outputs: list[tuple[Path, np.ndarray]], created: set[Path]) -> list[Path]:
    """Write one input's PNGs; when one fails, remove those just written (never a partial set)."""
    written: list[Path] = []
    try:
        for path, image in outputs:
            written.append(_write(path, image, created))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def check_alpha(alpha: float) -> None:
    """Refuse an overlay opacity outside [0, 1] (NaN included) in one line."""
    if not 0.0 <= alpha <= 1.0:
        raise BisenetError(f"--overlay {alpha} must lie in [0, 1] (the mask's opacity)")


def predict_paths(segmenter: Segmenter, inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                  alpha: float = 0.5, progress: bool = True) -> PredictSummary:
    """Segment images, folders and videos; write STEM_color/_overlay/_label.png per image, STEM_overlay.mp4 per video.

    Outputs of a folder's files go to the same subfolders under `out_dir` as the files under the folder.
    """
    check_alpha(alpha)
    out = Path(out_dir)
    summary = PredictSummary()
    images, videos = _expand(inputs, summary, out)
    namer = _Namer(own for _, own in images + videos)
    renamed: list[str] = []

    def name(path: Path, own: PurePath) -> PurePath:
        given = namer(path, own)
        if given != own:  # numbered names alone would not say whose outputs are whose
            renamed.append(f"{path}: written as {out / given}_* ({out / own}_* are from {namer.owners[_key(own)]})")
        return given

    # All named up front, in input order: an unreadable file keeps its name, so the others' names do not shift.
    images = [(path, name(path, own)) for path, own in images]
    videos = [(path, name(path, own)) for path, own in videos]
    # Every output path checked before the first is written: a folder in the way would stop the run midway.
    _check_outputs([out / f"{given}{suffix}" for _, given in images for suffix in IMAGE_OUTPUTS]
                   + [out / f"{given}{VIDEO_OUTPUT}" for _, given in videos], out)
    created: set[Path] = set()
    if images or videos:  # now, so that an unusable --out fails before any work; removed at the end if left empty
        _make_folder(out, created)
    for message in summary.notes:
        tqdm.write(message, file=sys.stderr)
    for message in summary.skipped:
        tqdm.write(f"skipped {message}", file=sys.stderr)
    for message in renamed:
        print(message)
    try:
        _predict_images(segmenter, images, out, alpha, summary, progress, created)
        for path, given in videos:
            _predict_video(segmenter, path, out / f"{given}{VIDEO_OUTPUT}", alpha, summary, progress, created)
    finally:
        _remove_empty(created)
    return summary


def _predict_images(segmenter: Segmenter, images: list[Named], out: Path, alpha: float, summary: PredictSummary,
                    progress: bool, created: set[Path]) -> None:
    """Segment `images` in same-size batches; write the three PNGs of each under `out` at its given name."""
    label_dtype = np.uint8 if segmenter.num_classes <= 256 else np.uint16
    with ThreadPoolExecutor(max_workers=2) as pool, ThreadPoolExecutor(max_workers=2) as writer:
        pending: deque[Future] = deque()
        bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress or not images)
        batch: list[tuple[PurePath, np.ndarray]] = []

        def collect(wait: bool) -> None:
            # In order, the finished ones only unless waiting: a failed write stops the run a batch later, not at the end.
            while pending and (wait or pending[0].done()):
                summary.written += pending.popleft().result()

        def flush() -> None:
            collect(wait=False)
            labels = segmenter.predict_batch([image for _, image in batch])
            for (name, image), label in zip(batch, labels):
                colour = segmenter.colorize(label)
                blend = overlay(image, colour, alpha)
                outputs = {"color": colour[:, :, ::-1], "overlay": blend[:, :, ::-1], "label": label.astype(label_dtype)}
                # colour images go to OpenCV as BGR
                pending.append(writer.submit(_write_set, [(out / f"{name}_{suffix}.png", np.ascontiguousarray(array))
                                                          for suffix, array in outputs.items()], created))
                summary.images += 1
            bar.update(len(batch))
            batch.clear()

        try:
            for _, name, image in _prefetch(images, pool, ahead=2 * segmenter.batch_size + 2):
                if isinstance(image, str):
                    summary.skipped.append(image)
                    tqdm.write(f"skipped {image}", file=sys.stderr)
                    bar.update(1)
                    continue
                if batch and (len(batch) >= segmenter.batch_size or batch[0][1].shape != image.shape):
                    flush()
                batch.append((name, image))
            if batch:
                flush()
        finally:
            bar.close()
        collect(wait=True)


def _predict_video(segmenter: Segmenter, path: Path, target: Path, alpha: float, summary: PredictSummary,
                   progress: bool, created: set[Path]) -> None:
    """Overlay every frame of a video and write an mp4 (mp4v) at the source frame rate."""
    # FFmpeg's own messages ("moov atom not found") would precede the one-line skip below.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        message = f"video {path} cannot be opened (corrupt, or a codec OpenCV lacks)"
        summary.skipped.append(message)
        tqdm.write(f"skipped {message}", file=sys.stderr)
        return
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) or None  # 0 or -1: not in the header
    video_writer = None
    frames = 0
    stopped = False
    bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress)
    try:
        while True:
            batch = []
            while len(batch) < segmenter.batch_size:
                ok, frame = capture.read()
                if not ok:
                    break
                batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if not batch:
                break
            for image, label in zip(batch, segmenter.predict_batch(batch)):
                if video_writer is None:
                    h, w = image.shape[:2]
                    _make_folder(target.parent, created)
                    video_writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not video_writer.isOpened():
                        raise BisenetError(f"could not open {target} for writing (mp4v codec missing?)")
                video_writer.write(np.ascontiguousarray(overlay(image, segmenter.colorize(label), alpha)[:, :, ::-1]))
                frames += 1
            bar.update(len(batch))
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the CLI
        stopped = True
        raise
    finally:
        bar.close()
        capture.release()
        if video_writer is not None:
            video_writer.release()  # writes the index (moov atom): a cut-short video still plays
        if stopped and frames:
            of = f" of {total}" if total else ""
            tqdm.write(f"{target}: stopped after {frames}{of} frames (playable)", file=sys.stderr)
        elif stopped and video_writer is not None:  # opened, nothing in it yet
            target.unlink(missing_ok=True)
    if frames == 0:
        message = f"video {path}: no frame could be decoded"
        summary.skipped.append(message)
        tqdm.write(f"skipped {message}", file=sys.stderr)
        return
    if total and frames < total:  # decoding ends quietly at the cut: the output is shorter than the video says
        message = f"{path}: decoded {frames} of the {total} frames its header declares; the file may be truncated"
        summary.notes.append(message)
        tqdm.write(message, file=sys.stderr)
    summary.videos += 1
    summary.frames += frames
    summary.written.append(target)
