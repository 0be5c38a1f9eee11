"""`bisenet <command>`: a thin layer that parses flags and calls library functions."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import ModuleType

from bisenet.cli import bench, data, evaluate, export, info, predict, quickstart, train
from bisenet.errors import BisenetError, Terminated

# Each command module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "quickstart": (quickstart, "train, evaluate and predict on the bundled example in minutes"),
    "train": (train, "train a model from a YAML config"),
    "eval": (evaluate, "evaluate weights (ss, ssc, msf, mscf) or score saved predictions"),
    "predict": (predict, "segment images, folders or videos into coloured masks"),
    "export": (export, "export weights to ONNX (checked with onnxruntime) or to eval-only .safetensors"),
    "bench": (bench, "time inference or training steps for each backend"),
    "data": (data, "convert labels, write list files, check a dataset, show samples as the network gets them"),
    "info": (info, "parameters and GFLOPs of a model, or what a --weights file holds"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    import torch

    from bisenet import __version__

    parser = argparse.ArgumentParser(prog="bisenet", description="BiSeNetV1/V2 real-time semantic segmentation.")
    parser.add_argument("--version", action="version", version=f"bisenet {__version__} (PyTorch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _raise_terminated(signum: int, frame: object) -> None:
    # Later SIGTERMs would cut the cleanups short; SIGKILL still ends the process.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated` (a KeyboardInterrupt): the cleanups of Ctrl-C run."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
        # Only over the default: a handler set by whoever embeds us stays. Commands that own SIGTERM
        # (train's checkpoint on stop) install theirs over this one for their loop and restore it after.
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        previous = None
    try:
        yield
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the command; user errors print one line and return 2, SIGTERM 143 and Ctrl-C 130."""
    args = build_parser().parse_args(argv)
    # Messages name the command as typed, with a tool of its own (`bisenet data show: error: ...`).
    name = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
    try:
        with sigterm_as_interrupt():
            return COMMANDS[args.command][0].run(args) or 0
    except BisenetError as exc:
        print(f"bisenet {name}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"bisenet {name}: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports a process the signal killed
    except KeyboardInterrupt:
        print(f"bisenet {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bisenet data check ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a killed writer


if __name__ == "__main__":
    sys.exit(main())
