"""Score saved prediction PNGs against the ground truth, without a model.

Each (prediction, ground truth) pair of raw 8-bit values is counted into one 256 x 256
histogram with a single bincount; the label map is applied to that histogram once at the
end instead of to every pixel. PNGs are decoded in a thread pool (OpenCV releases the GIL).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from bisenet.config import Config
from bisenet.data.catalog import DATASETS, DatasetInfo, build_lut, invalid_counts, preset_labels
from bisenet.data.lists import ListEntry, PairList
from bisenet.errors import BisenetError, DataError, check_paths, nearest
from bisenet.evaluation.metrics import compute_metrics, confusion_fields


def read_mask(path: str | Path, what: str = "label") -> np.ndarray:
    """Decode a single-channel 8-bit mask, raising a one-line DataError naming the file."""
    from bisenet.data.decode import FileProblem, read_label

    try:
        return read_label(path)
    except FileProblem as exc:
        raise DataError(str(exc).replace("label ", f"{what} ", 1)) from None


def _pair_histogram(pred_path: Path, gt_path: Path, num_classes: int, lut: np.ndarray | None,
                    ignore_index: int, preset: DatasetInfo | None = None,
                    label_map: dict[int, int] | None = None) -> tuple[bool, np.ndarray]:
    """(label holds train ids, 256 x 256 joint histogram of raw GT and prediction values) of one pair."""
    from bisenet.data.dataset import uses_train_ids

    pred = read_mask(pred_path, "prediction")
    gt = read_mask(gt_path, "ground truth")
    if pred.shape != gt.shape:
        raise DataError(
            f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth {gt_path} is "
            f"{gt.shape[1]}x{gt.shape[0]} (WxH); save predictions at the label's original size"
        )
    if gt.size < 1 << 24:  # calcHist counts in float32: exact below 2**24 pixels, and 4x faster
        hist = cv2.calcHist([gt, pred], [0, 1], None, [256, 256], [0, 256, 0, 256]).astype(np.int64).ravel()
    else:
        hist = np.bincount(((gt.astype(np.uint16) << 8) | pred).ravel(), minlength=65536)
    train_ids = uses_train_ids(gt_path, label_map)  # as `data check` and training: *_labelTrainIds.png skip the label map
    _check_values(hist, pred_path, gt_path, num_classes, None if train_ids else lut, ignore_index,
                  None if train_ids else preset)
    return train_ids, hist


def _check_values(hist: np.ndarray, pred_path: Path, gt_path: Path, num_classes: int, gt_lut: np.ndarray | None,
                  ignore_index: int, preset: DatasetInfo | None = None) -> None:
    """Refuse labels that `data check` rejects and predictions that are neither a class id nor the ignore index."""
    joint = hist.reshape(256, 256)  # rows: raw ground truth, columns: raw prediction
    bad = invalid_counts(joint.sum(axis=1), gt_lut, num_classes, ignore_index, fix=(
        f"fix --num-classes / --dataset (or the config's data.num_classes / data.label_map) "
        f"or remap those values to {ignore_index}"), dataset=preset)
    if bad:
        raise DataError(f"ground truth {gt_path} {bad}")
    fix = (f"predictions must be train ids 0..{num_classes - 1}: pass the class count they were made with "
           "(--num-classes N or --dataset NAME) or save them again")
    counts = joint.sum(axis=0)
    stray = [v for v in np.nonzero(counts)[0] if v >= num_classes and v != ignore_index]
    if gt_lut is not None and stray and all(gt_lut[v] < num_classes for v in stray):  # raw ids of the label map
        fix = ("these look like raw label ids (e.g. Cityscapes labelIds, as `eval --cityscapes-ids` writes for the "
               "benchmark server), not train ids: score train-id predictions (--save-pred without --cityscapes-ids)")
    bad = invalid_counts(counts, None, num_classes, ignore_index, fix=fix)
    if bad:
        raise DataError(f"prediction {pred_path} {bad}")


def fold_histogram(hist: np.ndarray, num_classes: int, gt_lut: np.ndarray | None, ignore_index: int = 255) -> torch.Tensor:
    """Turn a 256 x 256 (raw GT, raw prediction) histogram into the C x (C+1) confusion matrix."""
    hist = hist.reshape(256, 256).astype(np.int64)
    gt_ids = gt_lut.astype(np.int64) if gt_lut is not None else np.arange(256)
    gt_onehot = np.zeros((num_classes, 256), dtype=np.int64)
    valid = (gt_ids < num_classes) & (gt_ids != ignore_index)
    gt_onehot[gt_ids[valid], np.nonzero(valid)[0]] = 1
    pred_ids = np.minimum(np.arange(256), num_classes)  # values that are not a class -> last column
    pred_onehot = np.zeros((256, num_classes + 1), dtype=np.int64)
    pred_onehot[np.arange(256), pred_ids] = 1
    return torch.from_numpy(gt_onehot @ hist @ pred_onehot)


def _resolve_classes(num_classes: int | None, dataset: str | None) -> tuple[int, list[str], dict | None]:
    """(class count, class names, label map) of a dataset preset, or of `num_classes` (dataset None or custom)."""
    if dataset == "custom":  # as data.dataset: no preset, the class count says it all
        if num_classes is None:
            raise BisenetError("--dataset custom has no preset class count: also pass --num-classes N "
                               "(num_classes= in Python)")
        dataset = None
    if dataset is not None:
        if dataset not in DATASETS:
            raise BisenetError(f"unknown dataset {dataset!r}{nearest(dataset, DATASETS)}; valid: "
                               f"{', '.join(DATASETS)}, custom (with --num-classes)")
        info = DATASETS[dataset]
        if num_classes is not None and num_classes != info.num_classes:
            raise BisenetError(f"--num-classes {num_classes} contradicts dataset {dataset} ({info.num_classes} classes)")
        return info.num_classes, list(info.class_names), info.label_map
    if num_classes is None or num_classes < 1:
        raise BisenetError("pass the dataset name (--dataset cityscapes; dataset= in Python) or the class count "
                           "(--num-classes N; num_classes= in Python)")
    return num_classes, [str(i) for i in range(num_classes)], None


def score_predictions(
    pred_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    list_file: str | os.PathLike | None = None,
    num_classes: int | None = None,
    dataset: str | None = None,
    ignore_index: int | None = None,
    label_map: dict[int, int] | None = None,
    class_names: list[str] | None = None,
    workers: int | None = None,
    json_path: str | os.PathLike | None = None,
    config: Config | str | os.PathLike | dict | None = None,
    split: str = "val",
) -> dict:
    """Score train-id PNGs in `pred_dir` (STEM.png or predict's STEM_label.png per image) against the list's labels.

    Without `config`, pass `root`, `list_file` and the classes (`dataset` or `num_classes`; ignore_index
    defaults to 255). With `config` (a Config or YAML path), its data section gives the classes, label map,
    ignore index and root (unless `root` is given), and its data.<split>_list the list (unless `list_file` is).
    A `list_file` written from the cwd (./NAME, ../NAME) is that file; a bare name is looked for under the
    root, then the cwd, with a note on stderr when both exist (as evaluate's list_file).
    With `json_path`, also write the report there (as evaluate does), refused before scoring if it would overwrite
    the list, an image, a label or a prediction.
    """
    from bisenet.data.lists import given_list_path, list_note, read_list, resolve_list_path

    start = time.perf_counter()
    if not isinstance(pred_dir, (str, os.PathLike)):
        raise BisenetError(f"pred_dir={pred_dir!r}: expected the folder of saved predictions (a str or pathlib.Path)")
    check_paths(root=root, list_file=list_file, json_path=json_path)
    if workers is not None and workers < 0:
        raise BisenetError(f"--workers {workers}: must be 0 or more, 0 for the default (workers= in Python)")
    given_list = list_file is not None
    if config is not None:
        root, list_file, num_classes, ignore_index, label_map, class_names = _config_inputs(
            config, split, root, list_file, num_classes=num_classes, dataset=dataset, ignore_index=ignore_index,
            label_map=label_map, class_names=class_names)
    elif root is None or list_file is None:
        raise BisenetError("score_predictions needs root= and list_file= (or config=, whose data.root and "
                           "data.<split>_list name them)")
    ignore_index = 255 if ignore_index is None else ignore_index
    num_classes, names, preset_map = _resolve_classes(num_classes, dataset)
    names = list(class_names) if class_names is not None else names
    label_map = label_map if label_map is not None else preset_map
    pred_dir, root = Path(pred_dir), Path(root)
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder {pred_dir} not found; write one with `bisenet eval ... --save-pred {pred_dir}`")
    if given_list:  # a list the caller names: ./NAME is the cwd's file, as for evaluate's list_file
        note = list_note(list_file, root)
        if note is not None:
            print(note, file=sys.stderr)  # stderr: stdout holds the metrics table
        list_path = given_list_path(list_file, root)
    else:  # the config's list: under the root, then the cwd, as training reads it
        list_path = resolve_list_path(list_file, root)
    pairs = read_list(list_path, root)
    if pairs.problems:
        raise DataError(f"{pairs.problems[0]}" + (f" (and {len(pairs.problems) - 1} more)" if len(pairs.problems) > 1 else ""))
    predictions = _prediction_paths(pred_dir, [_relative(e.image, root) for e in pairs.entries],
                                    [(e.image, e.label) for e in pairs.entries])
    # A miss is named where eval --save-pred would have written it (never the photo itself, which may be STEM.png).
    missing = [str(pred_dir / f"{e.image.stem}.png") for p, e in zip(predictions, pairs.entries) if p is None]
    if missing:
        head = f"{len(missing)} of {len(predictions)} predictions missing, first {missing[0]}"
        own = _own_data(pred_dir, Path(missing[0]), pairs, all_missing=len(missing) == len(predictions))
        if own:  # the list's own files are never its predictions: "missing" alone reads as if the file were not there
            raise DataError(f"{head}: {own}; pass the folder predict/eval --save-pred wrote")
        raise DataError(
            f"{head}; predictions must be train-id "
            "PNGs named after each image's stem: STEM.png (eval --save-pred) or STEM_label.png (predict), both looked for "
            "in the folder and its subfolders"
        )
    jobs = [(prediction, e.label) for prediction, e in zip(predictions, pairs.entries)]
    _refuse_shared_predictions(pairs, root, predictions)
    if json_path is not None:  # before scoring, so a bad path does not cost the results
        from bisenet.evaluation.outputs import check_report_inputs
        from bisenet.evaluation.report import check_report_path

        check_report_path(json_path, "json_path")
        check_report_inputs(json_path, [("list file", pairs.path), *[("image", e.image) for e in pairs.entries],
                                        *[("label", e.label) for e in pairs.entries],
                                        *[("prediction", path) for path in predictions]])
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    lut = build_lut(label_map, ignore_index)
    preset = preset_labels(dataset, label_map) if dataset else None  # its raw ids, as data check holds labels to
    hists = {False: np.zeros(65536, dtype=np.int64), True: np.zeros(65536, dtype=np.int64)}  # by "holds train ids"
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for train_ids, part in pool.map(lambda job: _pair_histogram(*job, num_classes, lut, ignore_index, preset, label_map), jobs):
            hists[train_ids] += part
    confusion = sum(fold_histogram(hist, num_classes, None if train_ids else lut, ignore_index)
                    for train_ids, hist in hists.items())
    result = compute_metrics(confusion, names)
    if result["pixels"] == 0:  # every metric would be n/a: a wrong label encoding, not a score
        raise DataError(f"{pairs.path}: its labels hold only the ignore index (data.ignore_index {ignore_index}), so "
                        "no pixel was scored; check the label encoding (raw ids vs train ids), the label map "
                        "(data.label_map, --dataset) and that the list is of this dataset (an unlabelled split, "
                        "such as Cityscapes test, has nothing to score)")
    result.update(mode="pred-dir", images=len(jobs), seconds=round(time.perf_counter() - start, 3))
    result.update(confusion_fields(confusion))
    if json_path is not None:
        from bisenet.evaluation.report import write_report

        write_report(result, json_path)
    return result


def _config_inputs(config: Config | str | os.PathLike | dict, split: str, root: str | os.PathLike | None,
                   list_file: str | os.PathLike | None, **given: object) -> tuple:
    """(root, list file, class count, ignore index, label map, class names) that `config` gives for scoring `split`."""
    from bisenet.config import load_config
    from bisenet.data.dataset import SPLITS

    clash = [f"{name}=" for name, value in given.items() if value is not None]
    if clash:  # two sources of the classes: which one scores would be a guess
        raise BisenetError(f"config= gives the classes, label map and ignore index: drop {', '.join(clash)}")
    cfg = config if isinstance(config, Config) else load_config(config)
    d = cfg.data
    if list_file is None:
        if split not in SPLITS:
            raise BisenetError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        list_file = getattr(d, f"{split}_list")
        if not list_file:
            named = config if isinstance(config, (str, os.PathLike)) else "the config"
            raise BisenetError(f"--split {split}: {named} names no data.{split}_list; pass --list L")
    return (root if root is not None else d.root), list_file, cfg.num_classes, d.ignore_index, d.label_map, d.class_names


def _refuse_shared_predictions(pairs: PairList, root: Path, predictions: list[Path]) -> None:
    """Refuse two list lines of different images scored against one prediction file (one of them is another's)."""
    seen: dict[Path, ListEntry] = {}
    for prediction, entry in zip(predictions, pairs.entries):
        first = seen.setdefault(prediction.resolve(), entry)
        if first.image.resolve() != entry.image.resolve():  # the same image listed twice has the same prediction
            raise DataError(
                f"{pairs.where(first.line)} ({_relative(first.image, root)}) and line {entry.line} "
                f"({_relative(entry.image, root)}) would both be scored against {prediction}; predict their common "
                "folder, not the files one by one (or eval --save-pred), so that their folders are mirrored below "
                "the prediction folder")


def _own_data(pred_dir: Path, first_missing: Path, pairs: PairList, all_missing: bool) -> str | None:
    """Why `pred_dir` holds no predictions when it is the list's label or image folder, or its first miss is one
    of the list's own images or labels; None otherwise."""
    for kind, files in (("label", [e.label for e in pairs.entries]), ("image", [e.image for e in pairs.entries])):
        # Only when nothing was found: predict's STEM_label.png files beside the photos are predictions all the same.
        if all_missing and any(_same(pred_dir, (folder,)) for folder in dict.fromkeys(p.parent for p in files)):
            what = "the ground truth" if kind == "label" else "the photos"
            return f"--pred-dir {pred_dir} is the list's {kind} folder: its files are {what}, not predictions"
    for entry in pairs.entries:
        for kind, path in (("label", entry.label), ("image", entry.image)):
            if _same(first_missing, (path,)):
                return f"{first_missing} is the list's own {kind} ({pairs.where(entry.line)}), not a prediction"
    return None


def _relative(image: Path, root: Path) -> Path:
    """The image's path below the dataset root (its name alone when it lies elsewhere)."""
    try:
        return image.relative_to(root)
    except ValueError:
        return Path(image.name)


def _prediction_paths(pred_dir: Path, images: list[Path],
                      own: list[tuple[Path, Path]] | None = None) -> list[Path | None]:
    """Per image, predict's STEM_label.png or `eval --save-pred`'s STEM.png: at the image's relative folder
    below pred_dir or any tail of it (predict mirrors the input folder's subfolders), else by a name found once
    anywhere below pred_dir; None where there is none. Both kinds for one image
    are refused (which one is current is a guess); `own` (each image and label itself) never counts as one."""
    found: dict[str, list[Path]] = {}
    for path in sorted(pred_dir.rglob("*.png")):
        found.setdefault(path.name, []).append(path)
    paths = []
    for k, image in enumerate(images):
        pair = own[k] if own is not None else ()  # (image, label): never a prediction of itself
        names = (f"{image.stem}_label.png", f"{image.stem}.png")
        parts = image.parent.parts
        tails = [Path(*parts[i:]) for i in range(len(parts) + 1)]  # img/a, a, "" for list path img/a/x.png
        hits = [_first_file([pred_dir / tail / name for tail in tails], pair) for name in names]
        if hits == [None, None]:
            hits = [_found_once(pred_dir, image, name, found, pair) for name in names]
        if None not in hits:
            raise DataError(f"{pred_dir}: both {hits[0]} and {hits[1]} are predictions of {image}; remove one of "
                            "them (or score a folder that holds one kind: predict's STEM_label.png or eval "
                            "--save-pred's STEM.png)")
        paths.append(hits[0] or hits[1])
    return paths


def _first_file(candidates: list[Path], pair: tuple[Path, ...]) -> Path | None:
    """The first candidate that is a file and not the image or label itself (a STEM.png may be the photo)."""
    return next((path for path in candidates if path.is_file() and not _same(path, pair)), None)


def _found_once(pred_dir: Path, image: Path, name: str, found: dict[str, list[Path]],
                pair: tuple[Path, ...]) -> Path | None:
    """The one file of this name anywhere below pred_dir (the image and label aside); a one-line error for several."""
    hits = [path for path in found.get(name, []) if not _same(path, pair)]
    if len(hits) > 1:  # which one scores is a guess: refuse
        raise DataError(f"{pred_dir}: {name} is there {len(hits)} times ({', '.join(map(str, hits[:3]))}"
                        f"{' ...' if len(hits) > 3 else ''}) and none at {image.parent / name}; lay the "
                        "predictions out as the list's images are (predict a folder of the dataset root)")
    return hits[0] if hits else None


def _same(path: Path, others: tuple[Path, ...]) -> bool:
    for other in others:
        try:
            if os.path.samefile(path, other):
                return True
        except OSError:  # the image or label is missing: the list check names it
            pass
    return False


def train_to_raw_lut(label_map: dict[int, int], num_classes: int) -> np.ndarray:
    """Inverse label map as a 256-entry LUT: train id -> raw id (e.g. Cityscapes label ids); 0 elsewhere."""
    lut = np.zeros(256, dtype=np.uint8)
    seen = set()
    for raw, train_id in sorted(label_map.items()):
        if 0 <= train_id < num_classes and train_id not in seen and 0 <= raw < 256:
            lut[train_id] = raw
            seen.add(train_id)
    missing = sorted(set(range(num_classes)) - seen)
    if missing:
        raise BisenetError(f"the label map gives no raw id for train id(s) {missing}; cannot write raw ids")
    return lut
