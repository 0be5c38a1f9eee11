"""`bisenet data`'s command line: every flag explained, errors named after the tool that raised them."""

from __future__ import annotations

import argparse

from bisenet.cli import build_parser, main


def _tools() -> dict[str, argparse.ArgumentParser]:
    """The parsers of `bisenet data convert|lists|check|show`."""
    data = build_parser()._subparsers._group_actions[0].choices["data"]
    return dict(data._subparsers._group_actions[0].choices)


def test_every_data_flag_has_help():
    tools = _tools()
    assert sorted(tools) == ["check", "convert", "lists", "show"]
    missing = [f"data {name} {action.option_strings[0]}" for name, parser in tools.items()
               for action in parser._actions if action.option_strings and not action.help]
    assert missing == []


def test_errors_name_the_data_tool(tmp_path, capsys):
    assert main(["data", "check", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "bisenet data check: error: --list LIST is required (or --config CFG [--split val])\n"
    assert main(["data", "convert", "cityscapes", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("bisenet data convert: error: no *_gtFine_labelIds.png files under")
