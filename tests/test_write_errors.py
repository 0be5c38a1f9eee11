"""Writes that fail (a folder that takes no file, a temporary that cannot be removed) give one line, not a traceback.

Tests run as root, so permissions block nothing: /proc takes no new files (ENOENT on create), and a folder
squatting on a temporary file's name makes both the write and its cleanup fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import bisenet
from bisenet.checkpoint import atomic_save, save_inference_weights
from bisenet.cli import main
from bisenet.deploy.export import export_onnx
from bisenet.errors import BisenetError, CheckpointError, write_text_atomic

NO_FILES_HERE = Path("/proc")  # exists, is a folder, and refuses new files even to root
needs_proc = pytest.mark.skipif(not (NO_FILES_HERE / "self").exists(), reason="needs Linux /proc")


def _unwritable(name: str) -> Path:
    return NO_FILES_HERE / f"bisenet-test-{os.getpid()}-{name}"


def test_write_text_atomic_whose_cleanup_fails_still_raises_its_one_line(tmp_path) -> None:
    out = tmp_path / "rows.json"
    squatter = tmp_path / f".rows.json.{os.getpid()}.tmp"  # the temporary's name, taken by a folder
    squatter.mkdir()
    with pytest.raises(BisenetError) as info:
        write_text_atomic(out, "[]\n", "--json", "bench.json")
    assert "\n" not in str(info.value) and f"--json {out}: cannot write" in str(info.value)
    assert not out.exists() and squatter.is_dir()  # nothing half-written; the user's folder untouched


@needs_proc
def test_save_inference_weights_where_no_file_can_be_created_is_one_line() -> None:
    path = _unwritable("w.safetensors")
    with pytest.raises(CheckpointError) as info:
        save_inference_weights(bisenet.build_model("bisenetv2", 3), path, "bisenetv2")
    message = str(info.value)
    assert "\n" not in message and f"could not write {path}" in message and "choose another path" in message


@needs_proc
def test_atomic_save_where_no_file_can_be_created_is_one_line() -> None:
    path = _unwritable("last.pt")
    with pytest.raises(CheckpointError, match=f"could not write {path}: No such file or directory"):
        atomic_save({"x": torch.zeros(2)}, path)


@needs_proc
@pytest.mark.parametrize("name", ["m.onnx", "m.safetensors"])
def test_cli_export_out_where_no_file_can_be_created_is_refused_first(weights, name, capsys) -> None:
    out = _unwritable(name)
    code = main(["export", "--weights", str(weights), "--out", str(out), "--height", "64", "--width", "64"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert f"--out {out}: cannot write in /proc" in err and "choose another path" in err
    assert captured.out == ""  # refused before the metadata line or any export work


@needs_proc
def test_export_onnx_where_no_file_can_be_created_is_one_line() -> None:
    out = _unwritable("m.onnx")
    with pytest.raises(BisenetError, match=f"--out {out}: cannot write in /proc"):
        export_onnx(bisenet.build_model("bisenetv2", 3).eval(), out, 64, 64, check=False)


def test_cli_export_checks_come_before_any_output(weights, tmp_path, capsys) -> None:
    code = main(["export", "--weights", str(weights), "--out", str(tmp_path / "m.onnx"), "--opset", "99",
                 "--height", "64", "--width", "64"])
    captured = capsys.readouterr()
    assert code == 2 and "opset 99 is not supported" in captured.err
    assert captured.out == ""  # no "metadata: ..." line before the refusal
    assert list(tmp_path.iterdir()) == []


def test_cli_export_says_when_it_replaces_an_existing_out(weights, tmp_path, capsys) -> None:
    out = tmp_path / "w.safetensors"
    argv = ["export", "--weights", str(weights), "--out", str(out), "--height", "64", "--width", "64"]
    assert main(argv) == 0
    assert "replacing" not in capsys.readouterr().out
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"replacing {out}\n" in printed and f"wrote {out}" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary left behind


def test_a_refused_export_leaves_no_folders_behind(tmp_path, capsys) -> None:
    # The early --out check made the folders; a refusal for missing weights then left them.
    out = tmp_path / "new" / "deeper" / "m.safetensors"
    code = main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(out)])
    assert code == 2 and "weights file not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("")
    code = main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "afile" / "m.onnx")])
    assert code == 2 and f"cannot create its folder: {tmp_path / 'afile'} is a file" in capsys.readouterr().err
