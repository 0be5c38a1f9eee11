"""SIGTERM stops a command as Ctrl-C does: cleanups run, one line says so, exit 143 (130 for Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
FRAMES = 2000  # so that even a many-core machine is mid-video when the signal comes


def _start(*argv: str) -> subprocess.Popen:
    # SIGINT back to default: a shell's background job inherits it ignored, and then Ctrl-C never arrives.
    return subprocess.Popen([sys.executable, "-m", "bisenet", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(ready, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll `ready()` until true; fail with the command's output if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{what} never happened (rc {proc.returncode}): {out}{err}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """FRAMES frames of the example photos at 160x120: minutes of CPU predict, far longer than the test waits."""
    path = tmp_path_factory.mktemp("video") / "long.mp4"
    frames = [cv2.resize(cv2.imread(str(p)), (160, 120)) for p in sorted((EXAMPLE / "val" / "images").iterdir())[:6]]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 120))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(FRAMES):
        writer.write(frames[i % len(frames)])
    writer.release()
    return path


@pytest.mark.parametrize("signum, code, said", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_stopped_video_predict_leaves_a_playable_partial_video_and_says_so(weights, long_video, tmp_path, signum,
                                                                             code, said) -> None:
    out = tmp_path / "o"
    target = out / "long_overlay.mp4"
    proc = _start("predict", "--weights", str(weights), str(long_video), "--out", str(out), "--device", "cpu", "--quiet")
    _wait_for(target.exists, proc, f"{target} being opened")
    time.sleep(1.0)  # a few frames in
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert lines[-1] == f"bisenet predict: {said}" and "Traceback" not in err, err
    assert lines[-2].startswith(f"{target}: stopped after ") and lines[-2].endswith(f" of {FRAMES} frames (playable)"), err
    said_frames = int(lines[-2].split("stopped after ")[1].split()[0])
    capture = cv2.VideoCapture(str(target))  # before the fix: 44 bytes, "moov atom not found"
    assert capture.isOpened()
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert 0 < frames == said_frames < FRAMES


def test_sigterm_during_export_leaves_no_temporary_file(weights, tmp_path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    source = folder / "v2.pth"
    source.write_bytes(Path(weights).read_bytes())
    proc = _start("export", "--weights", str(source), "--out", str(folder / "k.onnx"), "--dynamic")

    def writing() -> bool:  # the export's temporary file beside the target, with the graph in it
        return any(p != source and p.stat().st_size > 0 for p in folder.iterdir())

    _wait_for(writing, proc, "the ONNX graph being written")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "bisenet export: terminated", err
    assert sorted(os.listdir(folder)) == ["v2.pth"]  # before the fix: a hidden 13 MB .k.onnx.XXXX.tmp
