"""`score_predictions` / `bisenet eval --pred-dir` agree with cityscapesScripts on real Cityscapes frames."""

from __future__ import annotations

import copy
import importlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet.cli import main
from bisenet.data.catalog import CITYSCAPES, build_lut
from bisenet.errors import DataError
from bisenet.evaluation import score_predictions, train_to_raw_lut

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cityscapes_sample"


@pytest.fixture(scope="module")
def sample() -> Path:
    """The 5-frame Cityscapes sample, or a skip when the shared data folder is absent."""
    if not (SAMPLE / "train.txt").is_file():
        pytest.skip(f"Cityscapes sample not found at {SAMPLE} (the shared data folder is absent)")
    return SAMPLE


@pytest.fixture(scope="module")
def official(sample):
    """The official evaluation module (cityscapesscripts), or a skip saying how to get it."""
    try:
        return importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    except ImportError:
        pytest.skip("cityscapesscripts is not installed: pip install cityscapesscripts (the test extra)")


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, official):
    """Imperfect train-id predictions for all 5 sample frames, plus their label-id twins for the official script."""
    out = tmp_path_factory.mktemp("cityscapes_preds")
    lines = (SAMPLE / "train.txt").read_text().split() + (SAMPLE / "val.txt").read_text().split()
    (out / "all.txt").write_text("\n".join(lines) + "\n")
    lut = build_lut(CITYSCAPES.label_map)
    to_ids = train_to_raw_lut(CITYSCAPES.label_map, 19)
    (out / "train_ids").mkdir()
    (out / "label_ids").mkdir()
    pred_files, gt_files = [], []
    for k, line in enumerate(lines):
        image, label = line.split(",")
        pred = lut[cv2.imread(str(SAMPLE / label), cv2.IMREAD_UNCHANGED)].copy()
        h, w = pred.shape
        band = slice(h // 3, h // 3 + h // 8)  # a band of wrong classes
        pred[band] = np.where(pred[band] == 255, 5, (pred[band].astype(int) + 3 + k) % 19)
        pred[pred == 16] = 15  # "train" appears in no sample frame: keep it absent from both sides
        pred[:, w // 5: w // 5 + w // 20] = 13  # a column of "car"
        pred[pred == 255] = 0  # GT-ignored regions predicted as road (must not count)
        pred[h - h // 10:, : w // 7] = 255  # no prediction at all: a false negative
        stem = Path(image).stem
        cv2.imwrite(str(out / "train_ids" / f"{stem}.png"), pred)
        cv2.imwrite(str(out / "label_ids" / f"{stem}.png"), to_ids[pred])
        pred_files.append(str(out / "label_ids" / f"{stem}.png"))
        gt_files.append(str(SAMPLE / label))
    return out, pred_files, gt_files


def official_scores(module, pred_files: list[str], gt_files: list[str]) -> dict:
    args = copy.copy(module.args)
    args.evalInstLevelScore = False
    args.JSONOutput = False
    args.quiet = True
    return module.evaluateImgLists(pred_files, gt_files, args)


def assert_same(ours: dict, theirs: dict) -> None:
    for name in CITYSCAPES.class_names:
        value, reference = ours["IoU"][name], theirs["classScores"][name]
        if math.isnan(reference):
            assert value is None, name
        else:
            assert value == pytest.approx(reference, abs=1e-12), name
    assert ours["mIoU"] == pytest.approx(theirs["averageScoreClasses"], abs=1e-12)


def test_score_predictions_matches_cityscapesscripts(official, predictions) -> None:
    out, pred_files, gt_files = predictions
    ours = score_predictions(out / "train_ids", SAMPLE, out / "all.txt", dataset="cityscapes")
    theirs = official_scores(official, pred_files, gt_files)
    assert_same(ours, theirs)
    assert ours["images"] == 5
    assert 0.2 < ours["mIoU"] < 0.6  # imperfect on purpose
    assert any(v is None for v in ours["IoU"].values())  # some classes absent from both sides


def test_eval_pred_dir_cli_matches_cityscapesscripts(official, predictions, tmp_path, capsys) -> None:
    out, pred_files, gt_files = predictions
    json_path = tmp_path / "scores.json"
    code = main(["eval", "--pred-dir", str(out / "train_ids"), "--root", str(SAMPLE), "--list", str(out / "all.txt"),
                 "--dataset", "cityscapes", "--json", str(json_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "traffic sign" in printed
    assert_same(json.loads(json_path.read_text()), official_scores(official, pred_files, gt_files))
    assert (tmp_path / "scores_confusion.png").is_file() and (tmp_path / "scores_iou.png").is_file()


def test_perfect_predictions_score_one(sample, tmp_path) -> None:
    lut = build_lut(CITYSCAPES.label_map)
    line = (SAMPLE / "val.txt").read_text().split()[0]
    image, label = line.split(",")
    cv2.imwrite(str(tmp_path / f"{Path(image).stem}.png"), lut[cv2.imread(str(SAMPLE / label), cv2.IMREAD_UNCHANGED)])
    result = score_predictions(tmp_path, SAMPLE, "val.txt", dataset="cityscapes")
    assert result["mIoU"] == 1.0 and result["pixel_acc"] == 1.0


def test_missing_prediction_names_the_file(sample, tmp_path) -> None:
    with pytest.raises(Exception, match="frankfurt_000000_000294_leftImg8bit.png"):
        score_predictions(tmp_path, SAMPLE, "val.txt", dataset="cityscapes")
    code = main(["eval", "--pred-dir", str(tmp_path), "--root", str(SAMPLE), "--list", "val.txt", "--num-classes", "19"])
    assert code == 2


def test_label_id_predictions_are_named_as_such(sample, tmp_path) -> None:
    # `eval --cityscapes-ids` writes the server's label ids; scoring them as train ids must say so.
    line = (SAMPLE / "val.txt").read_text().split()[0]
    image, label = line.split(",")
    raw = cv2.imread(str(SAMPLE / label), cv2.IMREAD_UNCHANGED)
    ids = np.where(build_lut(CITYSCAPES.label_map)[raw] == 255, 0, raw).astype(np.uint8)  # the 19 classes' label ids
    cv2.imwrite(str(tmp_path / f"{Path(image).stem}.png"), ids)
    with pytest.raises(DataError, match=r"these look like raw label ids .*--save-pred without --cityscapes-ids"):
        score_predictions(tmp_path, SAMPLE, "val.txt", dataset="cityscapes")
