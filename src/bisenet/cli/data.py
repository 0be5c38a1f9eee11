"""`bisenet data`: not built yet."""

from __future__ import annotations

import argparse

from bisenet.errors import BisenetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise BisenetError("this command is not built yet")
