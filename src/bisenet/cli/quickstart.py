"""`bisenet quickstart`: the five-minute first run on the bundled example."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The quickstart command's flags."""
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    parser.add_argument("--max-iters", type=int, help="training iterations (default: as many as fit --minutes, at most 450)")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-time budget for the whole job (default 5)")


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and predict on the bundled example; the exit code."""
    from bisenet.quickstart import quickstart

    quickstart(args.out, max_iters=args.max_iters, minutes=args.minutes)
    return 0
