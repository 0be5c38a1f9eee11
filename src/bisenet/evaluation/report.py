"""Console table, JSON file, confusion-matrix heatmap and per-class IoU bar chart."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from bisenet.errors import BisenetError, check_output_file, make_dir, write_atomic, write_text_atomic


def _pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{value * 100:6.2f}"


def format_table(result: dict) -> str:
    """Per-class IoU, then mIoU, pixel accuracy and fwIoU, as percentages."""
    ious = result["IoU"]
    width = max([len(name) for name in ious] + [10])
    lines = [f"{'class':<{width}}  IoU (%)", "-" * (width + 9)]
    lines += [f"{name:<{width}}  {_pct(value)}" for name, value in ious.items()]
    lines.append("-" * (width + 9))
    lines += [f"{key:<{width}}  {_pct(result.get(key))}" for key in ("mIoU", "pixel_acc", "fwIoU")]
    what = result.get("protocol", result.get("mode", ""))
    lines.append(f"{result.get('images', '?')} images, {what}" + (f", {result['seconds']:.1f} s" if "seconds" in result else ""))
    absent = [name for name, value in ious.items() if value is None]
    if absent:
        lines.append(f"n/a: absent from both prediction and ground truth, left out of the mean ({len(absent)})")
    return "\n".join(lines)


def report_paths(json_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The JSON path and its two plots beside it: STEM_confusion.png and STEM_iou.png."""
    path = Path(json_path)
    return path, path.with_name(f"{path.stem}_confusion.png"), path.with_name(f"{path.stem}_iou.png")


def report_files(result: dict, json_path: str | os.PathLike) -> list[Path]:
    """The files write_report writes for `result`: the JSON, the heatmap (with a confusion matrix), the bar chart."""
    path, heatmap, bars = report_paths(json_path)
    return [path, heatmap, bars] if result.get("confusion_matrix") is not None else [path, bars]


def check_report_path(json_path: str | os.PathLike, what: str = "--json") -> tuple[Path, Path, Path]:
    """The JSON, confusion and IoU plot paths; a one-line error (before any work) when one is a folder."""
    path = check_output_file(json_path, what, "metrics.json")
    plots = report_paths(path)[1:]
    for plot in plots:
        if plot.is_dir():
            raise BisenetError(f"{what} {path}: its plot {plot} is a folder; move that folder or pick another name")
    make_dir(path.parent, f"{what} {path}")
    return path, *plots


def check_replaceable(json_path: str | os.PathLike, what: str = "--json") -> None:
    """A one-line error when `json_path` holds something other than an earlier report (a run's config.yaml, a log)."""
    from bisenet.errors import check_replaceable as check

    check(json_path, what, "a metrics report", lambda old: isinstance(old, dict) and "mIoU" in old, "_metrics.json")
    for plot in report_paths(json_path)[1:]:  # a user's photo named holiday_iou.png beside holiday.json
        if plot.is_file() and plot.stat().st_size and not _is_our_plot(plot):
            raise BisenetError(f"{what} {json_path}: its plot {plot} exists and is not an earlier plot (writing would "
                               f"lose it); pass another name, e.g. {what} {Path(json_path).with_name('metrics.json')}")


def _is_our_plot(path: Path) -> bool:
    """True for a PNG that matplotlib wrote (its Software text chunk): an earlier report's plot."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and str(image.info.get("Software", "")).startswith("Matplotlib")
    except (OSError, ValueError, SyntaxError):
        return False


def write_report(result: dict, json_path: str | os.PathLike) -> list[Path]:
    """Write the JSON, plus STEM_confusion.png and STEM_iou.png next to it; return the paths."""
    path, heatmap, bars = check_report_path(json_path, "metrics file")
    # One line per confusion-matrix row instead of one line per number.
    text = re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", json.dumps(result, indent=2))
    write_text_atomic(path, text + "\n", "metrics file", "metrics.json")
    written = [path]
    names = list(result["IoU"])
    if result.get("confusion_matrix") is not None:  # as report_files lists it
        matrix = np.asarray(result["confusion_matrix"])
        if any(result.get("predicted_ignore") or ()):  # else the rows would not hold every pixel of their class
            matrix = np.column_stack([matrix, result["predicted_ignore"]])
        written.append(plot_confusion(matrix, names, heatmap))
    written.append(plot_iou(result, bars))
    return written


def _figure(width: float, height: float):
    # A bare Figure + Agg canvas: never touches pyplot's global backend (safe in notebooks).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(confusion: np.ndarray, names: list[str], path: str | os.PathLike) -> Path:
    """Row-normalised confusion matrix (each ground-truth row sums to 1) as a heatmap PNG.

    A C x (C+1) matrix draws its last column as "no class": pixels predicted as a value that is not a class.
    """
    n = len(names)
    columns = names + ["no class"] * (confusion.shape[1] - n)
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    side = min(24.0, max(5.0, 0.45 * n + 2))
    fig = _figure(side + 1.5, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of ground-truth pixels")
    if n <= 40:  # beyond that, labels would overlap
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    if n <= 25:
        for i in range(n):
            for j in range(len(columns)):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (row-normalised)")
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"), "confusion plot", "confusion.png")


def plot_iou(result: dict, path: str | os.PathLike) -> Path:
    """Horizontal bars of per-class IoU (classes absent from both sides drawn empty), with the mIoU line."""
    names = list(result["IoU"])
    values = [0.0 if v is None else v * 100 for v in result["IoU"].values()]
    fig = _figure(8, max(3.0, 0.28 * len(names) + 1.2))
    ax = fig.add_subplot()
    ax.barh(range(len(names)), values, color="#4c72b0")
    ax.set_yticks(range(len(names)), [f"{n} (n/a)" if v is None else n for n, v in result["IoU"].items()],
                  fontsize=8 if len(names) <= 40 else 4)
    ax.invert_yaxis()
    if result.get("mIoU") is not None:
        ax.axvline(result["mIoU"] * 100, color="#c44e52", linestyle="--", label=f"mIoU {result['mIoU'] * 100:.2f}")
        ax.legend(loc="lower right")
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(f"per-class IoU ({result.get('protocol', result.get('mode', ''))})")
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"), "IoU plot", "iou.png")
