"""Where eval writes (--save-pred PNGs, --json and its plots), checked against what it reads before any work."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bisenet.data.dataset import dataset_inputs
from bisenet.errors import BisenetError, Inputs, first_clash



def prediction_names(dataset: Any) -> list[Path]:
    """Per image, its --save-pred name without .png: its folder below the common folder of the images, then its stem.

    Mirrored as `predict` mirrors an input folder, so that a/img/x.png and b/img/x.png cannot overwrite each other;
    flat when all images share one folder. Two images that still meet (x.png, x.jpg) are refused.
    """
    samples = getattr(dataset, "samples", None)
    if not samples:  # not a SegmentationDataset: by its `names`, else by index
        names = getattr(dataset, "names", None) or [str(i) for i in range(len(dataset))]
        return [Path(name) for name in names]
    images = [Path(os.path.abspath(image)) for image, _ in samples]  # abspath: a relative root with absolute list paths
    common = Path(os.path.commonpath([str(image.parent) for image in images]))
    names, owners = [], {}
    for image, (given, _) in zip(images, samples):
        name = image.parent.relative_to(common) / image.stem
        owner = owners.setdefault(name.as_posix().casefold(), (given, name))  # case-folded: X.png is x.png on macOS
        if Path(os.path.abspath(owner[0])) != image:
            raise BisenetError(f"--save-pred: images {owner[0]} and {given} would both be saved as {owner[1]}.png; "
                               "rename one of them (predictions are named after the image's folder and stem)")
        names.append(name)
    return names


def first_data_folder(outputs: Sequence[Path], inputs: Inputs) -> tuple[Path, str, Path] | None:
    """The first (output, kind, input) where `output` would land in the folder of that image or label; None if none."""
    folders: dict[str, tuple[str, Path]] = {}
    for kind, path in inputs:
        if path is not None and kind in ("image", "label"):
            path = Path(path).expanduser()
            folders.setdefault(os.path.abspath(path.parent), (kind, path))
    parents: dict[str, Path] = {}
    for output in outputs:
        parents.setdefault(os.path.abspath(Path(output).expanduser().parent), output)
    for parent, output in parents.items():
        hit = folders.get(parent)
        if hit is not None:
            return output, *hit
    # Another spelling of an existing folder (a link, ../, a case-insensitive disk): compare the folders themselves.
    stats = {_folder_id(parent): output for parent, output in parents.items()}
    stats.pop(None, None)
    if stats:
        for folder, hit in folders.items():
            output = stats.get(_folder_id(folder))
            if output is not None:
                return output, *hit
    return None


def _folder_id(folder: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(folder)
    except OSError:  # not made yet: a fresh folder, which no input lies in
        return None
    return stat.st_dev, stat.st_ino


def prediction_paths(dataset: Any, out_dir: str | os.PathLike) -> list[Path]:
    """Per image, its --save-pred file; a one-line error when one would overwrite an image or label of the list,
    or land in a folder that holds them (where `predict` and `data lists` would take it for data)."""
    out_dir = Path(out_dir)
    names = prediction_names(dataset)
    paths = [out_dir / f"{name}.png" for name in names]
    inputs = dataset_inputs(dataset)
    clash = first_clash(paths, inputs)
    where = f" of {dataset.list_file}" if getattr(dataset, "list_file", None) is not None else ""
    if clash is not None:
        output, kind, source = clash
        raise BisenetError(f"--save-pred {out_dir}: prediction {output} would overwrite the {kind} {source}{where}; "
                           f"pass a folder that holds none of the list's images and labels, e.g. --save-pred "
                           f"{_free_folder(out_dir, names, inputs)}")
    mixed = first_data_folder(paths, inputs)
    if mixed is not None:
        output, kind, source = mixed
        raise BisenetError(f"--save-pred {out_dir}: prediction {output} would land in {output.parent}, beside the "
                           f"{kind} {source}{where}, where `predict` and `data lists` would take predictions for data; "
                           f"pass a folder of their own, e.g. --save-pred {_free_folder(out_dir, names, inputs)}")
    return paths


def _free_folder(out_dir: Path, names: Sequence[Path], inputs: list[tuple[str, Path]]) -> Path:
    """A folder beside `out_dir` (DIR_pred, DIR_pred2, ...) that prediction_paths accepts: the fix the error names."""
    other = Path(os.path.abspath(out_dir))
    for k in range(1, 100):
        suffix = str(k) if k > 1 else ""
        # out_dir "/" has no name to extend: a folder below it instead
        folder = other.with_name(f"{other.name}_pred{suffix}") if other.name else other / f"predictions{suffix}"
        paths = [folder / f"{name}.png" for name in names]
        if first_clash(paths, inputs) is None and first_data_folder(paths, inputs) is None:
            return folder
    return folder


def check_report_inputs(json_path: str | os.PathLike, inputs: Inputs, all_inputs: bool = True) -> None:
    """A one-line error when the --json file or one of its plots would overwrite an input (list, weights, image...).

    With all_inputs (the whole list is known), any existing file that is not an earlier report is refused too.
    """
    from bisenet.evaluation.report import check_replaceable, report_paths

    paths = report_paths(json_path)
    clash = first_clash(paths, inputs)
    if clash is None:
        if all_inputs:  # not an input, but maybe a run's config.yaml or train.log
            check_replaceable(json_path)
        return
    output, kind, source = clash
    which = "it" if output == paths[0] else f"its plot {output}"
    other = paths[0].with_name("metrics.json" if paths[0].name != "metrics.json" else "eval_metrics.json")
    raise BisenetError(f"--json {json_path}: {which} would overwrite the {kind} {source}; pass a new file, "
                       f"e.g. --json {other}")
