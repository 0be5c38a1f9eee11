"""The shipped CamVid weights give the README's model-zoo number with the README's command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bisenet.cli import main

REPO = Path(__file__).resolve().parents[1]
CAMVID = (REPO / ".." / "shared" / "data" / "camvid").resolve()
WEIGHTS = REPO / "weights" / "bisenetv2_camvid.safetensors"
ZOO_MIOU = 68.09  # the README's model-zoo row, in percent (the config scores at 960x720: eval.scale 2)
SAMPLE_MIOU = 68.48  # the same weights and command on every 13th val image (8 of 101), measured 2026-12-03
RUN_SLOW = os.environ.get("BISENET_SLOW_TESTS") == "1"
NEEDS_CAMVID = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID} (../shared/data/camvid)")


def evaluate(list_file: Path, out: Path) -> dict:
    """Run the README's eval command on `list_file` and return its --json result."""
    code = main(["eval", str(REPO / "configs" / "bisenetv2_camvid.yaml"), "--weights", str(WEIGHTS),
                 "--data-root", str(CAMVID), "--list", str(list_file), "--device", "cpu",
                 "--workers", "0", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


@NEEDS_CAMVID
def test_shipped_camvid_weights_keep_their_score_on_a_val_sample(tmp_path) -> None:
    # The full val set takes about 4 minutes on 2 cores; the sample guards the same path in 30 s.
    pairs = (CAMVID / "val.txt").read_text().splitlines()[::13]
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(pairs) + "\n")
    result = evaluate(sample, tmp_path / "sample.json")
    assert result["images"] == 8 and result["protocol"] == "ss scale 2"
    assert result["mIoU"] * 100 == pytest.approx(SAMPLE_MIOU, abs=0.05)


@NEEDS_CAMVID
@pytest.mark.slow
@pytest.mark.skipif(not RUN_SLOW, reason="the full CamVid val set takes minutes; set BISENET_SLOW_TESTS=1")
def test_shipped_camvid_weights_reproduce_the_model_zoo_number(tmp_path) -> None:
    result = evaluate(CAMVID / "val.txt", tmp_path / "camvid.json")
    assert result["images"] == 101 and result["mode"] == "ss" and result["protocol"] == "ss scale 2"
    assert result["mIoU"] * 100 == pytest.approx(ZOO_MIOU, abs=0.05)
