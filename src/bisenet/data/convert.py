"""`bisenet data convert cityscapes`: write *_gtFine_labelTrainIds.png beside each labelIds file."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bisenet.data.catalog import CITYSCAPES, build_lut
from bisenet.data.decode import FileProblem, read_label
from bisenet.errors import DataError

LABEL_IDS = "_gtFine_labelIds.png"
TRAIN_IDS = "_gtFine_labelTrainIds.png"


@dataclass
class ConvertReport:
    """What a conversion did: files written, files already up to date, one line per failure."""

    converted: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def train_ids_path(label_ids: Path) -> Path:
    """`X_gtFine_labelIds.png` -> `X_gtFine_labelTrainIds.png` in the same folder."""
    return label_ids.with_name(label_ids.name[: -len(LABEL_IDS)] + TRAIN_IDS)


def _up_to_date(source: Path, target: Path) -> bool:
    try:
        return target.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def write_png_atomic(path: Path, array: np.ndarray) -> None:
    """Encode a PNG and move it into place with os.replace: readers never see half a file."""
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def convert_cityscapes(root: str | Path, workers: int = 4, force: bool = False) -> ConvertReport:
    """Map every gtFine labelIds PNG under `root` to train ids (parallel, idempotent, atomic)."""
    root = Path(root)
    base = root / "gtFine" if (root / "gtFine").is_dir() else root
    sources = sorted(base.rglob(f"*{LABEL_IDS}"))
    if not sources:
        raise DataError(
            f"no *{LABEL_IDS} files under {base}; ROOT must be the Cityscapes folder that holds gtFine/ "
            "(download gtFine_trainvaltest.zip and unzip it there)"
        )
    lut = build_lut(CITYSCAPES.label_map, CITYSCAPES.ignore_index)
    report = ConvertReport()

    def work(source: Path) -> str:
        target = train_ids_path(source)
        if not force and _up_to_date(source, target):
            return "skipped"
        try:
            write_png_atomic(target, cv2.LUT(read_label(source), lut))
        except FileProblem as exc:
            # The reader's own fix says "re-copy"; for Cityscapes the source is the official zip.
            return f"{str(exc).split('; ')[0]}; re-extract it from gtFine_trainvaltest.zip"
        except OSError as exc:
            return f"cannot write {target} ({exc.strerror or exc}); run on a writable copy of the dataset"
        return "converted"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # OpenCV codecs release the GIL
        for outcome in pool.map(work, sources):
            if outcome == "converted":
                report.converted += 1
            elif outcome == "skipped":
                report.skipped += 1
            else:
                report.failures.append(outcome)
    return report
