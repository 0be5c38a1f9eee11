"""The shipped CamVid weights give the README's model-zoo number with the README's command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bisenet.cli import main

REPO = Path(__file__).resolve().parents[1]
CAMVID = (REPO / ".." / "shared" / "data" / "camvid").resolve()
WEIGHTS = REPO / "weights" / "bisenetv2_camvid.safetensors"
ZOO_MIOU = 68.09  # the README's model-zoo row, in percent (the config scores at 960x720: eval.scale 2)


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid not found at {CAMVID} (../shared/data/camvid)")
def test_shipped_camvid_weights_reproduce_the_model_zoo_number(tmp_path, capsys) -> None:
    out = tmp_path / "camvid.json"
    code = main(["eval", str(REPO / "configs" / "bisenetv2_camvid.yaml"), "--weights", str(WEIGHTS),
                 "--data-root", str(CAMVID), "--list", str(CAMVID / "val.txt"), "--device", "cpu",
                 "--workers", "0", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["images"] == 101 and result["mode"] == "ss" and result["protocol"] == "ss scales 2"
    assert result["mIoU"] * 100 == pytest.approx(ZOO_MIOU, abs=0.05)
