"""Rebuild the README's quickstart figures from a `bisenet quickstart --out DIR` run.

    python docs/make_quickstart_figures.py DIR

Writes docs/dubai_quickstart_examples.png (photo | ground truth | prediction for two val
images, 200 px high), and copies the run's curves and per-class IoU chart next to it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from bisenet.data.catalog import DATASETS
from bisenet.predict import colorize

DOCS = Path(__file__).resolve().parent
EXAMPLE = DOCS.parent / "examples" / "dubai"
HEIGHT = 200


def row(image: Path, label: Path, prediction: Path, palette: list) -> np.ndarray:
    """One photo | ground truth | prediction strip, BGR, HEIGHT pixels high."""
    photo = cv2.imread(str(image))
    truth = cv2.cvtColor(colorize(cv2.imread(str(label), cv2.IMREAD_UNCHANGED), palette), cv2.COLOR_RGB2BGR)
    predicted = cv2.imread(str(prediction))
    width = round(photo.shape[1] * HEIGHT / photo.shape[0])
    tiles = [cv2.resize(t, (width, HEIGHT), interpolation=cv2.INTER_NEAREST if t is not photo else cv2.INTER_AREA)
             for t in (photo, truth, predicted)]
    return np.hstack(tiles)


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    run = Path(sys.argv[1])
    needed = [run / "predictions", run / "train" / "curves.png", run / "metrics_iou.png"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        sys.exit(f"{run}: not a finished `bisenet quickstart --out {run}` run (missing {', '.join(missing)})")
    palette = DATASETS["dubai"].palette
    pairs = [line.split(",") for line in (EXAMPLE / "val.txt").read_text().split()][:2]
    rows = []
    for image, label in pairs:
        prediction = run / "predictions" / f"{Path(image).stem}_color.png"
        rows.append(row(EXAMPLE / image, EXAMPLE / label, prediction, palette))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(DOCS / "dubai_quickstart_examples.png"), np.vstack(rows)[:-4])
    copies = {run / "train" / "curves.png": DOCS / "dubai_quickstart_curves.png",
              run / "metrics_iou.png": DOCS / "dubai_quickstart_iou.png"}
    for source, target in copies.items():
        shutil.copy(source, target)
    print(f"wrote {DOCS / 'dubai_quickstart_examples.png'}, " + ", ".join(str(t) for t in copies.values()))


if __name__ == "__main__":
    main()
