"""The command line's own behaviour: version, and what an unknown command prints."""

from __future__ import annotations

import pytest
import torch

import bisenet
from bisenet.cli import COMMANDS, main


def test_version_names_package_and_torch(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bisenet {bisenet.__version__} (PyTorch {torch.__version__})"


def test_unknown_command_lists_the_valid_ones(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trian'" in err and all(name in err for name in COMMANDS)
