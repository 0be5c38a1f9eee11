"""`bisenet info`: parameters and GFLOPs of a model at an input size, or what a weights file holds."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bisenet.config import ARCHS, parse_size
from bisenet.errors import BisenetError
from bisenet.info import model_info, weights_summary

DEFAULT_ARCH, DEFAULT_CLASSES = "bisenetv2", 19
SHOWN_NAMES = 8  # class names printed before "..." (COCO-Stuff has 171)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `bisenet info`."""
    parser.add_argument("--arch", choices=ARCHS, default=None, help=f"architecture (default {DEFAULT_ARCH})")
    parser.add_argument("--num-classes", type=int, default=None, help=f"classes (default {DEFAULT_CLASSES})")
    parser.add_argument("--weights", default=None, metavar="W",
                        help="a checkpoint, state_dict or .safetensors file: print what it holds (arch and classes from it)")
    parser.add_argument("--size", default="512x1024", help="input HxW (default 512x1024)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the model's size and cost; with --weights, first what the file records."""
    from bisenet.models.layers import check_multiple_of_32

    if args.weights is not None and (args.arch is not None or args.num_classes is not None):
        # Silently preferring one of the two would describe a model the user did not ask about.
        raise BisenetError(f"--weights {args.weights}: arch and class count come from the file; "
                           "drop --arch/--num-classes, or drop --weights to describe a fresh model")
    num_classes = DEFAULT_CLASSES if args.num_classes is None else args.num_classes
    if num_classes < 1:
        raise BisenetError(f"--num-classes {num_classes}: must be at least 1")
    size = parse_size(args.size, "--size")
    check_multiple_of_32(*size, flag="--size")
    held = weights_summary(args.weights) if args.weights is not None else {}
    stats: dict[str, Any] = {**held, **model_info(held.get("arch", args.arch or DEFAULT_ARCH),
                                                  held.get("num_classes", num_classes), size)}
    if args.json:
        print(json.dumps(stats))
        return 0
    if held:
        print(f"{held['path']}: {held['kind']}")
    print(f"{stats['arch']}  {stats['num_classes']} classes  input {stats['size']}")
    if held.get("dataset") or held.get("class_names"):
        names = held.get("class_names") or []
        shown = ", ".join(names[:SHOWN_NAMES]) + (f", ... ({len(names)})" if len(names) > SHOWN_NAMES else "")
        print(f"  config:                      dataset {held.get('dataset') or '?'}" + (f"; classes {shown}" if names else ""))
    if held:
        aux = "with aux heads" if held["aux_heads"] else "no aux heads"
        print(f"  parameters (in the file):    {held['params_file']:>12,}  ({aux})")
    print(f"  parameters (inference):      {stats['params_inference']:>12,}")
    print(f"  parameters (training, +aux): {stats['params_training']:>12,}")
    print(f"  GFLOPs (2 per multiply-add): {stats['gflops']:>12.1f}")
    return 0
