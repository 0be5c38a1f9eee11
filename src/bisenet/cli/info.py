"""`bisenet info`: parameters and GFLOPs of a model at an input size."""

from __future__ import annotations

import argparse
import json

from bisenet.config import ARCHS, parse_size
from bisenet.errors import BisenetError
from bisenet.info import model_info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=ARCHS, default="bisenetv2")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--size", default="512x1024", help="input HxW (default 512x1024)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from bisenet.models.layers import check_size

    if args.num_classes < 1:
        raise BisenetError(f"--num-classes {args.num_classes}: must be at least 1")
    size = parse_size(args.size, "--size")
    check_size(*size)
    stats = model_info(args.arch, args.num_classes, size)
    if args.json:
        print(json.dumps(stats))
        return 0
    print(f"{stats['arch']}  {stats['num_classes']} classes  input {stats['size']}")
    print(f"  parameters (inference):      {stats['params_inference']:>12,}")
    print(f"  parameters (training, +aux): {stats['params_training']:>12,}")
    print(f"  GFLOPs (2 per multiply-add): {stats['gflops']:>12.1f}")
    return 0
