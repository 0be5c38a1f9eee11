"""One-line errors whose fix must work: calibration folders, --crop/--stride sizes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_eval_flags import CONFIG, EXAMPLE, model, tiny  # noqa: F401  (fixtures; tests/ is on sys.path)
from test_eval_outputs import _eval_argv, _one_line_error, weights  # noqa: F401

import bisenet
from bisenet.cli import main
from bisenet.config import load_config
from bisenet.deploy.images import read_folder
from bisenet.errors import BisenetError
from bisenet.evaluation import evaluate


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(BisenetError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_calibration_list_file_names_a_folder_that_holds_images(tmp_path) -> None:
    # "train.txt is a file, not a folder; pass ... (e.g. dubai)", and dubai was then refused: no images directly in it.
    data = Path(shutil.copytree(EXAMPLE, tmp_path / "dubai"))
    images = data / "train" / "images"
    assert _error(read_folder, data / "train.txt", (32, 32)) == (
        f"{data / 'train.txt'} is a file, not a folder; pass the folder of .jpg/.png images (e.g. {images})")
    assert _error(read_folder, data / "README.md", (32, 32)).endswith(f"(e.g. {images})")  # found below its folder
    for folder in (data, data / "train"):
        assert _error(read_folder, folder, (32, 32)) == (
            f"no images directly in {folder} (subfolders are not searched); {images} holds 42 image(s): pass that folder")
    assert len(read_folder(images, (32, 32), limit=2)) == 2  # the folder named works
    # A list whose first image lies elsewhere: that image's folder, the one calibration can read.
    (tmp_path / "other.txt").write_text(f"# header\n{data / 'val' / 'images' / 'tile1_image_part_008.jpg'},x.png\n")
    assert _error(read_folder, tmp_path / "other.txt", (32, 32)).endswith(f"(e.g. {data / 'val' / 'images'})")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert _error(read_folder, empty, (32, 32)).startswith(f"{empty}: no images (.jpg, ")
    (empty / "notes.txt").write_text("x")
    assert _error(read_folder, empty / "notes.txt", (32, 32)) == (
        f"{empty / 'notes.txt'} is a file, not a folder; pass the folder of .jpg/.png images")


def test_a_crop_or_stride_that_does_not_fit_names_the_flag_and_a_crop_that_works(tiny, model, weights,  # noqa: F811
                                                                                capsys) -> None:
    # "crop 100x100 must be ..." named no flag.
    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt"})
    assert main(_eval_argv(tiny, weights, "--mode", "ssc", "--crop", "100x100")) == 2
    assert _one_line_error(capsys) == ("--crop 100x100 (crop= in Python): must be positive multiples of 32 (the "
                                       "network's stride); try --crop 128x128")
    assert main(_eval_argv(tiny, weights, "--mode", "ssc", "--crop", "128x128")) == 0
    capsys.readouterr()
    assert _error(evaluate, cfg, model, mode="ssc", crop=(64, 64), stride=(96, 32), device="cpu", progress=False) == (
        "--stride 96x32 (stride= in Python): must be positive and no larger than the crop 64x64 (larger strides "
        "leave pixels unseen)")
    assert _error(bisenet.evaluation.make_protocol, "ssc", crop=(0, 64)).startswith("--crop 0x64 (crop= in Python)")
    # The config's eval.stride is no flag: it is named as the config's.
    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt", "eval.stride": [96, 96]})
    assert _error(evaluate, cfg, model, mode="ssc", crop=(64, 64), device="cpu", progress=False) == (
        "eval.stride 96x96 (the config's): must be positive and no larger than the crop 64x64 (larger strides leave "
        "pixels unseen); fix eval.stride or pass --stride HxW")
    result = evaluate(cfg, model, mode="ssc", crop=(64, 64), stride=(32, 32), device="cpu", workers=0, progress=False)
    assert result["protocol"] == "ssc crop 64x64 stride 32x32"


def test_size_errors_name_the_flag_given(capsys) -> None:
    # "size 100x100: ..." named no flag; export takes --height/--width, bench and info --size.
    for argv, flag in ((["bench", "--size", "100x100", "--iters", "1"], "--size 100x100"),
                       (["info", "--size", "100x64"], "--size 100x64"),
                       (["export", "--weights", str(EXAMPLE.parents[1] / "weights" / "bisenetv2_camvid.safetensors"),
                         "--out", "never.onnx", "--height", "100"], "--height/--width 100x1024")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bisenet {argv[0]}: error: {flag}: height and width must be positive multiples of 32")


def test_a_calibration_hint_never_names_a_folder_of_label_maps(tmp_path) -> None:
    # Breadth first and alphabetical, gtFine/ (masks) came before leftImg8bit/: int8 would calibrate on labels.
    import cv2
    import numpy as np

    for folder in ("gtFine/val/a", "leftImg8bit/val/a"):
        (tmp_path / folder).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / folder / "x.png"), np.zeros((8, 8, 3), np.uint8))
    message = _error(read_folder, tmp_path, (64, 64))
    assert f"{tmp_path / 'leftImg8bit' / 'val' / 'a'} holds 1 image(s)" in message and "gtFine" not in message
