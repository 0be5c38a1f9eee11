"""`Segmenter`, `colorize` and the palette on arrays and weights files (the `bisenet predict` command on images,
folders and videos is in test_predict_cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import bisenet
from bisenet.cli import main
from bisenet.config import load_config, to_dict
from bisenet.data.catalog import DUBAI, generated_palette
from bisenet.data.colour import overlay
from bisenet.errors import BisenetError, ConfigError
from bisenet.predict import FlipWarning, Segmenter, colorize

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"


def test_colorize_and_overlay() -> None:
    mask = np.array([[0, 1], [4, 255]], dtype=np.uint8)
    rgb = colorize(mask, DUBAI.palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == list(DUBAI.palette[0]) and rgb[1, 0].tolist() == list(DUBAI.palette[4])
    assert rgb[1, 1].tolist() == [0, 0, 0]  # ignore / unknown ids are black
    assert colorize(mask.astype(np.int64), DUBAI.palette).tolist() == rgb.tolist()
    huge = np.array([[1, 2**40]], dtype=np.int64)  # a table as long as the id would not fit in memory
    assert colorize(huge, DUBAI.palette).tolist() == [[list(DUBAI.palette[1]), [0, 0, 0]]]
    photo = np.full((2, 2, 3), 200, np.uint8)
    assert overlay(photo, rgb, 0.0).tolist() == photo.tolist() and overlay(photo, rgb, 1.0).tolist() == rgb.tolist()


@pytest.mark.parametrize("n", [2, 3, 5, 8, 19, 171])
def test_generated_palette_keeps_every_class_apart_and_off_the_ignore_black(n):
    # Custom datasets without data.palette get it: a random one gave a binary task two pinks 25 apart.
    colours = np.array(generated_palette(n), dtype=float)
    gaps = np.sqrt(((colours[:, None] - colours[None]) ** 2).sum(-1)) + np.eye(n) * 1e9
    assert gaps.min() >= {2: 400, 3: 250, 5: 250, 8: 150, 19: 100, 171: 35}[n]
    assert colours.max(1).min() >= 100  # nothing near black, the colour of ignore pixels


@pytest.mark.parametrize("dtype", [np.int8, np.int64])
def test_colorize_refuses_negative_ids_instead_of_wrapping(dtype) -> None:
    # numpy indexing would draw -1 with the lookup table's last colour; ids past the palette stay black.
    mask = np.array([[0, -3], [-1, 100]]).astype(dtype)
    with pytest.raises(BisenetError, match="negative id -3"):
        colorize(mask, DUBAI.palette)


def test_segmenter_predicts_at_the_input_size(weights) -> None:
    seg = Segmenter.from_checkpoint(weights, device="cpu")
    assert seg.num_classes == 5 and "dubai preset" in seg.info.source
    assert seg.class_names == list(DUBAI.class_names)
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(37, 53, 3), (37, 53, 3), (20, 90, 3)])
    label = seg.predict(a)
    assert label.shape == (37, 53) and label.dtype == np.uint8 and label.max() < 5
    batch = seg.predict_batch([a, c, b])
    assert [m.shape for m in batch] == [(37, 53), (20, 90), (37, 53)]
    assert np.array_equal(batch[0], label)
    assert seg.colorize(label).shape == (37, 53, 3)
    bare = Segmenter(seg.model, 5)  # a model of one's own, without label info: the 5-class preset, as from a file
    assert bare.info == seg.info and np.array_equal(bare.predict(a), label)
    with pytest.raises(BisenetError, match="RGB uint8"):
        seg.predict(a.astype(np.float32))


def test_segmenter_accepts_gray_and_rgba_and_says_so(weights) -> None:
    seg = Segmenter.from_checkpoint(weights, device="cpu")
    rgb = np.random.default_rng(2).integers(0, 256, size=(33, 40, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((33, 40), 7, np.uint8)])
    assert np.array_equal(seg.predict(rgba), seg.predict(rgb))  # alpha is dropped
    assert seg.predict(rgb[:, :, 0]).shape == (33, 40)
    assert np.array_equal(seg.predict(rgb[:, :, :1]), seg.predict(rgb[:, :, 0]))  # HxWx1 gray, as OpenCV keeps it
    with pytest.raises(BisenetError, match=r"HxWx3 RGB, HxWx4 RGBA, or HxW or HxWx1 gray uint8 array, "
                                           r"got uint8 \(33, 40, 2\)"):
        seg.predict(rgb[:, :, :2])
    # 0-1 floats get the conversion to write, not a silent rescale.
    with pytest.raises(BisenetError, match=r"image 0: float32 pixels; .*\(image \* 255\)\.round\(\)\.astype\(np\.uint8\)"):
        seg.predict(rgb.astype(np.float32) / 255)
    with pytest.raises(BisenetError, match=r"image 1: int64 pixels; .*image\.astype\(np\.uint8\)"):
        seg.predict_batch([rgb, rgb.astype(np.int64)])


def test_segmenter_modes_and_metadata_sources(weights, tmp_path) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(41, 67, 3), dtype=np.uint8)
    for mode in ("ssc", "msf", "mscf"):
        cfg = load_config(CONFIG, {"eval.crop_size": [32, 64], "eval.scales": [0.75, 1.25]})
        seg = Segmenter.from_checkpoint(weights, config=cfg, mode=mode)
        assert seg.predict(image).shape == (41, 67)
    assert seg.info.source == "the config" and seg.protocol.scales == (0.75, 1.25)
    # Our checkpoints carry their config; a 7-class one with no config falls back to generated colours.
    cfg = load_config({"data": {"dataset": "custom", "num_classes": 7, "class_names": list("abcdefg")}})
    own = tmp_path / "own.pt"
    torch.save({"model": bisenet.build_model("bisenetv2", 7).state_dict(), "arch": "bisenetv2", "num_classes": 7,
                "config": to_dict(cfg)}, own)
    stored = Segmenter.from_checkpoint(own)
    assert stored.class_names == list("abcdefg") and "stored config" in stored.info.source
    bare = tmp_path / "bare.pth"
    torch.save(bisenet.build_model("bisenetv2", 7).state_dict(), bare)
    fallback = Segmenter.from_checkpoint(bare)
    assert "generated palette" in fallback.info.source and len(fallback.palette) == 7
    with pytest.raises(BisenetError, match="5 classes"):
        Segmenter.from_checkpoint(bare, config=CONFIG)


def test_16_bit_arrays_get_the_conversion_the_cli_applies_to_16_bit_pngs(weights, tmp_path, capsys) -> None:
    seg = Segmenter.from_checkpoint(weights, device="cpu")
    deep = np.random.default_rng(3).integers(0, 65536, size=(40, 56, 3), dtype=np.uint16)
    with pytest.raises(BisenetError, match=r"image 0: uint16 pixels; .*\(image >> 8\)\.astype\(np\.uint8\) for 16-bit"):
        seg.predict(deep)  # not image.astype(np.uint8), which wraps 65535 to 255 and 256 to 0
    png = tmp_path / "deep.png"
    assert cv2.imwrite(str(png), deep[:, :, ::-1])
    assert main(["predict", "--weights", str(weights), str(png), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--quiet"]) == 0
    cli = cv2.imread(str(tmp_path / "o" / "deep_label.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(seg.predict((deep >> 8).astype(np.uint8)), cli)


def test_class_count_mismatch_names_the_weights_file(weights, tmp_path, capsys) -> None:
    camvid = REPO / "configs" / "bisenetv2_camvid.yaml"
    with pytest.raises(BisenetError) as info:
        Segmenter.from_checkpoint(weights, config=camvid)
    assert str(info.value) == (f"config {camvid} has 11 classes but {weights} predicts 5; "
                               "pass the config the weights were trained with")
    own = tmp_path / "own.pt"  # a stored config that contradicts its own weights
    torch.save({"model": bisenet.build_model("bisenetv2", 5).state_dict(), "arch": "bisenetv2", "num_classes": 5,
                "config": to_dict(load_config(camvid))}, own)
    with pytest.raises(BisenetError, match=f"the checkpoint's stored config has 11 classes but {own} predicts 5"):
        Segmenter.from_checkpoint(own)


def test_predict_refuses_a_path_and_an_image_without_pixels(weights) -> None:
    seg = Segmenter.from_checkpoint(weights, device="cpu")
    photo = str(sorted((EXAMPLE / "val" / "images").iterdir())[0])
    with pytest.raises(BisenetError) as info:
        seg.predict(photo)
    message = str(info.value)
    assert message.startswith(f"image 0: got the path {photo!r}; predict takes an RGB uint8 array: read the file first")
    assert "bisenet predict" in message and "<U" not in message
    encoded = (EXAMPLE / "val" / "images").joinpath(Path(photo).name).read_bytes()  # a web service's upload
    with pytest.raises(BisenetError, match=rf"^image 0: got {len(encoded)} bytes of an encoded file; decode them first"):
        seg.predict(encoded)
    for shape in [(0, 0, 3), (0, 5, 3), (4, 0)]:
        with pytest.raises(BisenetError, match=r"has no pixels; pass an image of at least 1x1"):
            seg.predict(np.zeros(shape, np.uint8))


def test_predict_batch_refuses_one_image_instead_of_taking_each_row_as_one(weights) -> None:
    # Iterating an HxWx3 array gave H masks of shape (W, 3), one per row read as a gray image.
    seg = Segmenter.from_checkpoint(weights, device="cpu")
    rgb = np.random.default_rng(4).integers(0, 256, size=(30, 32, 3), dtype=np.uint8)
    for one in (rgb, rgb[:, :, 0], np.stack([rgb[:, :, 0]] * 3)):  # a 3-D stack of gray images is ambiguous too
        with pytest.raises(BisenetError, match=r"^predict_batch takes a list \(or NxHxWxC array\) of images; got one "
                                               r"[23]-D array .*: use predict\(\) for one image"):
            seg.predict_batch(one)
    stacked = seg.predict_batch(np.stack([rgb, rgb[::-1]]))  # NxHxWx3 still works
    assert [m.shape for m in stacked] == [(30, 32)] * 2 and np.array_equal(stacked[0], seg.predict(rgb))


def test_colorize_refuses_what_is_not_one_integer_label_map(weights) -> None:
    # Both used to pass: an HxWx3 array came back HxWx3x3, and 1.9 was drawn as class 1.
    seg = Segmenter.from_checkpoint(weights, device="cpu")
    for draw in (lambda m: colorize(m, DUBAI.palette), seg.colorize):
        for mask in (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 4, 4), np.int64), np.zeros(3, np.uint8)):
            shape = re.escape(str(mask.shape))
            with pytest.raises(BisenetError, match=rf"^colorize: the mask has shape {shape}; pass one HxW label map"):
                draw(mask)
        for mask, dtype in [(np.array([[1.9]]), "float64"), (np.array([[True, False]]), "bool")]:
            with pytest.raises(BisenetError, match=rf"^colorize: the mask is {dtype}; pass integer class ids"):
                draw(mask)
    assert colorize(np.array([[4]], np.uint64), DUBAI.palette).tolist() == [[list(DUBAI.palette[4])]]


def test_segmenter_refuses_a_class_count_the_model_does_not_predict() -> None:
    # Segmenter(five_class_model, 7) ran with a generated 7-colour palette and ImageNet mean/std.
    model = bisenet.build_model("bisenetv2", 5)
    with pytest.raises(ConfigError) as info:
        Segmenter(model, 7)
    assert str(info.value) == "the model predicts 5 classes but num_classes is 7; pass num_classes=5"
    assert Segmenter(model, 5).num_classes == 5


def test_predict_runs_the_protocol_eval_runs_for_the_same_config(weights, tmp_path) -> None:
    # README: predict's crop, stride, scales and flip come from the config's eval section; it dropped
    # eval.stride (2/3 of the crop instead) and eval.flip, so it labelled images otherwise than eval.
    image = cv2.resize(cv2.imread(str(EXAMPLE / "val" / "images" / "tile1_image_part_008.jpg")), (96, 64))
    label = cv2.resize(cv2.imread(str(EXAMPLE / "val" / "labels" / "tile1_image_part_008.png"), cv2.IMREAD_UNCHANGED),
                       (96, 64), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "t.png"), image)
    cv2.imwrite(str(tmp_path / "t_gt.png"), label)
    (tmp_path / "val.txt").write_text("t.png,t_gt.png\n")
    cfg = load_config(CONFIG, {"data.root": str(tmp_path), "data.val_list": "val.txt", "eval.mode": "ssc",
                               "eval.crop_size": [32, 64], "eval.stride": [16, 32], "eval.flip": True})
    result = bisenet.evaluate(cfg, weights, device="cpu", workers=0, progress=False, save_pred_dir=tmp_path / "pred")
    seg = Segmenter.from_checkpoint(weights, device="cpu", config=cfg, mode="ssc")
    assert seg.protocol.describe() == result["protocol"] == "ssc crop 32x64 stride 16x32 flip"
    saved = cv2.imread(str(tmp_path / "pred" / "t.png"), cv2.IMREAD_UNCHANGED)
    assert (seg.predict(image[:, :, ::-1].copy()) == saved).mean() > 0.99  # float rounding only: near-tie logits
    # eval.flip: false turns off the flip msf runs by default, in predict as in eval.
    with pytest.warns(FlipWarning, match="eval.flip is false in the config: msf runs without flip"):
        assert not Segmenter.from_checkpoint(weights, config=load_config(CONFIG, {"eval.flip": False}),
                                             mode="msf").protocol.flip
    assert Segmenter.from_checkpoint(weights, config=CONFIG, mode="msf").protocol.flip


def test_a_stored_config_with_flip_false_is_said_and_flip_can_be_asked_for(tmp_path, capsys) -> None:
    # Runs before 12-04 stored eval.flip: false as the default; msf then ran without flip, silently.
    cfg = to_dict(load_config(CONFIG, {"eval.flip": False, "eval.scales": [1.0]}))
    model = bisenet.build_model("bisenetv2", cfg["data"]["num_classes"])
    torch.save({"model": model.state_dict(), "arch": "bisenetv2", "num_classes": cfg["data"]["num_classes"],
                "config": cfg}, tmp_path / "old.pt")
    image = next(iter(sorted((EXAMPLE / "val" / "images").iterdir())))
    argv = ["predict", str(image), "--weights", str(tmp_path / "old.pt"), "--out", str(tmp_path / "o"), "--mode", "msf",
            "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "msf scales 1 no flip on cpu" in captured.out.splitlines()[0]
    assert ("note: eval.flip is false in the checkpoint's stored config: msf runs without flip (pass --flip"
            in captured.err)
    assert main([*argv, "--flip"]) == 0
    captured = capsys.readouterr()
    assert "msf scales 1 flip on cpu" in captured.out.splitlines()[0] and "eval.flip" not in captured.err
    with pytest.warns(UserWarning, match="flip=True"):
        seg = Segmenter.from_checkpoint(tmp_path / "old.pt", mode="msf")
    assert not seg.protocol.flip and Segmenter.from_checkpoint(tmp_path / "old.pt", mode="msf", flip=True).protocol.flip
