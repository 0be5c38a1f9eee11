"""Where eval writes (--save-pred PNGs, --json and its plots), checked against what it reads before any work."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bisenet.errors import BisenetError

Inputs = Iterable[tuple[str, "str | os.PathLike | None"]]


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


def first_clash(outputs: Sequence[Path], inputs: Inputs) -> tuple[Path, str, Path] | None:
    """The first (output, kind, input) where writing `output` would replace that input file; None when none would."""
    known: dict[str, tuple[str, Path]] = {}
    for kind, path in inputs:
        if path is not None:
            path = Path(path).expanduser()
            known.setdefault(os.path.abspath(path), (kind, path))
    for output in outputs:
        hit = known.get(os.path.abspath(Path(output).expanduser()))
        if hit is not None:
            return output, *hit
    # Another spelling of an existing file (a link, ../, a case-insensitive disk): compare the files themselves.
    existing = [(output, os.stat(output)) for output in outputs if os.path.isfile(output)]
    if not existing:
        return None
    files: dict[tuple[int, int], tuple[str, Path]] = {}
    for key, hit in known.items():
        try:
            stat = os.stat(key)
        except OSError:
            continue
        files.setdefault((stat.st_dev, stat.st_ino), hit)
    for output, stat in existing:
        hit = files.get((stat.st_dev, stat.st_ino))
        if hit is not None:
            return output, *hit
    return None


def dataset_inputs(dataset: Any) -> list[tuple[str, Path]]:
    """The list file, then each image and label that `dataset` reads (what no output may overwrite)."""
    samples = getattr(dataset, "samples", None) or []
    listed = getattr(dataset, "list_file", None)
    return ([("list file", Path(listed))] if listed is not None else []) + \
        [("image", Path(image)) for image, _ in samples] + [("label", Path(label)) for _, label in samples]


def prediction_paths(dataset: Any, out_dir: str | os.PathLike) -> list[Path]:
    """Per image, its --save-pred file; a one-line error when one would overwrite an image or label of the list."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.png" for name in prediction_names(dataset)]
    clash = first_clash(paths, dataset_inputs(dataset))
    if clash is not None:
        output, kind, source = clash
        where = f" of {dataset.list_file}" if getattr(dataset, "list_file", None) is not None else ""
        other = Path(os.path.abspath(out_dir))
        raise BisenetError(f"--save-pred {out_dir}: prediction {output} would overwrite the {kind} {source}{where}; "
                           f"pass a folder that holds none of the list's images and labels, e.g. --save-pred "
                           f"{other.with_name(other.name + '_pred')}")
    return paths


def check_report_inputs(json_path: str | os.PathLike, inputs: Inputs) -> None:
    """A one-line error when the --json file or one of its plots would overwrite an input (list, weights, image...)."""
    from bisenet.evaluation.report import report_paths

    paths = report_paths(json_path)
    clash = first_clash(paths, inputs)
    if clash is None:
        return
    output, kind, source = clash
    which = "it" if output == paths[0] else f"its plot {output}"
    other = paths[0].with_name("metrics.json" if paths[0].name != "metrics.json" else "eval_metrics.json")
    raise BisenetError(f"--json {json_path}: {which} would overwrite the {kind} {source}; pass a new file, "
                       f"e.g. --json {other}")
