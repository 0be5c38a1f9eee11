"""`bisenet eval` end to end on a tiny copy of the bundled Dubai example, every mode, both weight formats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import bisenet
from bisenet.cli import main
from bisenet.config import load_config, to_dict
from bisenet.data import build_dataset
from bisenet.evaluation import evaluate, evaluate_model, score_predictions

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"
SAMPLE = REPO.parent / "shared" / "data" / "cityscapes_sample"
# (H, W) per image: two of one size (batched together), odd sizes, one portrait.
SIZES = [(45, 61), (45, 61), (61, 45), (50, 70)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Four val images of the Dubai example shrunk to odd sizes, with a list file."""
    root = tmp_path_factory.mktemp("tiny_dubai")
    (root / "img").mkdir()
    (root / "lab").mkdir()
    lines = []
    pairs = [line.split(",") for line in (EXAMPLE / "val.txt").read_text().split()]
    for k, ((image, label), (h, w)) in enumerate(zip(pairs, SIZES)):
        photo = cv2.resize(cv2.imread(str(EXAMPLE / image)), (w, h), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(cv2.imread(str(EXAMPLE / label), cv2.IMREAD_UNCHANGED), (w, h), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(root / "img" / f"tile{k}.png"), photo)
        cv2.imwrite(str(root / "lab" / f"tile{k}.png"), mask)
        lines.append(f"img/tile{k}.png,lab/tile{k}.png")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return bisenet.build_model("bisenetv2", 5).eval()


@pytest.fixture(scope="module")
def published(tmp_path_factory, model) -> Path:
    """A plain state_dict saved with torch.save, as released checkpoints are."""
    path = tmp_path_factory.mktemp("weights") / "bisenetv2_dubai_state_dict.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("mode", ["ss", "ssc", "msf", "mscf"])
def test_every_mode_through_the_cli(mode, tiny, published, tmp_path, capsys) -> None:
    out = tmp_path / f"{mode}.json"
    argv = ["eval", str(CONFIG), "--weights", str(published), "--mode", mode, "--data-root", str(tiny),
            "--list", "val.txt", "--device", "cpu", "--batch-size", "2", "--workers", "0", "--json", str(out)]
    if mode in ("ssc", "mscf"):
        argv += ["--crop", "32x64", "--stride", "21x43"]
    if mode in ("msf", "mscf"):
        argv += ["--scales", "0.75,1.0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "vegetation" in printed
    result = json.loads(out.read_text())
    assert result["mode"] == mode and result["images"] == 4
    assert result["list"] == str(tiny / "val.txt") and result["split"] is None  # --list, not the config's split
    assert set(result["IoU"]) == {"building", "land", "road", "vegetation", "water"}
    for key in ("mIoU", "pixel_acc", "fwIoU"):
        assert 0.0 <= result[key] <= 1.0
    labelled = sum(int((cv2.imread(str(p), cv2.IMREAD_UNCHANGED) < 5).sum()) for p in (tiny / "lab").iterdir())
    assert sum(map(sum, result["confusion_matrix"])) == labelled  # every labelled pixel counted once
    assert (tmp_path / f"{mode}_confusion.png").is_file() and (tmp_path / f"{mode}_iou.png").is_file()
    if mode in ("msf", "mscf"):
        assert "flip" in result["protocol"] and "scales 0.75,1" in result["protocol"]


def test_saved_predictions_score_the_same_and_batching_changes_nothing(tiny, model, tmp_path) -> None:
    cfg = load_config(CONFIG, {"data.root": str(tiny)})
    one = evaluate(cfg, model, mode="ss", device="cpu", batch_size=1, workers=0, progress=False,
                   save_pred_dir=tmp_path / "pred")
    two = evaluate(cfg, model, mode="ss", device="cpu", batch_size=3, workers=2, progress=False)
    assert one["confusion_matrix"] == two["confusion_matrix"]
    names = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert names == [f"tile{k}.png" for k in range(4)]
    for k, (h, w) in enumerate(SIZES):  # written at each image's original size
        assert cv2.imread(str(tmp_path / "pred" / f"tile{k}.png"), cv2.IMREAD_UNCHANGED).shape == (h, w)
    scored = score_predictions(tmp_path / "pred", tiny, "val.txt", dataset="dubai")
    assert scored["IoU"] == one["IoU"] and scored["mIoU"] == one["mIoU"]


def test_evaluate_model_for_the_training_loop(tiny, model) -> None:
    cfg = load_config(CONFIG, {"data.root": str(tiny)})
    dataset = build_dataset(cfg, "val")
    result = evaluate_model(model, dataset, "cpu", mode="ss", class_names=cfg.data.class_names, workers=0)
    assert isinstance(result["mIoU"], float) and result["images"] == 4
    assert list(result["IoU"]) == cfg.data.class_names


def test_our_checkpoint_needs_no_config(tiny, model, tmp_path, capsys) -> None:
    cfg = load_config(CONFIG, {"data.root": str(tiny), "eval.crop_size": [64, 64]})
    path = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "arch": "bisenetv2", "num_classes": 5, "config": to_dict(cfg)}, path)
    assert main(["eval", "--weights", str(path), "--mode", "ssc", "--device", "cpu", "--workers", "0"]) == 0
    assert "ssc crop 64x64" in capsys.readouterr().out


def test_user_errors_are_one_line(tiny, tmp_path, capsys) -> None:
    wrong = tmp_path / "cityscapes.pth"
    torch.save(bisenet.build_model("bisenetv2", 19).state_dict(), wrong)
    base = ["eval", str(CONFIG), "--data-root", str(tiny), "--list", "val.txt", "--device", "cpu", "--workers", "0"]
    assert main(base + ["--weights", str(wrong)]) == 2
    assert "19 classes" in capsys.readouterr().err
    assert main(base) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(base + ["--weights", str(wrong), "--save-pred", str(tmp_path / "p"), "--cityscapes-ids"]) == 2
    assert "label map" in capsys.readouterr().err
    assert main(base + ["--weights", str(wrong), "--mode", "ssc", "--crop", "30x30"]) == 2
    assert "multiples of 32" in capsys.readouterr().err.splitlines()[-1]


def test_config_and_weights_of_different_archs_are_refused(tiny, published, tmp_path, capsys) -> None:
    # The config's model.arch says what is scored; the weights' own arch used to win silently.
    v1 = tmp_path / "v1.pth"
    torch.save(bisenet.build_model("bisenetv1", 5).state_dict(), v1)
    v1_config = tmp_path / "v1_dubai.yaml"
    v1_config.write_text(CONFIG.read_text().replace("arch: bisenetv2", "arch: bisenetv1"))
    base = ["--data-root", str(tiny), "--list", "val.txt", "--device", "cpu", "--workers", "0"]
    for config, weights, found, asked in [(CONFIG, v1, "bisenetv1", "bisenetv2"), (v1_config, published, "bisenetv2", "bisenetv1")]:
        assert main(["eval", str(config), "--weights", str(weights), *base]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(weights) in err[0]
        assert f"the weights are a {found} model but the config's model.arch is {asked}" in err[0]
        assert f"(model.arch: {found})" in err[0]


def test_cityscapes_ids_for_the_official_server(tmp_path) -> None:
    if not (SAMPLE / "val.txt").is_file():
        pytest.skip(f"Cityscapes sample not found at {SAMPLE} (the shared data folder is absent)")
    torch.manual_seed(0)
    model = bisenet.build_model("bisenetv2", 19).eval()
    cfg = {"data": {"dataset": "cityscapes", "root": str(SAMPLE)}}
    train = evaluate(cfg, model, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "train")
    ids = evaluate(cfg, model, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "ids", cityscapes_ids=True)
    assert train["IoU"] == ids["IoU"]
    name = "frankfurt_000000_000294_leftImg8bit.png"
    train_ids = cv2.imread(str(tmp_path / "train" / name), cv2.IMREAD_UNCHANGED)
    label_ids = cv2.imread(str(tmp_path / "ids" / name), cv2.IMREAD_UNCHANGED)
    to_ids = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33])
    assert label_ids.shape == (128, 256) and np.array_equal(label_ids, to_ids[train_ids])


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny, published, tmp_path) -> None:
    common = [str(CONFIG), "--weights", str(published), "--data-root", str(tiny), "--list", "val.txt",
              "--device", "cpu", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "bisenet", "eval", *common, "--json", str(tmp_path / "one.json")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert single.returncode == 0, single.stderr
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "bisenet", "eval", *common, "--json", str(tmp_path / "two.json")],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["confusion_matrix"] == two["confusion_matrix"] and two["images"] == 4


def test_int8_eval_calibrates_on_the_train_split(tmp_path, model, published) -> None:
    # No calibration folder given: evaluate() reads images of the config's train split.
    cfg = load_config(CONFIG, {"eval": {"crop_size": [64, 64]}})
    fp32 = evaluate(cfg, published, data_root=EXAMPLE, list_file=EXAMPLE / "val.txt", progress=False, device="cpu")
    int8 = evaluate(cfg, published, data_root=EXAMPLE, list_file=EXAMPLE / "val.txt", progress=False, device="cpu",
                    backend="int8", calibration_images=2)
    assert int8["backend"] == "int8" and int8["images"] == fp32["images"]
    assert abs(int8["pixel_acc"] - fp32["pixel_acc"]) < 10


def test_int8_eval_names_a_missing_calibration_folder(published) -> None:
    with pytest.raises(bisenet.errors.BisenetError, match="no-such-folder"):
        evaluate(CONFIG, published, data_root=EXAMPLE, progress=False, device="cpu", backend="int8",
                 calibration="no-such-folder")


def _labels_as_predictions(tiny: Path, folder: Path) -> Path:
    """Copy each ground truth as its image's prediction: a perfect score, values 0-4 and 255."""
    folder.mkdir()
    for label in (tiny / "lab").iterdir():
        (folder / label.name).write_bytes(label.read_bytes())
    return folder


def test_pred_dir_refuses_values_that_are_not_classes(tiny, tmp_path, capsys) -> None:
    preds = _labels_as_predictions(tiny, tmp_path / "preds")
    base = ["eval", "--pred-dir", str(preds), "--root", str(tiny), "--list", "val.txt"]
    assert main(base + ["--dataset", "dubai"]) == 0  # 255 (the ignore index) is a valid prediction
    capsys.readouterr()
    assert main(base + ["--num-classes", "3"]) == 2  # 5-class data: classes 3 and 4 must not vanish
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"ground truth {tiny / 'lab' / 'tile0.png'} has values 3, 4 outside [0, 3)" in err
    mask = cv2.imread(str(preds / "tile2.png"), cv2.IMREAD_UNCHANGED)
    mask[:3, :3] = 200
    cv2.imwrite(str(preds / "tile2.png"), mask)
    assert main(base + ["--dataset", "dubai"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"prediction {preds / 'tile2.png'} has value 200 outside [0, 5)" in err
    assert "predictions must be train ids 0..4" in err


def test_pred_dir_train_id_labels_skip_the_label_map(tmp_path) -> None:
    # As in `data check` and training: *_labelTrainIds.png already hold train ids (0 is road, not "unlabeled").
    train_ids = np.array([[0, 0, 1, 13], [18, 255, 0, 1]], np.uint8)
    (tmp_path / "preds").mkdir()
    cv2.imwrite(str(tmp_path / "a_gtFine_labelTrainIds.png"), train_ids)
    cv2.imwrite(str(tmp_path / "preds" / "a_leftImg8bit.png"), train_ids)
    (tmp_path / "val.txt").write_text("a_leftImg8bit.png,a_gtFine_labelTrainIds.png\n")
    result = score_predictions(tmp_path / "preds", tmp_path, "val.txt", dataset="cityscapes")
    assert result["pixels"] == 7 and result["mIoU"] == 1.0


def test_json_path_that_is_a_folder_fails_before_any_work(tiny, published, tmp_path, capsys) -> None:
    preds = _labels_as_predictions(tiny, tmp_path / "preds")
    scoring = ["eval", "--pred-dir", str(preds), "--root", str(tiny), "--list", "val.txt", "--dataset", "dubai"]
    model = ["eval", str(CONFIG), "--weights", str(published), "--data-root", str(tiny), "--list", "val.txt",
             "--device", "cpu", "--workers", "0"]
    for argv in (scoring, model):
        assert main(argv + ["--json", str(preds)]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"bisenet eval: error: --json {preds} is a folder; pass a file path such as " \
                               f"{preds / 'metrics.json'}\n"
        assert "mIoU" not in captured.out  # refused before evaluating
    with pytest.raises(bisenet.errors.BisenetError, match="is a folder"):
        evaluate(CONFIG, published, data_root=tiny, list_file="val.txt", device="cpu", json_path=preds)
    assert sorted(p.name for p in tmp_path.rglob("*") if ".tmp" in p.name) == []


def test_eval_of_the_train_split_scores_whole_images_not_training_crops(tiny, model) -> None:
    # build_dataset augments the train split; evaluation must not (it used to score random 256x256 crops).
    cfg = load_config(CONFIG, [f"data.root={tiny}", "data.train_list=val.txt"])
    result = evaluate(cfg, model, split="train", device="cpu", workers=0, progress=False)
    assert result["pixels"] <= sum(h * w for h, w in SIZES) and result["images"] == len(SIZES)
    assert result["pixels"] == evaluate(cfg, model, split="val", device="cpu", workers=0, progress=False)["pixels"]


@pytest.mark.parametrize("flags, expected", [
    (["--scale", "0"], "--scale 0: must be above 0 and at most 8"),  # 0 used to fall back to eval.scale
    (["--batch-size", "0"], "--batch-size 0: must be a whole number of at least 1"),
    (["--batch-size", "-1"], "--batch-size -1: must be a whole number of at least 1"),
    (["--mode", "ss", "--scales", "1", "2"], "--scales 1 2: mode ss runs one scale; several scales are for --mode msf or mscf"),
    (["--mode", "ss", "--crop", "64x64"], "--crop 64x64 (crop= in Python): mode ss runs on whole images; sliding windows are for --mode ssc or mscf"),
    (["--mode", "msf", "--stride", "32x32"], "--stride 32x32 (stride= in Python): mode msf runs on whole images"),
    (["--mode", "msf", "--scale", "3"], "--scale 3: mode msf runs several scales (the config's eval.scales); --scale is for --mode ss or ssc"),
    (["--calibration-images", "-3", "--backend", "int8"], "--calibration-images -3: must be at least 1"),
])
def test_bad_or_unused_protocol_flags_are_refused_before_any_work(tiny, published, tmp_path, capsys, flags, expected) -> None:
    out = tmp_path / "m.json"
    argv = ["eval", str(CONFIG), "--weights", str(published), "--data-root", str(tiny), "--list", "val.txt",
            "--device", "cpu", "--workers", "0", "--json", str(out), *flags]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and expected in captured.err, captured.err
    assert "mIoU" not in captured.out and not out.exists()


def test_scale_flags_that_the_mode_uses_still_run(tiny, model) -> None:
    # The refusals above must not catch what each mode does use; and an explicit scale is the one scored at.
    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt"})
    half = evaluate(cfg, model, mode="ss", scale=0.5, device="cpu", workers=0, progress=False)
    assert half["protocol"] == "ss scale 0.5"
    sliding = evaluate(cfg, model, mode="mscf", scales=[0.75, 1.0], crop=(32, 32), stride=(32, 32), device="cpu",
                       workers=0, progress=False)
    assert sliding["protocol"] == "mscf scales 0.75,1 crop 32x32 stride 32x32 flip"
    with pytest.raises(bisenet.errors.BisenetError, match="--scale 0: must be above 0 and at most 8"):
        evaluate(cfg, model, scale=0, device="cpu", workers=0, progress=False)


def test_pred_dir_scores_predict_label_files(tiny, published, tmp_path, capsys) -> None:
    # `predict` writes STEM_label.png (beside _color and _overlay); eval --pred-dir used to look for STEM.png only.
    out = tmp_path / "predicted"
    assert main(["predict", str(tiny / "img"), "--weights", str(published), "--out", str(out), "--device", "cpu",
                 "--quiet"]) == 0
    saved = tmp_path / "saved"
    base = ["--root", str(tiny), "--list", "val.txt", "--dataset", "dubai"]
    assert main(["eval", "--pred-dir", str(out), *base, "--json", str(tmp_path / "p.json")]) == 0
    assert main(["eval", str(CONFIG), "--weights", str(published), "--data-root", str(tiny), "--list", "val.txt",
                 "--device", "cpu", "--workers", "0", "--save-pred", str(saved)]) == 0
    scored = json.loads((tmp_path / "p.json").read_text())
    assert scored["images"] == 4
    own = score_predictions(saved, tiny, "val.txt", dataset="dubai")
    assert scored["pixels"] == own["pixels"]
    # predict mirrors an input folder's subfolders (e.g. Cityscapes' city folders): found there too.
    nested = tmp_path / "nested"
    (nested / "city").mkdir(parents=True)
    for path in out.glob("*_label.png"):
        shutil.copy(path, nested / "city" / path.name)
    assert main(["eval", "--pred-dir", str(nested), *base, "--json", str(tmp_path / "n.json")]) == 0
    assert json.loads((tmp_path / "n.json").read_text())["pixels"] == own["pixels"]
    (nested / "copy").mkdir()
    shutil.copy(nested / "city" / "tile1_label.png", nested / "copy")
    capsys.readouterr()
    assert main(["eval", "--pred-dir", str(nested), *base]) == 2
    assert "tile1_label.png is there 2 times" in capsys.readouterr().err
    (out / "tile1_label.png").unlink()
    assert main(["eval", "--pred-dir", str(out), *base]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 4 predictions missing" in err
    assert "STEM.png (eval --save-pred) or STEM_label.png (predict), both looked for" in err


def test_weights_without_a_config_get_a_matching_config_suggested(tmp_path, capsys) -> None:
    shipped = REPO / "weights" / "bisenetv2_camvid.safetensors"
    if not shipped.is_file():
        pytest.skip(f"{shipped} (the shipped CamVid weights) is absent")
    # 11-class BiSeNetV2 weights used to be pointed at the 5-class Dubai config, which then failed on the classes.
    assert main(["eval", "--weights", str(shipped), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stores no config (bisenetv2, 11 classes)" in err
    assert "bisenetv2_camvid.yaml --weights" in err and "dubai" not in err
    v1 = tmp_path / "v1.pth"  # no bundled config has bisenetv1 with 5 classes: a generic hint
    torch.save(bisenet.build_model("bisenetv1", 5).state_dict(), v1)
    assert main(["eval", "--weights", str(v1), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stores no config (bisenetv1, 5 classes): pass the YAML config it was trained " \
                                     f"with first: bisenet eval CONFIG --weights {v1}" in err


def test_a_stored_config_that_no_longer_loads_names_the_weights_and_the_fix(tmp_path, capsys) -> None:
    # A checkpoint outlives the checks of its day: the user cannot edit its config, only pass one.
    stored = to_dict(load_config(CONFIG))
    stored["train"]["ohem_thresh"] = 1.5
    weights = tmp_path / "old.pt"
    torch.save({"arch": "bisenetv2", "num_classes": 5, "model": bisenet.build_model("bisenetv2", 5).state_dict(),
                "config": stored}, weights)
    assert main(["eval", "--weights", str(weights), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{weights}: its stored config: " in err and "ohem_thresh" in err
    assert f"bisenet eval CONFIG --weights {weights}" in err


def test_pred_dir_matches_a_repeated_name_by_its_folder(tmp_path) -> None:
    # predict ds/img --out pd/img mirrors a/ and b/: two x_label.png that only their folders tell apart.
    rng = np.random.default_rng(0)
    lines = []
    for i, sub in enumerate(("a", "b")):
        label = rng.integers(0, 5, (8, 8), dtype=np.uint8)
        for path, data in ((tmp_path / "ds" / "img" / sub / "x.png", np.zeros((8, 8, 3), np.uint8)),
                           (tmp_path / "ds" / "lab" / sub / "x.png", label),
                           (tmp_path / "pd" / "img" / sub / "x_label.png", label if i == 0 else (label + 1) % 5)):
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), data)
        lines.append(f"img/{sub}/x.png,lab/{sub}/x.png")
    (tmp_path / "ds" / "l.txt").write_text("\n".join(lines) + "\n")
    result = score_predictions(tmp_path / "pd", tmp_path / "ds", "l.txt", dataset="dubai")
    assert result["pixel_acc"] == pytest.approx(0.5)  # a/ right everywhere, b/ wrong everywhere: each read once


def test_batches_group_images_by_their_size_as_decoded_exif_turn_included(tmp_path):
    # OpenCV turns an EXIF-rotated photo on reading: grouped by the header's WxH, a 64x32 and a turned
    # 32x64 landed in one batch and failed to stack.
    from types import SimpleNamespace

    from PIL import Image

    from bisenet.evaluation.evaluate import size_batches

    plain = Image.fromarray(np.zeros((32, 64, 3), np.uint8))
    plain.save(tmp_path / "plain.jpg")
    exif = plain.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    plain.save(tmp_path / "turned.jpg", exif=exif)
    Image.fromarray(np.zeros((64, 32, 3), np.uint8)).save(tmp_path / "tall.jpg")
    dataset = SimpleNamespace(samples=[(tmp_path / n, None) for n in ("plain.jpg", "turned.jpg", "tall.jpg")])
    assert size_batches(dataset, [0, 1, 2], batch_size=2) == [[0], [1, 2]]
    plain.save(tmp_path / "plain.tif")
    plain.save(tmp_path / "turned.tif", exif=exif)  # Pillow's TIFF size is turned already: not twice
    dataset = SimpleNamespace(samples=[(tmp_path / n, None) for n in ("plain.tif", "turned.tif")])
    assert size_batches(dataset, [0, 1], batch_size=2) == [[0], [1]]
