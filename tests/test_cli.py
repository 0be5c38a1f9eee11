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


def test_output_piped_into_a_reader_that_leaves_early_ends_without_a_traceback(tmp_path) -> None:
    # `bisenet data check ... | head`: once head exits, writes fail with EPIPE.
    import subprocess
    import sys

    (tmp_path / "list.txt").write_text("".join(f"img/{i}.png,lab/{i}.png\n" for i in range(5000)))
    proc = subprocess.Popen([sys.executable, "-m", "bisenet", "data", "check", "--root", str(tmp_path), "--list",
                             str(tmp_path / "list.txt"), "--num-classes", "2", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "line 1: image" in proc.stdout.readline()
    proc.stdout.close()  # the reader leaves with most of the 10000 problem lines unread
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 141 and "Traceback" not in err, err
