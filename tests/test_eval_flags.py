"""`bisenet eval` flags that used to be ignored or misread: notes, refusals and --scales forms."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest
import torch

import bisenet
from bisenet.cli import main
from bisenet.cli.evaluate import _scales
from bisenet.config import load_config
from bisenet.data.catalog import DATASETS
from bisenet.errors import BisenetError
from bisenet.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"
CAMVID = REPO / "configs" / "bisenetv2_camvid.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Two val images of the Dubai example at 40x56 (HxW), with a list file."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "img").mkdir()
    (root / "lab").mkdir()
    pairs = [line.split(",") for line in (EXAMPLE / "val.txt").read_text().split()][:2]
    for k, (image, label) in enumerate(pairs):
        cv2.imwrite(str(root / "img" / f"t{k}.png"), cv2.resize(cv2.imread(str(EXAMPLE / image)), (56, 40)))
        mask = cv2.imread(str(EXAMPLE / label), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(root / "lab" / f"t{k}.png"), cv2.resize(mask, (56, 40), interpolation=cv2.INTER_NEAREST))
    (root / "val.txt").write_text("img/t0.png,lab/t0.png\nimg/t1.png,lab/t1.png\n")
    return root


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return bisenet.build_model("bisenetv2", 5).eval()


def _notes(err: str) -> list[str]:
    return [line[line.index("note: "):] for line in err.splitlines() if "note: " in line]


def test_a_crop_covering_the_whole_image_is_noted_once(tiny, model, capsys) -> None:
    # ssc --crop 1024x1024 on 480x360 images ran one window per image (= ss) while its protocol said "ssc crop ...".
    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt"})
    result = evaluate(cfg, model, mode="ssc", crop=(64, 64), batch_size=1, device="cpu", workers=0, progress=False)
    assert result["images"] == 2
    assert _notes(capsys.readouterr().err) == [
        "note: the ssc crop 64x64 covers the whole image (40x56 HxW at scale 1), so ssc equals ss here; "
        "pass a --crop smaller than the image for sliding windows"]
    evaluate(cfg, model, mode="ssc", crop=(64, 64), scale=2, device="cpu", workers=0, progress=False)  # 80x112
    evaluate(cfg, model, mode="ssc", crop=(32, 32), device="cpu", workers=0, progress=False)
    assert _notes(capsys.readouterr().err) == []


def test_msf_on_a_config_with_eval_scale_says_it_is_not_their_base(tiny, model, capsys) -> None:
    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt", "eval.scale": 2})
    result = evaluate(cfg, model, mode="msf", scales=[0.5, 0.75], flip=False, device="cpu", workers=0, progress=False)
    assert result["protocol"] == "msf scales 0.5,0.75 no flip"  # printed as just "msf" for scales 1 without flip
    assert _notes(capsys.readouterr().err) == [
        "note: eval.scale 2 applies to ss/ssc; msf scales multiply the input size (for a base of 2, pass --scales 1 1.5)"]
    evaluate(cfg, model, mode="ss", device="cpu", workers=0, progress=False)
    assert _notes(capsys.readouterr().err) == []


def test_cityscapes_ids_on_another_dataset_is_refused(tiny, tmp_path, capsys) -> None:
    # CamVid's label map is the identity: --cityscapes-ids wrote its train ids under that name, silently.
    weights = tmp_path / "camvid.pth"
    torch.save(bisenet.build_model("bisenetv2", 11).state_dict(), weights)
    out = tmp_path / "pred"
    assert main(["eval", str(CAMVID), "--weights", str(weights), "--data-root", str(tiny), "--list", "val.txt",
                 "--save-pred", str(out), "--cityscapes-ids", "--device", "cpu", "--workers", "0"]) == 2
    assert capsys.readouterr().err == (
        "bisenet eval: error: --cityscapes-ids writes Cityscapes label ids for its benchmark server, but dataset "
        "camvid is not Cityscapes: drop it (--save-pred writes train ids)\n")
    assert not out.exists()


def test_calibration_for_a_backend_that_does_not_calibrate_is_warned_about(tiny, model, tmp_path, capsys) -> None:
    weights = tmp_path / "v2.pth"
    torch.save(model.state_dict(), weights)
    assert main(["eval", str(CONFIG), "--weights", str(weights), "--data-root", str(tiny), "--list", "val.txt",
                 "--backend", "fold_bn", "--calibration", str(tiny / "img"), "--device", "cpu", "--workers", "0"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: --calibration {tiny / 'img'} is ignored: only the int8 backends (int8, int8_compile, "
                      "int8_openvino) calibrate, not --backend fold_bn"]


@pytest.mark.parametrize("given, expected", [
    (["0.5", "1"], [0.5, 1.0]), (["0.5 1"], [0.5, 1.0]), (["0.5,0.75,1.0"], [0.5, 0.75, 1.0]),
    (["0.5, 0.75", "1,1.25"], [0.5, 0.75, 1.0, 1.25]), ([" 2 "], [2.0]),
])
def test_scales_may_be_one_quoted_argument(given, expected) -> None:
    assert _scales(given) == expected


@pytest.mark.parametrize("given, why", [
    (["0.5,,1"], "has an empty item"), (["0.5,"], "has an empty item"), ([","], "has an empty item"),
    (["0.5", "x"], "'x' is not a number"), (["1,inf"], "inf is not a finite number"),
])
def test_scales_with_an_empty_or_bad_item_are_refused(given, why) -> None:
    with pytest.raises(BisenetError) as info:
        _scales(given)
    assert str(info.value).startswith(f"--scales {' '.join(given)}: {why}")
    assert "pass numbers such as 0.5 0.75 1.0" in str(info.value)


def test_pred_dir_accepts_dataset_custom_with_a_class_count(tiny, tmp_path, capsys) -> None:
    preds = tmp_path / "preds"
    preds.mkdir()
    for label in (tiny / "lab").iterdir():  # the ground truth as predictions: a perfect score
        (preds / label.name).write_bytes(label.read_bytes())
    base = ["eval", "--pred-dir", str(preds), "--root", str(tiny), "--list", str(tiny / "val.txt")]
    assert main([*base, "--dataset", "custom", "--num-classes", "5"]) == 0
    assert re.search(r"^mIoU +100\.00$", capsys.readouterr().out, re.MULTILINE)
    for flags, expected in [(["--dataset", "custom"], "--dataset custom has no preset class count: also pass "
                                                      "--num-classes N"),
                            (["--dataset", "dubay"], "unknown dataset 'dubay' (did you mean 'dubai'?); valid: "
                                                     f"{', '.join(DATASETS)}, custom (with --num-classes)")]:
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
