"""`bisenet eval` outputs that overwrote its inputs, ambiguous or empty scoring, and Python argument checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_eval_flags import CONFIG, model, tiny  # noqa: F401  (fixtures; tests/ is on sys.path)

import bisenet
from bisenet.cli import main
from bisenet.config import load_config
from bisenet.errors import BisenetError, DataError
from bisenet.evaluation import evaluate, score_predictions


@pytest.fixture()
def data(tiny, tmp_path) -> Path:  # noqa: F811
    """A private copy of tiny (two 40x56 Dubai images): tests here may find it overwritten."""
    return Path(shutil.copytree(tiny, tmp_path / "ds"))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cfg(root: Path):
    return load_config(CONFIG, {"data.root": str(root), "data.val_list": "val.txt"})


def _eval_argv(root: Path, weights: Path, *flags: str) -> list[str]:
    return ["eval", str(CONFIG), "--weights", str(weights), "--data-root", str(root), "--list", "val.txt",
            "--device", "cpu", "--workers", "0", *flags]


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    *before, line, end = captured.err.split("\n")
    # Only the progress bar of a run (written with \r) may come before the one error line.
    assert line.startswith("bisenet eval: error: ") and end == "" and all(x.startswith("\r") for x in before), \
        captured.err
    assert "mIoU" not in captured.out
    return line[len("bisenet eval: error: "):]


@pytest.fixture(scope="module")
def weights(tmp_path_factory, model) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("w") / "v2.pth"
    torch.save(model.state_dict(), path)
    return path


def test_save_pred_into_the_datasets_own_folders_is_refused_before_any_work(data, model, weights, tmp_path,  # noqa: F811
                                                                            capsys) -> None:
    # --save-pred IMAGE_FOLDER wrote each STEM.png prediction over the user's image (or label) of that name.
    before = _snapshot(data)
    with pytest.raises(BisenetError) as info:
        evaluate(_cfg(data), model, device="cpu", workers=0, progress=False, save_pred_dir=data / "img")
    assert str(info.value) == (
        f"--save-pred {data / 'img'}: prediction {data / 'img' / 't0.png'} would overwrite the image "
        f"{data / 'img' / 't0.png'} of {data / 'val.txt'}; pass a folder that holds none of the list's images and "
        f"labels, e.g. --save-pred {data / 'img_pred'}")
    assert main(_eval_argv(data, weights, "--save-pred", str(data / "lab"))) == 2
    assert f"prediction {data / 'lab' / 't0.png'} would overwrite the label {data / 'lab' / 't0.png'}" in \
        _one_line_error(capsys)
    (tmp_path / "link").symlink_to(data / "lab")  # another spelling of the same files: caught by samefile
    with pytest.raises(BisenetError, match=r"prediction .*link.t0\.png would overwrite the label .*lab.t0\.png"):
        evaluate(_cfg(data), model, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "link")
    assert _snapshot(data) == before


def test_json_that_would_overwrite_an_input_is_refused_before_any_work(data, weights, tmp_path, capsys) -> None:
    # --json LIST (or weights, config, an image) replaced that file with the metrics after the run.
    preds = tmp_path / "preds"
    shutil.copytree(data / "lab", preds)
    before = _snapshot(data)
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.read_text())
    cases = [
        (_eval_argv(data, weights, "--json", str(data / "val.txt")),
         (f"--json {data / 'val.txt'}: it would overwrite the list file {data / 'val.txt'}; pass a new file, "
          f"e.g. --json {data / 'metrics.json'}")),
        (_eval_argv(data, weights, "--json", str(weights)), f"--json {weights}: it would overwrite the weights"),
        (["eval", "--pred-dir", str(preds), "--root", str(data), "--list", "val.txt", "--dataset", "dubai",
          "--json", str(data / "img" / "t1.png")], f"it would overwrite the image {data / 'img' / 't1.png'}"),
        (["eval", "--pred-dir", str(preds), "--root", str(data), "--list", "val.txt", "--dataset", "dubai",
          "--json", str(preds / "t0.png")], f"it would overwrite the prediction {preds / 't0.png'}"),
        (["eval", str(config), "--pred-dir", str(preds), "--json", str(config)], "it would overwrite the config"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        assert expected in _one_line_error(capsys)
    # The plots beside the JSON count too: m_confusion.png next to m.json.
    plot = tmp_path / "m_confusion.png"
    shutil.copy(weights, plot)
    assert main(_eval_argv(data, plot, "--json", str(tmp_path / "m.json"))) == 2
    assert _one_line_error(capsys) == (f"--json {tmp_path / 'm.json'}: its plot {plot} would overwrite the weights "
                                       f"{plot}; pass a new file, e.g. --json {tmp_path / 'metrics.json'}")
    with pytest.raises(BisenetError, match="would overwrite the label"):
        evaluate(_cfg(data), weights, device="cpu", workers=0, progress=False, json_path=data / "lab" / "t0.png")
    assert _snapshot(data) == before and (preds / "t0.png").read_bytes() == before["lab/t0.png"]
    assert not (tmp_path / "m.json").exists()
    out = tmp_path / "r" / "m.json"  # a new file: written with its plots, as before
    assert main(_eval_argv(data, weights, "--json", str(out))) == 0
    assert f"wrote {out}, {out.with_name('m_confusion.png')}, {out.with_name('m_iou.png')}" in capsys.readouterr().out
    assert all(p.is_file() for p in (out, out.with_name("m_confusion.png"), out.with_name("m_iou.png")))


def test_pred_dir_with_both_kinds_of_prediction_for_one_image_is_refused(data, tmp_path, capsys) -> None:
    # t0.png (an older eval --save-pred) and t0_label.png (predict) both there: one was silently preferred.
    preds = tmp_path / "preds"
    shutil.copytree(data / "lab", preds)
    shutil.copy(preds / "t0.png", preds / "t0_label.png")
    with pytest.raises(DataError) as info:
        score_predictions(preds, data, "val.txt", dataset="dubai")
    assert str(info.value) == (
        f"{preds}: both {preds / 't0_label.png'} and {preds / 't0.png'} are predictions of img/t0.png; remove one "
        "of them (or score a folder that holds one kind: predict's STEM_label.png or eval --save-pred's STEM.png)")
    assert main(["eval", "--pred-dir", str(preds), "--root", str(data), "--list", "val.txt", "--dataset", "dubai"]) == 2
    assert "are predictions of img/t0.png; remove one of them" in _one_line_error(capsys)
    # The dataset's own image or label of that name is no prediction: predict's files beside the photos score.
    for k in (0, 1):
        shutil.copy(data / "lab" / f"t{k}.png", data / "img" / f"t{k}_label.png")
    assert score_predictions(data, data, "val.txt", dataset="dubai")["mIoU"] == 1.0


def _all_ignore(root: Path) -> None:
    for label in (root / "lab").iterdir():
        cv2.imwrite(str(label), np.full((40, 56), 255, np.uint8))


def test_labels_that_are_all_ignore_are_an_error_not_a_score_of_n_a(data, model, weights, tmp_path,  # noqa: F811
                                                                     capsys) -> None:
    # Exit 0 with every metric "n/a" and 0 pixels: the label encoding was wrong, not the model.
    _all_ignore(data)
    expected = (f"{data / 'val.txt'}: its labels hold only the ignore index (data.ignore_index 255), so no pixel "
                "was scored; check the label encoding (raw ids vs train ids)")
    with pytest.raises(DataError) as info:
        evaluate(_cfg(data), model, device="cpu", workers=0, progress=False)
    assert str(info.value).startswith(expected)
    out = tmp_path / "m.json"
    assert main(_eval_argv(data, weights, "--json", str(out))) == 2
    assert _one_line_error(capsys).startswith(expected) and not out.exists()
    preds = tmp_path / "preds"
    shutil.copytree(data / "lab", preds)
    assert main(["eval", "--pred-dir", str(preds), "--root", str(data), "--list", "val.txt", "--dataset", "dubai",
                 "--json", str(out)]) == 2
    assert _one_line_error(capsys).startswith(expected) and not out.exists()
    # An unlabelled split (Cityscapes test) is still predicted for --save-pred: a note, not an error.
    assert main(_eval_argv(data, weights, "--save-pred", str(tmp_path / "written"), "--json", str(out))) == 0
    captured = capsys.readouterr()
    assert "no pixel was scored: metrics n/a (an unlabelled split such as Cityscapes test?)" in captured.err
    assert sorted(p.name for p in (tmp_path / "written").iterdir()) == ["t0.png", "t1.png"] and out.exists()


def test_pred_dir_on_the_label_folder_itself_is_missing_predictions_not_a_perfect_score(data, capsys) -> None:
    # Each label was excluded as its own prediction, then taken back as the fallback STEM.png: mIoU 100.
    code = main(["eval", "--pred-dir", str(data / "lab"), "--root", str(data), "--list", "val.txt", "--dataset", "dubai"])
    assert code == 2 and _one_line_error(capsys).startswith(f"2 of 2 predictions missing, first {data / 'lab' / 't0.png'}")


def test_crop_and_stride_take_hxw_strings_in_python(tiny, model) -> None:  # noqa: F811
    # crop="64x64" was read character by character (6x4); now parsed as the CLI parses --crop.
    result = evaluate(_cfg(tiny), model, mode="ssc", crop="32x64", stride="32x32", device="cpu", workers=0,
                      progress=False)
    assert result["protocol"] == "ssc crop 32x64 stride 32x32"


@pytest.mark.parametrize("kwargs, expected", [
    ({"mode": "ssc", "crop": 256}, ("crop=256: expected (H, W) whole numbers or an 'HxW' string, e.g. "
                                    "crop=(512, 1024) or crop='512x1024'")),
    ({"mode": "ssc", "crop": (32.5, 32)}, "crop=(32.5, 32): expected (H, W) whole numbers"),
    ({"mode": "ssc", "crop": (64, 64), "stride": "x"}, "stride='x': expected HxW such as 512x1024, got 'x'"),
    ({"mode": "msf", "scales": 1.0}, "scales=1.0: expected a list of numbers such as [0.75, 1, 1.25]"),
    ({"mode": "msf", "scales": "0.5,1"}, "scales='0.5,1': expected a list of numbers"),
    ({"mode": "msf", "scales": [1, 0.5, 1.0]}, "--scales 1 0.5 1: scale 1 is given twice; pass each scale once"),
    ({"workers": "2"}, "--workers '2': must be a whole number, 0 (load in the main process) or more"),
    ({"workers": -1}, "--workers -1: must be a whole number, 0 (load in the main process) or more"),
    ({"batch_size": "2"}, "--batch-size '2': must be a whole number of at least 1"),
    ({"flip": "no"}, "flip='no': expected True, False or None"),
    ({"calibration_images": "4"}, "--calibration-images '4': must be at least 1 (images int8 is calibrated on), a whole number"),
    ({"json_path": 5}, "json_path=5: expected a path (a str or pathlib.Path) or None"),
])
def test_python_arguments_of_the_wrong_kind_are_one_line_errors(tiny, model, kwargs, expected) -> None:  # noqa: F811
    # They were raw TypeErrors (crop=256: 'int' object is not subscriptable) or misread values.
    with pytest.raises(BisenetError) as info:
        evaluate(_cfg(tiny), model, device="cpu", progress=False, **kwargs)
    assert str(info.value).startswith(expected), str(info.value)


def test_repeated_scales_on_the_command_line_are_refused(tiny, weights, capsys) -> None:  # noqa: F811
    assert main(_eval_argv(tiny, weights, "--mode", "msf", "--scales", "1", "1")) == 2
    assert _one_line_error(capsys) == "--scales 1 1: scale 1 is given twice; pass each scale once"


def test_a_callers_module_keeps_its_training_mode(tiny) -> None:  # noqa: F811
    # evaluate(model) left a training model in eval mode (and a frozen eval-mode part then trained again).
    torch.manual_seed(0)
    net = bisenet.build_model("bisenetv2", 5).train()
    frozen = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    evaluate(_cfg(tiny), net, device="cpu", workers=0, progress=False)
    assert net.training and not frozen.training
    assert sum(m.training for m in net.modules()) == len(list(net.modules())) - 1
    wrong = bisenet.build_model("bisenetv2", 3).train()  # fails after eval(): 3 classes for a 5-class dataset
    with pytest.raises(BisenetError, match="the model predicts 3 classes but the dataset has 5"):
        evaluate(_cfg(tiny), wrong, device="cpu", workers=0, progress=False)
    assert all(m.training for m in wrong.modules())


def _jpeg_split(root: Path, label_suffix: str = "") -> str:
    """The tiny split turned into .jpg photos and labels named STEM{label_suffix}.png: the list file's name."""
    lines = []
    for k in (0, 1):
        cv2.imwrite(str(root / "img" / f"t{k}.jpg"), cv2.imread(str(root / "img" / f"t{k}.png")))
        (root / "img" / f"t{k}.png").unlink()
        (root / "lab" / f"t{k}.png").rename(root / "lab" / f"t{k}{label_suffix}.png")
        lines.append(f"img/t{k}.jpg,lab/t{k}{label_suffix}.png\n")
    (root / "jpg.txt").write_text("".join(lines))
    return "jpg.txt"


def test_save_pred_into_a_folder_of_the_lists_images_or_labels_is_refused(data, weights, tmp_path, capsys) -> None:
    # x.png beside x.jpg overwrote nothing, so it passed; then `predict` on that folder segmented the masks as
    # photos and `data lists` paired photos with predictions.
    listed = _jpeg_split(data, "_gt")
    argv = ["eval", str(CONFIG), "--weights", str(weights), "--data-root", str(data), "--list", listed,
            "--device", "cpu", "--workers", "0"]
    before = _snapshot(data)
    for folder, kind, source in ((data / "img", "image", data / "img" / "t0.jpg"),
                                 (data / "lab", "label", data / "lab" / "t0_gt.png")):
        assert main([*argv, "--save-pred", str(folder)]) == 2
        assert _one_line_error(capsys) == (
            f"--save-pred {folder}: prediction {folder / 't0.png'} would land in {folder}, beside the {kind} "
            f"{source} of {data / listed}, where `predict` and `data lists` would take predictions for data; pass a "
            f"folder of their own, e.g. --save-pred {folder.with_name(folder.name + '_pred')}")
    assert _snapshot(data) == before and not (data / "img_pred").exists()
    # The fix it names works, as do a fresh folder beside the data and the dataset root (it holds only the list).
    for folder in (data / "img_pred", tmp_path / "fresh", data):
        assert main([*argv, "--save-pred", str(folder)]) == 0, folder
        capsys.readouterr()
        assert (folder / "t0.png").is_file() and (folder / "t1.png").is_file()


def test_save_pred_into_a_mirrored_label_tree_is_refused_but_elsewhere_is_not(data, model, tmp_path) -> None:  # noqa: F811
    # Cityscapes-like trees: photos under leftImg8bit/val/CITY, labels under gtFine/val/CITY (the same subfolders).
    lines = []
    for k in (0, 1):
        for tree, src, name in (("leftImg8bit", "img", f"t{k}_leftImg8bit.png"), ("gtFine", "lab", f"t{k}_gtFine.png")):
            (data / tree / "val" / f"c{k}").mkdir(parents=True, exist_ok=True)
            shutil.copy(data / src / f"t{k}.png", data / tree / "val" / f"c{k}" / name)
        lines.append(f"leftImg8bit/val/c{k}/t{k}_leftImg8bit.png,gtFine/val/c{k}/t{k}_gtFine.png\n")
    (data / "city.txt").write_text("".join(lines))
    cfg = load_config(CONFIG, {"data.root": str(data), "data.val_list": "city.txt"})
    with pytest.raises(BisenetError) as info:
        evaluate(cfg, model, device="cpu", workers=0, progress=False, save_pred_dir=data / "gtFine" / "val")
    city = data / "gtFine" / "val" / "c0"
    assert (f"prediction {city / 't0_leftImg8bit.png'} would land in {city}, beside the label {city / 't0_gtFine.png'}"
            in str(info.value))
    evaluate(cfg, model, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "out")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "out/c0/t0_leftImg8bit.png", "out/c1/t1_leftImg8bit.png"]


def test_pred_dir_on_the_lists_own_folders_says_they_hold_the_data_not_predictions(data, capsys) -> None:
    # "2 of 2 predictions missing, first LAB/t0.png" while that file exists: it is the list's label, never a prediction.
    fix = "pass the folder predict/eval --save-pred wrote"
    base = ["eval", "--root", str(data), "--list", "val.txt", "--dataset", "dubai", "--pred-dir"]
    assert main([*base, str(data / "lab")]) == 2
    assert _one_line_error(capsys) == (
        f"2 of 2 predictions missing, first {data / 'lab' / 't0.png'}: --pred-dir {data / 'lab'} is the list's label "
        f"folder: its files are the ground truth, not predictions; {fix}")
    with pytest.raises(DataError) as info:
        score_predictions(data / "img", data, "val.txt", dataset="dubai")
    assert str(info.value).endswith(f"--pred-dir {data / 'img'} is the list's image folder: its files are the photos, "
                                    f"not predictions; {fix}")
    # One prediction there (predict's STEM_label.png beside the labels): the miss is named as the label it is.
    shutil.copy(data / "lab" / "t1.png", data / "lab" / "t1_label.png")
    with pytest.raises(DataError) as info:
        score_predictions(data / "lab", data, "val.txt", dataset="dubai")
    assert str(info.value) == (f"1 of 2 predictions missing, first {data / 'lab' / 't0.png'}: {data / 'lab' / 't0.png'} "
                               f"is the list's own label ({data / 'val.txt'} line 1), not a prediction; {fix}")


def test_json_over_a_runs_stored_config_or_log_is_refused_but_an_old_report_is_replaced(data, model, tmp_path,  # noqa: F811
                                                                                       capsys) -> None:
    # With no CONFIG, `--json RUN/config.yaml` replaced the run's config (which resume reads) with the metrics.
    from bisenet.checkpoint import atomic_save
    from bisenet.config import to_dict

    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.yaml"
    config.write_text(CONFIG.read_text())
    (run / "train.log").write_text("step 1 loss 2.0\n")
    weights = run / "best.pt"
    atomic_save({"model": model.state_dict(), "config": to_dict(_cfg(data))}, weights)
    argv = ["eval", "--weights", str(weights), "--data-root", str(data), "--list", "val.txt", "--device", "cpu",
            "--workers", "0"]
    for target in (config, run / "train.log"):
        before = target.read_bytes()
        assert main([*argv, "--json", str(target)]) == 2
        assert _one_line_error(capsys) == (
            f"--json {target}: that file exists and is not a metrics report (writing would lose it); pass a new "
            f"file, e.g. --json {target.with_name(target.stem + '_metrics.json')}")
        assert target.read_bytes() == before
    report = run / "m.json"
    for _ in range(2):  # the second run replaces the first one's report and plots
        assert main([*argv, "--json", str(report)]) == 0
        assert "mIoU" in report.read_text()
    capsys.readouterr()
    # A photo that happens to bear a plot's name is not replaced either.
    photo = run / "holiday_iou.png"
    shutil.copy(data / "img" / "t0.png", photo)
    before = photo.read_bytes()
    assert main([*argv, "--json", str(run / "holiday.json")]) == 2
    assert _one_line_error(capsys) == (
        f"--json {run / 'holiday.json'}: its plot {photo} exists and is not an earlier plot (writing would lose it); "
        f"pass another name, e.g. --json {run / 'metrics.json'}")
    assert photo.read_bytes() == before and not (run / "holiday.json").exists()
