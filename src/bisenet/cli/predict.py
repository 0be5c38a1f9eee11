"""`bisenet predict`: colour masks, overlays and label PNGs for images, folders and videos."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from bisenet.config import EVAL_MODES
from bisenet.errors import BisenetError

if TYPE_CHECKING:
    from bisenet.evaluation.inference import Protocol


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The predict command's flags."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders (searched recursively) or videos")
    parser.add_argument("--weights", required=True, help="published state_dict, our checkpoint, or .safetensors")
    parser.add_argument("--config", help="YAML config for class names, palette and mean/std (default: the checkpoint's); "
                        "its model.arch and classes must match the weights")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (never read back when searching INPUT folders)")
    parser.add_argument("--overlay", type=float, default=0.5, metavar="ALPHA", help="mask opacity on the photo (default 0.5)")
    parser.add_argument("--mode", choices=EVAL_MODES, default="ss", help="inference protocol (default ss)")
    parser.add_argument("--scale", type=float, metavar="S",
                        help="ss/ssc: resize inputs by this first; outputs keep the input size (default eval.scale, 1.0)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="add horizontally flipped inputs (default: the config's eval.flip; unset: on for msf/mscf)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--batch-size", type=int, default=4, help="same-size images per forward pass (at least 1, default 4)")
    parser.add_argument("--backend", default="eager",
                        help="inference backend: eager amp fold_bn compile compile_graphs (CUDA) onnxruntime openvino int8 int8_compile int8_openvino")
    parser.add_argument("--calibration", metavar="DIR",
                        help="int8 backends: folder of calibration images, not a single file (default: the INPUT images, "
                             "up to 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Segment the inputs and print what was written; exit 1 when any input was skipped (the others still written)."""
    from bisenet.cli.evaluate import unused_calibration
    from bisenet.predict import EvalScaleWarning, FlipWarning, Segmenter, flip_note, scale_note
    from bisenet.predict_files import check_alpha, predict_paths

    check_alpha(args.overlay)  # before the weights load
    calibration = unused_calibration(args.calibration, args.backend)
    if calibration:  # before the weights load; a file or an empty folder names a folder that holds images
        from bisenet.deploy.images import list_images

        try:
            list_images(calibration, limit=1)
        except BisenetError as exc:
            raise BisenetError(f"--calibration: {exc}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvalScaleWarning)  # said below, worded with the flags
        warnings.simplefilter("ignore", FlipWarning)
        segmenter = Segmenter.from_checkpoint(
            args.weights, device=args.device, config=args.config, mode=args.mode, backend=args.backend,
            batch_size=args.batch_size, scale=args.scale, flip=args.flip,
            calibration=calibration or _input_images(args.inputs, args.out, args.backend))
    print(f"{segmenter.num_classes} classes; names, palette and mean/std from {segmenter.info.source}; "
          f"{_protocol_text(segmenter.protocol)} on {segmenter.device}, {segmenter.backend} backend")
    note = scale_note(segmenter, flags=True) if args.config is None and args.scale is None else None
    if note:
        print(f"note: {note}", file=sys.stderr)
    note = flip_note(segmenter.info, segmenter.protocol.mode, args.flip, flags=True)
    if note:
        print(f"note: {note}", file=sys.stderr)
    summary = predict_paths(segmenter, args.inputs, args.out, alpha=args.overlay, progress=not args.quiet)
    written = (f"wrote {summary.images} image(s) x 3 PNGs and {summary.videos} video(s) to {args.out}"
               if summary.images or summary.videos else "wrote nothing")
    print(written + (f"; skipped {len(summary.skipped)}" if summary.skipped else ""))
    if not summary.skipped:
        return 0
    # Exit 1 so that scripts see the missing outputs; the good inputs' outputs are written all the same.
    total = summary.images + summary.videos + len(summary.skipped)
    print(f"{len(summary.skipped)} of {total} skipped (images, videos or missing paths)")
    return 1


def _protocol_text(protocol: Protocol) -> str:
    """The protocol as eval prints it, with the single-scale modes' scale said even when it is 1."""
    text = protocol.describe()
    if protocol.mode in ("ss", "ssc") and protocol.scales == (1.0,):
        text = text.replace(protocol.mode, f"{protocol.mode} scale 1", 1)
    return text


def _input_images(inputs: list[str], out: str, backend: str) -> list[Path] | None:
    """The images predict will segment (folders searched as it searches them): int8's default calibration."""
    from bisenet.deploy.backends import CALIBRATED
    from bisenet.predict_files import PredictSummary, expand_inputs

    if backend not in CALIBRATED:
        return None
    images, _ = expand_inputs(inputs, PredictSummary(), out)
    return images or None
