"""`bisenet quickstart`: the README's main job leaves every promised artefact (short run)."""

from __future__ import annotations

import json

import cv2

from bisenet.cli import main as cli_main
from bisenet.quickstart import EXAMPLE_ROOT


def test_quickstart_leaves_checkpoint_metrics_curves_and_predictions(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli_main(["quickstart", "--out", str(out), "--max-iters", "2"]) == 0
    printed = capsys.readouterr().out
    assert "quickstart finished in" in printed and "val mIoU" in printed
    assert (out / "train" / "last.pt").is_file()
    assert (out / "train" / "curves.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["images"] == 12
    assert set(metrics["IoU"]) == {"building", "land", "road", "vegetation", "water"}
    first = (EXAMPLE_ROOT / "val.txt").read_text().split()[0].split(",")[0]
    stem = first.rsplit("/", 1)[1].rsplit(".", 1)[0]
    photo = cv2.imread(str(EXAMPLE_ROOT / first))
    for suffix in ("color", "overlay", "label"):
        written = cv2.imread(str(out / "predictions" / f"{stem}_{suffix}.png"), cv2.IMREAD_UNCHANGED)
        assert written is not None and written.shape[:2] == photo.shape[:2], suffix
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2
