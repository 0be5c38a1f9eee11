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


def test_an_empty_scales_list_in_python_is_refused_not_replaced_by_the_configs(tiny, model) -> None:
    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt"})
    with pytest.raises(BisenetError, match=r"scales=\[\]: give at least one scale"):
        evaluate(cfg, model, mode="msf", scales=[], device="cpu", workers=0, progress=False)


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
                 "--backend", "fold_bn", "--calibration", str(tiny / "img"), "--calibration-images", "4",
                 "--device", "cpu", "--workers", "0"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: --calibration {tiny / 'img'} is ignored: only the int8 backends (int8, int8_compile, "
                      "int8_openvino) calibrate, not --backend fold_bn",
                      "warning: --calibration-images 4 is ignored: only the int8 backends (int8, int8_compile, "
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


@pytest.fixture(scope="module")
def two_folders(tiny, tmp_path_factory) -> Path:
    """tiny's two images as a/img/t.png and b/img/t.png (one file name in two folders), with a list file."""
    root = tmp_path_factory.mktemp("two_folders")
    for k, sub in enumerate("ab"):
        for kind in ("img", "lab"):
            (root / sub / kind).mkdir(parents=True)
            (root / sub / kind / "t.png").write_bytes((tiny / kind / f"t{k}.png").read_bytes())
    (root / "val.txt").write_text("a/img/t.png,a/lab/t.png\nb/img/t.png,b/lab/t.png\n")
    return root


def test_save_pred_mirrors_folders_so_a_shared_file_name_is_not_overwritten(two_folders, model, tmp_path) -> None:
    # Both were written as DIR/t.png, the second over the first, and --pred-dir then scored one image twice.
    cfg = load_config(CONFIG, {"data.root": str(two_folders), "data.val_list": "val.txt"})
    result = evaluate(cfg, model, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "pred")
    assert sorted(p.relative_to(tmp_path / "pred").as_posix() for p in (tmp_path / "pred").rglob("*.png")) == [
        "a/img/t.png", "b/img/t.png"]
    scored = bisenet.evaluation.score_predictions(tmp_path / "pred", two_folders, "val.txt", dataset="dubai")
    assert scored["confusion_matrix"] == result["confusion_matrix"]


def test_save_pred_stays_flat_for_images_of_one_folder(tiny, model, tmp_path) -> None:
    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt"})
    evaluate(cfg, model, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "pred")
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["t0.png", "t1.png"]


def test_save_pred_refuses_two_images_of_one_name_before_any_work(tiny, model, tmp_path) -> None:
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    for suffix in (".png", ".jpg"):  # t.png and t.jpg: both would be saved as t.png
        cv2.imwrite(str(root / "img" / f"t{suffix}"), cv2.imread(str(tiny / "img" / "t0.png")))
    (root / "val.txt").write_text(f"img/t.png,{tiny / 'lab' / 't0.png'}\nimg/t.jpg,{tiny / 'lab' / 't1.png'}\n")
    cfg = load_config(CONFIG, {"data.root": str(root), "data.val_list": "val.txt"})
    with pytest.raises(BisenetError) as info:
        evaluate(cfg, model, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "pred")
    assert str(info.value) == (f"--save-pred: images {root / 'img' / 't.png'} and {root / 'img' / 't.jpg'} would both "
                               "be saved as t.png; rename one of them (predictions are named after the image's folder "
                               "and stem)")
    assert not (tmp_path / "pred").exists()


def test_pred_dir_refuses_two_list_lines_scored_against_one_prediction(two_folders, tmp_path, capsys) -> None:
    # predict a/img/t.png b/img/t.png --out pd writes t_label.png and t_2_label.png: both lines found t_label.png.
    preds = tmp_path / "pd"
    preds.mkdir()
    for name, label in (("t_label.png", "a/lab/t.png"), ("t_2_label.png", "b/lab/t.png")):
        (preds / name).write_bytes((two_folders / label).read_bytes())
    assert main(["eval", "--pred-dir", str(preds), "--root", str(two_folders), "--list", "val.txt",
                 "--dataset", "dubai"]) == 2
    assert capsys.readouterr().err == (
        f"bisenet eval: error: {two_folders / 'val.txt'} line 1 (a/img/t.png) and line 2 (b/img/t.png) would both be "
        f"scored against {preds / 't_label.png'}; predict their common folder, not the files one by one (or eval "
        "--save-pred), so that their folders are mirrored below the prediction folder\n")


@pytest.mark.parametrize("flags, named", [
    (["--scale", "2"], "--scale"), (["--mode", "ss", "--no-flip"], "--mode --no-flip"), (["--flip"], "--flip"),
    (["--backend", "eager", "--calibration", "x"], "--backend --calibration"), (["--batch-size", "0"], "--batch-size"),
    (["--crop", "64x64", "--stride", "32x32", "--scales", "1"], "--scales --crop --stride"),
    (["--device", "cpu", "--calibration-images", "4"], "--device --calibration-images"),
    (["--save-pred", "out", "--cityscapes-ids"], "--save-pred --cityscapes-ids"),
])
def test_pred_dir_refuses_flags_that_only_running_a_model_reads(tiny, tmp_path, capsys, flags, named) -> None:
    # They were ignored silently: --pred-dir scores saved PNGs as they are.
    assert main(["eval", "--pred-dir", str(tmp_path), "--root", str(tiny), "--list", "val.txt", "--dataset", "dubai",
                 *flags]) == 2
    assert capsys.readouterr().err == (f"bisenet eval: error: --pred-dir scores saved PNGs without a model: drop {named} "
                                       "(used only when running one), or drop --pred-dir and pass --weights\n")


def test_pred_dir_with_a_config_scores_the_list_of_split(tiny, tmp_path, capsys) -> None:
    # --split was ignored here: the config's val list was scored whatever split was named.
    (tiny / "one.txt").write_text("img/t0.png,lab/t0.png\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  dataset: dubai\n  root: {tiny}\n  train_list: one.txt\n  val_list: val.txt\n")
    preds = tmp_path / "preds"
    preds.mkdir()
    for label in (tiny / "lab").iterdir():
        (preds / label.name).write_bytes(label.read_bytes())
    for split, images in (("train", 1), ("val", 2)):
        assert main(["eval", str(config), "--pred-dir", str(preds), "--split", split]) == 0
        assert f"{images} images, pred-dir" in capsys.readouterr().out
    assert main(["eval", str(config), "--pred-dir", str(preds), "--split", "test"]) == 2
    assert capsys.readouterr().err == (f"bisenet eval: error: --split test: {config} names no data.test_list; "
                                       "pass --list L\n")


def test_pred_dir_refuses_ground_truth_values_the_named_dataset_does_not_have(tmp_path) -> None:
    # 182 is no COCO-Stuff id (0-181, 255): scored as ignore it made a wrong --dataset look like a fine score.
    import numpy as np

    from bisenet.errors import DataError
    from bisenet.evaluation import score_predictions

    (tmp_path / "pred").mkdir()
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((8, 8, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "a_gt.png"), np.full((8, 8), 182, np.uint8))
    cv2.imwrite(str(tmp_path / "pred" / "a.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "val.txt").write_text("a.jpg,a_gt.png\n")
    with pytest.raises(DataError, match="a_gt.png has value 182, which is not a label id of cocostuff"):
        score_predictions(tmp_path / "pred", tmp_path, "val.txt", dataset="cocostuff")
    cv2.imwrite(str(tmp_path / "a_gt.png"), np.full((8, 8), 181, np.uint8))  # a real id scores
    assert score_predictions(tmp_path / "pred", tmp_path, "val.txt", dataset="cocostuff")["images"] == 1


def test_pred_dir_only_flags_are_refused_when_a_model_runs(capsys) -> None:
    # --root was silently ignored: the list was read against the checkpoint's data.root and "not found".
    code = main(["eval", str(CAMVID), "--weights", "w.pt", "--root", "elsewhere", "--num-classes", "11"])
    err = capsys.readouterr().err
    assert code == 2 and err == ("bisenet eval: error: --root and --num-classes are only for --pred-dir scoring; with "
                                 "--weights, pass --data-root DIR instead of --root; drop --num-classes (the class "
                                 "count is the config's and the weights')\n")


def test_eval_flip_false_in_the_config_turns_off_the_msf_flip(tiny, model, tmp_path, capsys) -> None:
    # `eval.flip: false` read as "the protocol's default", so msf flipped anyway; absent, it still flips.
    data = {"data.root": str(tiny), "data.val_list": "val.txt", "eval.mode": "msf", "eval.scales": [0.75, 1]}
    off = load_config(CONFIG, {**data, "eval.flip": False})
    assert evaluate(off, model, device="cpu", workers=0, progress=False)["protocol"] == "msf scales 0.75,1 no flip"
    # Configs stored by earlier runs hold false as the old default: said, not silent.
    assert "note: eval.flip is false in the config: msf runs without flip" in capsys.readouterr().err
    assert evaluate(off, model, flip=True, device="cpu", workers=0, progress=False)["protocol"].endswith(" flip")
    assert "eval.flip" not in capsys.readouterr().err
    default = load_config(CONFIG, data)
    assert evaluate(default, model, device="cpu", workers=0, progress=False)["protocol"] == "msf scales 0.75,1 flip"


def test_scales_above_the_scale_limit_are_one_line_errors(tiny, model, tmp_path, capsys) -> None:
    # --scales 0.5 100 went on to ask the allocator for tens of GB (or a raw traceback); --scale stops at 8.
    weights = tmp_path / "v2.pth"
    torch.save(model.state_dict(), weights)
    assert main(["eval", str(CONFIG), "--weights", str(weights), "--data-root", str(tiny), "--list", "val.txt",
                 "--mode", "msf", "--scales", "0.5", "100", "--device", "cpu", "--workers", "0"]) == 2
    assert capsys.readouterr().err == ("bisenet eval: error: --scales 0.5 100: each must be above 0 and at most 8, "
                                       "not 100 (the factors msf/mscf resize inputs by, e.g. 0.75 1 1.25)\n")
    with pytest.raises(BisenetError, match=r"^scales 0\.5 9: each must be above 0 and at most 8, not 9 "):
        bisenet.evaluation.make_protocol("msf", scales=[0.5, 9])


def test_int8_without_calibration_and_without_a_train_list_names_both_fixes(tiny, model, tmp_path, capsys) -> None:
    # It said only "train.txt not found ... create it", as if eval itself needed the train split.
    weights = tmp_path / "v2.pth"
    torch.save(model.state_dict(), weights)
    assert main(["eval", str(CONFIG), "--weights", str(weights), "--data-root", str(tiny), "--list", "val.txt",
                 "--backend", "int8", "--device", "cpu", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bisenet eval: error: --backend int8 calibrates on 8 train-split images without "
                          "--calibration, but: ") and "train.txt" in err
    assert err.endswith("; or pass --calibration DIR (a folder of images like the ones scored)\n")
    assert err.count("\n") == 1


def test_json_confusion_holds_the_pixels_predicted_as_no_class(tiny, tmp_path) -> None:
    # --pred-dir PNGs may hold 255: those pixels count as misses, but the JSON matrix left them out,
    # so mIoU and pixel_acc recomputed from it were not the reported ones.
    import json

    import numpy as np

    from bisenet.evaluation import compute_metrics

    preds = tmp_path / "pred"
    preds.mkdir()
    for name in ("t0.png", "t1.png"):
        label = cv2.imread(str(tiny / "lab" / name), cv2.IMREAD_UNCHANGED)
        pred = np.where(label == 255, 0, label).astype(np.uint8)  # Dubai labels are train ids 0-4 and 255
        pred[:10] = 255  # the top rows predicted as "no class"
        cv2.imwrite(str(preds / name), pred)
    out = tmp_path / "score.json"
    assert main(["eval", "--pred-dir", str(preds), "--root", str(tiny), "--list", "val.txt", "--dataset", "dubai",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert sum(result["predicted_ignore"]) > 0
    full = np.column_stack([result["confusion_matrix"], result["predicted_ignore"]])
    again = compute_metrics(full, list(result["IoU"]))
    assert again["pixels"] == result["pixels"] == full.sum()
    assert again["mIoU"] == pytest.approx(result["mIoU"]) and again["pixel_acc"] == pytest.approx(result["pixel_acc"])
    assert (tmp_path / "score_confusion.png").stat().st_size > 1000


@pytest.mark.parametrize(("flags", "message"), [
    (["--root", "x"], "--root is only for --pred-dir scoring; with --weights, pass --data-root DIR instead of --root"),
    (["--dataset", "camvid"], ("--dataset is only for --pred-dir scoring; with --weights, pass a config of that "
                               "dataset instead of --dataset (its data.dataset applies)")),
    (["--num-classes", "11"], ("--num-classes is only for --pred-dir scoring; with --weights, drop --num-classes "
                               "(the class count is the config's and the weights')")),
])
def test_each_pred_dir_only_flag_given_with_weights_names_its_own_alternative(capsys, flags, message) -> None:
    # "--root belong to ... pass --data-root" was ungrammatical, and the wrong fix for --dataset and --num-classes.
    assert main(["eval", str(CAMVID), "--weights", "w.pt", *flags]) == 2
    assert capsys.readouterr().err == f"bisenet eval: error: {message}\n"


@pytest.fixture()
def cwd_list(tiny, tmp_path, monkeypatch) -> Path:
    """A cwd holding a one-line val.txt beside the data root's two-line one, and the ground truth as predictions."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "val.txt").write_text("img/t0.png,lab/t0.png\n")  # relative to the data root, as lists are
    (here / "preds").mkdir()
    for label in (tiny / "lab").iterdir():
        (here / "preds" / label.name).write_bytes(label.read_bytes())
    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    bisenet.checkpoint.atomic_save(bisenet.build_model("bisenetv2", cfg.num_classes).state_dict(), here / "w.pt")
    monkeypatch.chdir(here)
    return here


def test_eval_list_written_from_the_cwd_is_that_file_and_a_bare_name_in_both_places_gets_a_note(tiny, cwd_list,
                                                                                               capsys) -> None:
    # `--list ./val.txt` scored the data root's val.txt, and with no note saying which file was read.
    note = (f"note: --list val.txt names both {tiny / 'val.txt'} and val.txt in the current directory: reading "
            f"{tiny / 'val.txt'}, the one under the data root (pass ./NAME or an absolute path for the other)")
    model_run = ["eval", str(CONFIG), "--weights", "w.pt", "--data-root", str(tiny), "--device", "cpu", "--workers", "0"]
    scoring = ["eval", "--pred-dir", "preds", "--root", str(tiny), "--dataset", "dubai"]
    for base in (model_run, scoring):
        assert main([*base, "--list", "./val.txt"]) == 0
        out, err = capsys.readouterr()
        assert re.search(r"^1 images?, ", out, re.MULTILINE) and "note:" not in err, (out, err)
        assert main([*base, "--list", "val.txt"]) == 0
        out, err = capsys.readouterr()
        assert re.search(r"^2 images, ", out, re.MULTILINE) and _notes(err) == [note], (out, err)


def test_split_is_refused_with_a_list_and_with_pred_dir_without_a_config(tiny, cwd_list, capsys) -> None:
    # --split was silently ignored when --list named the list (and by --pred-dir, which has no config's lists).
    assert main(["eval", str(CONFIG), "--weights", "w.pt", "--list", "val.txt", "--split", "train"]) == 2
    assert capsys.readouterr().err == ("bisenet eval: error: --split train picks the config's data.train_list, but "
                                       "--list val.txt names the list to score: drop one of them\n")
    scoring = ["eval", "--pred-dir", "preds", "--root", str(tiny), "--dataset", "dubai"]
    assert main([*scoring, "--list", "val.txt", "--split", "val"]) == 2  # the default, but given
    assert "--split val picks the config's data.val_list, but --list val.txt" in capsys.readouterr().err
    assert main([*scoring, "--split", "val"]) == 2
    assert capsys.readouterr().err == ("bisenet eval: error: --split val picks a CONFIG's data.val_list; without a "
                                       "CONFIG, name the list with --list\n")
