"""`bisenet data check`: read every pair of a list in parallel and report each problem."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bisenet.data.catalog import DatasetInfo, build_lut, invalid_counts
from bisenet.data.dataset import uses_train_ids
from bisenet.data.decode import FileProblem, is_jpeg, label_value_fix, pair_problem, read_image, read_label, size_mismatch
from bisenet.data.lists import ListEntry, PairList, plural, root_hint


@dataclass
class CheckReport:
    """Problems (one line each, in list order) and statistics of the readable pairs."""

    pairs: int = 0
    problems: list[str] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)  # (W, H) -> count
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256))  # mapped value -> pixels
    rgb_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rgb_sqsum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    image_pixels: int = 0
    label_map: bool = False  # labels went through a label map (a dataset's or data.label_map)
    jpeg_labels: list[Path] = field(default_factory=list)  # lossy: in-range noise passes the value test
    unmapped_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256))  # raw value not in the map -> pixels
    repeats: list[tuple[int, int]] = field(default_factory=list)  # (line, earlier line of the same pair)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def mean_std(self) -> tuple[list[float], list[float]]:
        """RGB mean and std on [0, 1] pixels over every image read."""
        n = max(1, self.image_pixels)
        mean = self.rgb_sum / n
        std = np.sqrt(np.maximum(self.rgb_sqsum / n - mean**2, 0))
        return [round(float(v), 4) for v in mean / 255], [round(float(v), 4) for v in std / 255]


def _check_one(entry: ListEntry, where: str, lut: np.ndarray | None, num_classes: int, ignore_index: int,
               dataset: DatasetInfo | None, label_map: dict[int, int] | None):
    """Problems of one pair plus its statistics (None when unreadable)."""
    problems, image, label = [], None, None
    for what, reader in (("image", read_image), ("label", read_label)):
        try:
            array = reader(entry.image if what == "image" else entry.label)
        except FileProblem as exc:
            problems.append(f"{where}: {pair_problem(exc, entry, what)}")
            continue
        if what == "image":
            image = array
        else:
            label = array
    if image is not None and label is not None and image.shape[:2] != label.shape[:2]:
        problems.append(f"{where}: {size_mismatch(entry.image, image.shape, entry.label, label.shape)}")
    train_ids = uses_train_ids(entry.label, label_map)
    label_lut = None if train_ids else lut
    hist = None
    if label is not None:
        hist = cv2.calcHist([label], [0], None, [256], [0, 256]).ravel()
        fix = label_value_fix(entry.label)
        bad = invalid_counts(hist, label_lut, num_classes, ignore_index, fix=fix, dataset=None if train_ids else dataset)
        if bad:
            problems.append(f"{where}: label {entry.label} {bad}")
    stats = None
    if image is not None and hist is not None and not problems:
        mean, std = cv2.meanStdDev(image)  # BGR
        n = image.shape[0] * image.shape[1]
        mean, std = mean.ravel()[::-1], std.ravel()[::-1]
        mapped = np.arange(256) if label_lut is None else label_lut.astype(np.int64)
        classes = np.bincount(mapped, weights=hist, minlength=256)
        raw = hist if label_lut is not None else None  # train-id files skip the map: nothing of theirs is unmapped
        stats = ((image.shape[1], image.shape[0]), n, mean * n, (std**2 + mean**2) * n, classes, raw)
    return problems, stats


def check_pairs(pairs: PairList, num_classes: int, ignore_index: int = 255,
                label_map: dict[int, int] | None = None, workers: int = 4,
                dataset: DatasetInfo | None = None) -> CheckReport:
    """Read every pair (threads: OpenCV decoding releases the GIL) and collect problems.

    `dataset` (catalog.preset_labels): the named dataset whose raw label ids every label must hold.
    """
    report = CheckReport(pairs=len(pairs.entries), problems=list(pairs.problems), label_map=label_map is not None)
    lut = build_lut(label_map, ignore_index)
    unmapped = np.ones(256, bool)  # values the map sends to ignore only because it leaves them out
    unmapped[[raw for raw in (label_map or {}) if 0 <= raw < 256] + [ignore_index]] = False  # ignore stays ignore

    # A list relative to another folder: one line saying which, not two "not found" lines per pair.
    hint, explained = root_hint(pairs)
    if hint:
        report.problems.append(hint)
    entries = [entry for entry in pairs.entries if entry.line not in explained]

    def work(entry: ListEntry):
        return _check_one(entry, pairs.where(entry.line), lut, num_classes, ignore_index, dataset, label_map)

    first_line: dict[tuple[Path, Path], int] = {}
    for entry in pairs.entries:
        first = first_line.setdefault((entry.image.resolve(), entry.label.resolve()), entry.line)
        if first != entry.line:
            report.repeats.append((entry.line, first))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for entry, (problems, stats) in zip(entries, pool.map(work, entries)):  # map keeps list order
            report.problems.extend(problems)
            if is_jpeg(entry.label):
                report.jpeg_labels.append(entry.label)
            if stats is not None:
                size, n, total, sqtotal, classes, raw = stats
                if raw is not None:
                    report.unmapped_pixels += raw * unmapped
                report.sizes[size] += 1
                report.image_pixels += n
                report.rgb_sum += total
                report.rgb_sqsum += sqtotal
                report.class_pixels += classes
    return report


def format_summary(report: CheckReport, num_classes: int, ignore_index: int,
                   class_names: list[str] | None = None, map_name: str | None = None) -> list[str]:
    """Summary lines: count, sizes, class shares, mean/std; `map_name` (e.g. 'data.label_map') notes unmapped values."""
    lines = [f"{plural(report.pairs, 'pair')}, no problems"]
    sizes = ", ".join(f"{w}x{h} ({count})" for (w, h), count in report.sizes.most_common(5))
    more = f", ... {plural(len(report.sizes) - 5, 'more size')}" if len(report.sizes) > 5 else ""
    lines.append(f"sizes (WxH): {sizes}{more}")
    counts = report.class_pixels
    total = counts.sum()
    labelled = counts[:num_classes].sum()
    lines.append(f"pixels: {int(total):,} ({percent(counts[ignore_index] / max(total, 1), 2)}% ignored)")
    lines.append("class share of labelled pixels:")
    for c in range(num_classes):
        name = class_names[c] if class_names and c < len(class_names) else ""
        share = percent(counts[c] / max(labelled, 1), 2)
        absent = "  (absent)" if counts[c] == 0 else ""
        lines.append(f"  {c:>3} {name:<20} {share:>6}%{absent}")
    mean, std = report.mean_std()
    lines.append(f"RGB mean/std on [0,1] pixels, for the config:  mean: {mean}  std: {std}")
    notes = [ignore_note(report, num_classes, ignore_index), unmapped_note(report, ignore_index, map_name)]
    if not any(notes):  # those two already say which values went to ignore, and why
        notes.append(mostly_ignored_note(report, ignore_index))
    if report.repeats:  # a note: oversampling by repetition is a choice some make on purpose
        (line, first), more = report.repeats[0], len(report.repeats) - 1
        others = f" and {plural(more, 'more line')} repeat earlier ones" if more else ""
        notes.append(f"note: line {line} repeats line {first} (the same image and label){others}: a repeated pair "
                     "counts twice in training and evaluation; remove repeats unless you mean to oversample")
    if report.jpeg_labels:  # a note, not a problem: without PNG originals there is nothing better to train on
        count = len(report.jpeg_labels)
        notes.append(f"note: {count} label{'s are JPEGs' if count > 1 else ' is a JPEG'} (e.g. {report.jpeg_labels[0]}), "
                     "whose lossy compression changes class ids along edges; save labels as PNG from the original masks")
    return lines + [note for note in notes if note]


def percent(share: float, digits: int = 1) -> str:
    """`share` (0-1) as a percentage that never rounds a part up to 100% nor down to 0% ("99.99" and "100.0" for one share read as a contradiction)."""
    text = f"{100 * share:.{digits}f}"
    if 0 < share < 1 and float(text) in (0.0, 100.0):
        step = 10.0 ** -digits
        return f"<{step:.{digits}f}" if float(text) == 0 else f">{100 - step:.{digits}f}"
    return text


IGNORED_SHARE_NOTE = 0.05  # ignored share of pixels above which an absent class hints at a class saved as 255
MOSTLY_IGNORED = 0.9  # ignored share above which the label encoding is likely not the one assumed


def mostly_ignored_note(report: CheckReport, ignore_index: int) -> str:
    """A note when nearly every pixel ends up ignored: real datasets label most pixels, so the encoding is off."""
    counts = report.class_pixels
    share = counts[ignore_index] / max(counts.sum(), 1)
    if share <= MOSTLY_IGNORED:
        return ""
    return (f"note: {percent(share)}% of pixels are the ignore index {ignore_index}, so little is left to learn: "
            "wrong --dataset / data.dataset, or labels in another encoding? `bisenet data show CFG` draws what "
            "the network gets")


def ignore_note(report: CheckReport, num_classes: int, ignore_index: int) -> str:
    """A hint when, without a label map, a class never occurs while many pixels hold the ignore index.

    0/255 binary masks are the usual case: 255 is the ignore index, so class 1 is silently never learnt.
    """
    counts = report.class_pixels
    share = counts[ignore_index] / max(counts.sum(), 1)
    absent = [c for c in range(num_classes) if counts[c] == 0]
    if report.label_map or not absent or share < IGNORED_SHARE_NOTE:
        return ""
    example = {c: c for c in range(num_classes) if counts[c] > 0}
    example[ignore_index] = absent[0]
    items = [f"{k}: {v}" for k, v in example.items()]
    shown = ", ".join(items if len(items) <= 6 else items[:2] + ["..."] + items[-1:])
    classes = f"class {absent[0]} never occurs" if len(absent) == 1 else \
        f"classes {', '.join(map(str, absent[:5]))}{' ...' if len(absent) > 5 else ''} never occur"
    return (f"note: {classes} and {percent(share)}% of pixels are the ignore index {ignore_index}: if "
            f"{ignore_index} marks a class in your masks (e.g. 0/255 binary masks), map it, e.g. data.label_map: "
            f"{{{shown}}} (values left out of the map are ignored); then check with `bisenet data check --config CFG`")


def unmapped_note(report: CheckReport, ignore_index: int, map_name: str | None) -> str:
    """A note naming the label values a user's label map leaves out (so they become ignore), with their share."""
    values = np.flatnonzero(report.unmapped_pixels)
    if map_name is None or values.size == 0:
        return ""
    shown = ", ".join(str(v) for v in values[:10]) + (" ..." if values.size > 10 else "")
    share = percent(report.unmapped_pixels.sum() / max(report.class_pixels.sum(), 1))
    one = values.size == 1
    what = f"value {shown} ({share}% of pixels) is" if one else f"values {shown} ({share}% of pixels) are"
    return (f"note: label {what} not in {map_name} and become{'s' if one else ''} the ignore index {ignore_index}; "
            f"add {'it' if one else 'them'} to {map_name} if {'it is a class' if one else 'they are classes'}")
