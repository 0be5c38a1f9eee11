"""`bisenet data check`: read every pair of a list in parallel and report each problem."""

from __future__ import annotations

import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from bisenet.data.catalog import (
    COCOSTUFF_UNUSED_IDS,
    DatasetInfo,
    build_lut,
    invalid_counts,
)
from bisenet.data.dataset import uses_train_ids
from bisenet.data.decode import (
    EXIF_TURNS,
    FileProblem,
    exif_orientation,
    is_jpeg,
    label_value_fix,
    pair_problem,
    read_image,
    read_label,
    size_mismatch,
)
from bisenet.data.lists import ListEntry, PairList, plural, root_hint

if TYPE_CHECKING:
    from bisenet.config import Config


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
    dataset: DatasetInfo | None = None  # the named dataset whose raw ids the labels were read as
    oriented: list[tuple[Path, int]] = field(default_factory=list)  # (image, EXIF orientation 2-8)
    test_split: bool = False  # every label path lies in a test/ folder

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
    problems, image, label, orientation = [], None, None, 1
    for what, reader in (("image", read_image), ("label", read_label)):
        try:
            array = reader(entry.image if what == "image" else entry.label)
        except FileProblem as exc:
            problems.append(f"{where}: {pair_problem(exc, entry, what)}")
            continue
        if what == "image":
            image = array
            orientation = exif_orientation(entry.image)  # a regular file, read already: the header parse cannot hang
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
    return problems, stats, orientation


def check_pairs(pairs: PairList, num_classes: int, ignore_index: int = 255,
                label_map: dict[int, int] | None = None, workers: int = 4,
                dataset: DatasetInfo | None = None) -> CheckReport:
    """Read every pair (threads: OpenCV decoding releases the GIL) and collect problems.

    `dataset` (catalog.preset_labels): the named dataset whose raw label ids every label must hold.
    """
    report = CheckReport(pairs=len(pairs.entries), problems=list(pairs.problems), label_map=label_map is not None,
                         dataset=dataset)
    report.test_split = bool(pairs.entries) and all("/test/" in entry.label.as_posix() for entry in pairs.entries)
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
        for entry, (problems, stats, orientation) in zip(entries, pool.map(work, entries)):  # map keeps list order
            report.problems.extend(problems)
            if orientation != 1:
                report.oriented.append((entry.image, orientation))
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
    if not report.problems and _all_ignored(report, num_classes) and not blank_test_note(report, num_classes):
        # Each value passes alone, but labels that are all ignore train on nothing (loss 0) and score n/a.
        left_out = report.unmapped_pixels  # pixels per raw value that the map leaves out
        held = sorted(np.flatnonzero(left_out).tolist(), key=lambda v: -left_out[v])[:6]  # the commonest
        says = f" (they hold {', '.join(map(str, held))}, which it leaves out)" if held else ""
        if dataset is not None:  # the preset's own map: the labels are not that dataset's ids
            held_text = f" (they hold {', '.join(map(str, held))}, which {dataset.name} maps to ignore)" if held else ""
            fix = f"wrong --dataset / data.dataset ({dataset.name}), or labels in another encoding?{held_text}"
        elif label_map is not None:
            fix = f"data.label_map's keys must be the values stored in the label files{says}"
        else:
            fix = "wrong --dataset / data.dataset, or labels in another encoding? (`bisenet data show CFG` draws them)"
        report.problems.append(f"{pairs.path}: every pixel of the {plural(len(entries), 'label')} read maps to the "
                               f"ignore index {ignore_index}, so there is nothing to learn; {fix}")
    return report


def _all_ignored(report: CheckReport, num_classes: int) -> bool:
    return bool(report.class_pixels.sum()) and not report.class_pixels[:num_classes].sum()


def check_split(pairs: PairList, cfg: Config, dataset: DatasetInfo | None) -> list[str]:
    """Problems of a config's pairs read as training reads them; the label notes `data check` prints go to stderr.

    Training reads a sample of each split through this (validate_split), so the notes reach `bisenet train` too.
    """
    num_classes, ignore_index = cfg.num_classes, cfg.data.ignore_index
    report = check_pairs(pairs, num_classes, ignore_index, cfg.data.label_map, workers=max(1, cfg.train.workers),
                         dataset=dataset)
    if report.problems:
        return report.problems
    if _all_ignored(report, num_classes):  # Cityscapes test labels (check_pairs refuses any other all-ignore list)
        return [f"{pairs.path}: {blank_test_note(report, num_classes).removeprefix('note: ')}"]
    from bisenet.engine.distributed import is_main_process

    custom = cfg.data.label_map is not None and dataset is None
    notes = label_notes(report, num_classes, ignore_index, "data.label_map" if custom else None)
    if notes and is_main_process():
        read = f"{pairs.path} ({plural(len(pairs.entries), 'label')} read)"
        for note in notes:
            print(f"note: {read}: {note.removeprefix('note: ')}", file=sys.stderr, flush=True)
    return []


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
    notes = label_notes(report, num_classes, ignore_index, map_name)
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
# Ignored share above which the label encoding is likely not the one assumed. Real datasets label most pixels
# (Cityscapes ~9% ignored, CamVid ~4%, ADE20K and COCO-Stuff ~10%), so a named dataset's labels past half
# ignored are read with the wrong map (CamVid as Cityscapes: 89%); custom data may be sparsely labelled on purpose.
MOSTLY_IGNORED = 0.9
MOSTLY_IGNORED_PRESET = 0.5
ABSENT_SAMPLE = 20  # labels of a named dataset over which most of its classes never occurring means another dataset
# Presets with more classes than this skip the absent-classes test. Street-scene sets (CamVid 11, Cityscapes 19,
# Dubai 5) show most of their classes in any 20 labels; ADE20K (150) and COCO-Stuff (171) are long-tailed, ~8-10
# classes an image, so a correct subset of 20-40 labels leaves most of them absent. A class-scaled sample
# (2 * num_classes labels) would instead need 38 Cityscapes labels before the test applies, not 20.
ABSENT_MAX_CLASSES = 40


def label_notes(report: CheckReport, num_classes: int, ignore_index: int, map_name: str | None = None) -> list[str]:
    """The notes on what the labels hold (ignore share, absent classes, encoding, EXIF), as data check and train print them."""
    notes = [ignore_note(report, num_classes, ignore_index), unmapped_note(report, ignore_index, map_name)]
    if not any(notes):  # those two already say which values went to ignore, and why
        notes.append(blank_test_note(report, num_classes) or mostly_ignored_note(report, ignore_index, num_classes))
    notes += [train_ids_note(report), orientation_note(report)]
    return [note for note in notes if note]


def _absent(report: CheckReport, num_classes: int) -> list[int]:
    return [c for c in range(num_classes) if report.class_pixels[c] == 0]


def mostly_ignored_note(report: CheckReport, ignore_index: int, num_classes: int | None = None) -> str:
    """A note when most pixels end up ignored, or most of a named dataset's classes never occur: the encoding is off."""
    counts = report.class_pixels
    share = counts[ignore_index] / max(counts.sum(), 1)
    named = report.dataset is not None
    # Absent classes say little in a few labels (one street scene lacks trains): counted over ABSENT_SAMPLE or more.
    # Nor in presets of over ABSENT_MAX_CLASSES classes, most of which a correct subset lacks.
    absent = _absent(report, num_classes) if named and num_classes and num_classes <= ABSENT_MAX_CLASSES and \
        report.pairs >= ABSENT_SAMPLE else []
    fix = ("wrong --dataset / data.dataset, or labels in another encoding? `bisenet data show CFG` draws what "
           "the network gets")
    if share > (MOSTLY_IGNORED_PRESET if named else MOSTLY_IGNORED):
        missing = f" and {len(absent)} of {num_classes} {report.dataset.name} classes never occur" \
            if named and len(absent) > num_classes / 2 else ""
        return (f"note: {percent(share)}% of pixels are the ignore index {ignore_index}{missing}, so little is left "
                f"to learn: {fix}")
    if absent and len(absent) > num_classes / 2:
        return (f"note: {len(absent)} of {num_classes} {report.dataset.name} classes never occur in "
                f"{plural(report.pairs, 'label')}: {fix}")
    return ""


def blank_test_note(report: CheckReport, num_classes: int) -> str:
    """A note for Cityscapes' test split, whose labels are blank (all ignore) by design: no wrong --dataset there."""
    counts = report.class_pixels
    if report.dataset is None or report.dataset.name != "cityscapes" or not report.test_split or \
            not counts.sum() or counts[:num_classes].sum():
        return ""
    return ("note: every pixel of these Cityscapes test labels is ignore: the test split's labels are blank (its "
            "ground truth is not public), so the list is fit for prediction (`bisenet eval --save-pred`, "
            "`bisenet predict`) only, not for training or scoring; score on the val split")


def train_ids_note(report: CheckReport) -> str:
    """A note when COCO-Stuff labels hold ids its raw files never use: they look like train ids already."""
    if report.dataset is None or report.dataset.name != "cocostuff":
        return ""
    unused = [v for v in COCOSTUFF_UNUSED_IDS if report.unmapped_pixels[v] > 0]
    if not unused:
        return ""
    return (f"note: labels hold {'value' if len(unused) == 1 else 'values'} {', '.join(map(str, unused))}, which "
            "COCO-Stuff's raw label files never use (unused ids), so they go to ignore: the labels look like train "
            "ids 0-170 already; name them *_labelTrainIds.png (read as train ids, the raw-id map skipped) or use "
            "data.dataset custom with data.num_classes 171")


def orientation_note(report: CheckReport) -> str:
    """A note for images with an EXIF orientation tag: OpenCV turns them on reading, labels are read as stored."""
    if not report.oriented:
        return ""
    (image, tag), more = report.oriented[0], len(report.oriented) - 1
    others = f" (and {plural(more, 'more image')})" if more else ""
    return (f"note: image {image} has the EXIF orientation tag {tag} ({EXIF_TURNS[tag]}){others}, which is applied "
            "on reading while labels are read as stored, so each label must match the displayed (turned) picture; "
            "if the labels were drawn on the stored pixels, strip the tag (e.g. `exiftool -Orientation= "
            f"-overwrite_original {image}`)")


def ignore_note(report: CheckReport, num_classes: int, ignore_index: int) -> str:
    """A hint when, without a label map, a class never occurs while many pixels hold the ignore index.

    0/255 binary masks are the usual case: 255 is the ignore index, so class 1 is silently never learnt.
    Labels holding only 0 and the ignore index get the hint at any share (a small foreground is common).
    """
    counts = report.class_pixels
    share = counts[ignore_index] / max(counts.sum(), 1)
    absent = _absent(report, num_classes)
    binary = counts[ignore_index] > 0 and set(np.flatnonzero(counts).tolist()) == {0, ignore_index}
    if report.label_map or not absent or (share < IGNORED_SHARE_NOTE and not binary):
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
