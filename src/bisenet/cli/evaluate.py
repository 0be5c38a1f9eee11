"""`bisenet eval`: score weights on a split (ss, ssc, msf, mscf), or score saved prediction PNGs."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from bisenet.config import EVAL_MODES, parse_size
from bisenet.errors import BisenetError

if TYPE_CHECKING:
    from collections.abc import Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The eval command's flags."""
    parser.add_argument("config", nargs="?", help="YAML config (optional when the checkpoint stores one, or with --pred-dir)")
    parser.add_argument("--weights", help="published state_dict, our checkpoint, or .safetensors")
    parser.add_argument("--mode", choices=EVAL_MODES, help="ss whole image, ssc sliding crops, msf multi-scale + flip, mscf both")
    parser.add_argument("--split", choices=["train", "val", "test"],  # None: not given (refused with --list)
                        help="the config's list to score (default val; not with --list)")
    parser.add_argument("--data-root", help="override data.root")
    parser.add_argument("--list", help="list file of image,label pairs instead of the split's: a bare name is looked "
                        "for under the data root, then the cwd; ./NAME or ../NAME is that file")
    parser.add_argument("--scale", type=float, help="ss/ssc: resize inputs by this first (default eval.scale, 1.0)")
    parser.add_argument("--scales", nargs="+", help="msf/mscf scales, e.g. 0.5 0.75 1.0 (or 0.5,0.75,1.0)")
    parser.add_argument("--crop", help="sliding window HxW for ssc/mscf (multiples of 32)")
    parser.add_argument("--stride", help="sliding stride HxW (default 2/3 of the crop)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="add horizontally flipped inputs (default: on for msf/mscf)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (same-size images are batched)")
    parser.add_argument("--workers", type=int, help="data-loading processes (--pred-dir: decoding threads)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default auto)")
    parser.add_argument("--backend", help="inference backend: eager (default) amp fold_bn compile compile_graphs (CUDA) "
                        "onnxruntime openvino int8 int8_compile int8_openvino")
    parser.add_argument("--calibration", metavar="DIR",
                        help="int8 backends: folder of calibration images (default: images of the train split)")
    parser.add_argument("--calibration-images", type=int, metavar="N", help="int8 calibration images (default 8)")
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON, with confusion and IoU plots beside it")
    parser.add_argument("--save-pred", metavar="DIR", help="write one train-id PNG per image, STEM.png in the image's "
                        "folder below the list images' common folder (flat when they share one)")
    parser.add_argument("--cityscapes-ids", action="store_true",
                        help="with --save-pred: write label ids instead of train ids (for the official server)")
    group = parser.add_argument_group("scoring saved predictions (no model)")
    group.add_argument("--pred-dir", help="folder of train-id PNGs named after each image's stem: STEM.png "
                       "(eval --save-pred) or STEM_label.png (predict)")
    group.add_argument("--root", help="dataset root the list's paths are relative to")
    group.add_argument("--dataset", help="dataset preset for the label map and class names (e.g. cityscapes)")
    group.add_argument("--num-classes", type=int, help="class count when no dataset preset applies")


def _scales(values: list[str] | None) -> list[float] | None:
    """--scales as numbers: separate arguments, or space- or comma-separated in one ("0.5 1", "0.5,1")."""
    import math
    import re

    if not values:
        return None
    given = " ".join(values)
    items = re.split(r"\s*,\s*|\s+", given.strip())
    scales = []
    for item in items:
        try:
            scales.append(float(item))
        except ValueError:
            problem = ("has an empty item (a comma doubled or at an end)" if not item else f"{item!r} is not a number")
            raise BisenetError(f"--scales {given}: {problem}; pass numbers such as 0.5 0.75 1.0 (or 0.5,0.75,1.0)") from None
        if not math.isfinite(scales[-1]):
            raise BisenetError(f"--scales {given}: {item} is not a finite number; pass numbers such as 0.5 0.75 1.0")
    return scales


def run(args: argparse.Namespace) -> int:
    """Evaluate (or score saved predictions) as the flags say; print the table; the exit code."""
    from bisenet.evaluation import format_table
    from bisenet.evaluation.outputs import check_report_inputs
    from bisenet.evaluation.report import check_report_path, report_files

    if args.json:  # before the run, so a bad path does not cost its results
        check_report_path(args.json, "--json")
        # The list, images and labels are checked (and the report written) by evaluate / score_predictions.
        check_report_inputs(args.json, [("config", args.config), ("weights", args.weights)], all_inputs=False)
    result = _score_saved(args) if args.pred_dir else _evaluate_weights(args)
    if os.environ.get("RANK", "0") != "0":  # under torchrun every rank holds the same all-reduced result
        return 0
    print(format_table(result))
    if args.json:
        print("wrote " + ", ".join(str(p) for p in report_files(result, args.json)))
    return 0


def _evaluate_weights(args: argparse.Namespace) -> dict:
    from bisenet.evaluation import evaluate

    if not args.weights:
        raise BisenetError("pass --weights W to evaluate a model, or --pred-dir DIR to score saved predictions")
    refuse_scoring_flags(args)
    refuse_split_with_list(args)
    scales = _scales(args.scales)  # before the weights load
    backend = args.backend or "eager"
    calibration = unused_calibration(args.calibration, backend)
    if args.calibration_images is not None:
        unused_calibration(f"--calibration-images {args.calibration_images}", backend, flag="")
    # No CONFIG: evaluate reads the one the checkpoint stores (or says which to pass).
    return evaluate(
        args.config, args.weights, mode=args.mode, split=args.split or "val", data_root=args.data_root, list_file=args.list,
        scales=scales, scale=args.scale, crop=parse_size(args.crop, "--crop") if args.crop else None,
        stride=parse_size(args.stride, "--stride") if args.stride else None, flip=args.flip,
        batch_size=args.batch_size, device=args.device or "auto", backend=backend, save_pred_dir=args.save_pred,
        cityscapes_ids=args.cityscapes_ids, workers=args.workers, calibration=calibration,
        calibration_images=8 if args.calibration_images is None else args.calibration_images, json_path=args.json,
    )


# Per --pred-dir flag: what to do instead when a model runs (the config names the dataset then).
SCORING_FLAG_FIXES = {
    "root": "pass --data-root DIR instead of --root",
    "dataset": "pass a config of that dataset instead of --dataset (its data.dataset applies)",
    "num_classes": "drop --num-classes (the class count is the config's and the weights')",
}


def refuse_scoring_flags(args: argparse.Namespace) -> None:
    """Refuse --root, --dataset and --num-classes with --weights, each with what to pass instead."""
    given = [name for name in SCORING_FLAG_FIXES if getattr(args, name) is not None]
    if not given:
        return
    flags = [f"--{name.replace('_', '-')}" for name in given]
    named = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
    verb = "is" if len(flags) == 1 else "are"
    fixes = "; ".join(SCORING_FLAG_FIXES[name] for name in given)
    raise BisenetError(f"{named} {verb} only for --pred-dir scoring; with --weights, {fixes}")


def refuse_split_with_list(args: argparse.Namespace) -> None:
    """Refuse --split where it picks nothing: with --list (which names the list itself), or --pred-dir without CONFIG."""
    if args.split is None:
        return
    if args.list is not None:
        raise BisenetError(f"--split {args.split} picks the config's data.{args.split}_list, but --list {args.list} "
                           "names the list to score: drop one of them")
    if args.pred_dir and not args.config:
        raise BisenetError(f"--split {args.split} picks a CONFIG's data.{args.split}_list; without a CONFIG, "
                           "name the list with --list")


def unused_calibration(calibration: str | None, backend: str | Sequence[str], flag: str = "--calibration ") -> str | None:
    """`calibration`, or None with a one-line warning when no backend given calibrates (eval, predict and bench)."""
    import sys

    from bisenet.deploy.backends import CALIBRATED

    backends = [backend] if isinstance(backend, str) else list(backend)
    if calibration and not any(name in CALIBRATED for name in backends):
        print(f"warning: {flag}{calibration} is ignored: only the int8 backends ({', '.join(CALIBRATED)}) "
              f"calibrate, not --backend {' '.join(backends)}", file=sys.stderr)
        return None
    return calibration


def _model_flags(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(flag as given, value) of each flag that only running a model reads; None (or False) when not given."""
    flip = {True: "--flip", False: "--no-flip"}.get(args.flip)
    return [("--mode", args.mode), ("--scale", args.scale), ("--scales", args.scales), ("--crop", args.crop),
            ("--stride", args.stride), (flip, flip), ("--batch-size", args.batch_size), ("--device", args.device),
            ("--backend", args.backend), ("--calibration", args.calibration),
            ("--calibration-images", args.calibration_images), ("--save-pred", args.save_pred),
            ("--cityscapes-ids", args.cityscapes_ids)]


def _score_saved(args: argparse.Namespace) -> dict:
    from bisenet.evaluation import score_predictions

    if args.weights:
        raise BisenetError("--pred-dir scores saved PNGs without a model: drop --weights (or drop --pred-dir)")
    refuse_split_with_list(args)
    given = [flag for flag, value in _model_flags(args) if value is not None and value is not False]  # not 0
    if given:
        raise BisenetError(f"--pred-dir scores saved PNGs without a model: drop {' '.join(given)} (used only when "
                           "running one), or drop --pred-dir and pass --weights")
    root = args.root or args.data_root or None  # None with a CONFIG: its data.root
    if args.config:  # its data section gives the classes, root and (by --split) the list
        return score_predictions(args.pred_dir, root, args.list, config=args.config, split=args.split or "val",
                                 workers=args.workers, json_path=args.json)
    if not root or not args.list:
        raise BisenetError("--pred-dir needs --root R and --list L (or a CONFIG that names them)")
    if not args.dataset and not args.num_classes:
        raise BisenetError("--pred-dir needs --dataset NAME (e.g. cityscapes) or --num-classes N")
    return score_predictions(args.pred_dir, root, args.list, num_classes=args.num_classes, dataset=args.dataset,
                             workers=args.workers, json_path=args.json)
