"""`bisenet data show`: the drawing is the train ids the network gets, in the config's colours."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from test_data_lists import DUBAI, REPO, run_cli  # tests/ is on sys.path


def _label_panel(png: Path, row: int, height: int, width: int) -> np.ndarray:
    """The middle (train ids) panel, RGB, of one row of a `data show` picture whose rows are all `height` tall."""
    from bisenet.data.show import CAPTION, GAP

    rgb = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    top = row * (CAPTION + height + GAP) + CAPTION
    return rgb[top:top + height, width + GAP:2 * width + GAP]


def expected_drawing(label: np.ndarray, palette) -> np.ndarray:
    """The palette's colours, and the grey checkerboard on ignore (255) pixels."""
    from bisenet.data.colour import colorize
    from bisenet.data.show import _checkerboard

    drawn = colorize(label, palette)
    drawn[label == 255] = _checkerboard(*label.shape)[label == 255]
    return drawn


def test_show_draws_the_train_ids_the_network_gets(tmp_path, capsys):
    from bisenet.config import load_config
    from bisenet.data import build_dataset
    config = REPO / "configs" / "bisenetv2_dubai.yaml"
    (tmp_path / "two.txt").write_text((DUBAI / "train.txt").read_text().splitlines()[0] + "\n"
                                      + (DUBAI / "train.txt").read_text().splitlines()[1] + "\n")  # both 512x414
    cfg = load_config(config, [f"data.root={DUBAI}"])
    common = ["data", "show", str(config), "--data-root", str(DUBAI), "--list", str(tmp_path / "two.txt")]
    # As stored (panel width = the images' own 512 px: no resizing), row 2 is list line 2.
    code, out = run_cli(capsys, *common, "--out", str(tmp_path / "plain.png"), "--width", "512")
    assert code == 0 and f"wrote {tmp_path / 'plain.png'}" in out
    dataset = build_dataset(cfg, "val", list_file=tmp_path / "two.txt")
    label = dataset[1][1].numpy()
    drawn = _label_panel(tmp_path / "plain.png", 1, *label.shape)
    np.testing.assert_array_equal(drawn, expected_drawing(label, cfg.data.palette))
    # Augmented: the crop, scale and flip training draws for epoch 3 (256x256 crops in this config).
    code, out = run_cli(capsys, *common, "--out", str(tmp_path / "aug.png"), "--augment", "--epoch", "3",
                        "--width", "256", "--count", "1")
    label = build_dataset(cfg, "train", list_file=tmp_path / "two.txt")[(3, 0)][1].numpy()
    drawn = _label_panel(tmp_path / "aug.png", 0, *label.shape)
    np.testing.assert_array_equal(drawn, expected_drawing(label, cfg.data.palette))
    assert cv2.imread(str(tmp_path / "aug.png")).shape[0] < cv2.imread(str(tmp_path / "plain.png")).shape[0]


def test_show_mistakes_are_one_line_and_write_nothing(tmp_path, capsys):
    config = str(REPO / "configs" / "bisenetv2_dubai.yaml")
    code, out = run_cli(capsys, "data", "show", config, "--data-root", str(DUBAI), "--split", "val", "--augment",
                        "--out", str(tmp_path / "x.png"))
    assert code == 2 and "--augment draws the training augmentation; it needs --split train" in out
    code, out = run_cli(capsys, "data", "show", config, "--data-root", str(DUBAI), "--out", str(tmp_path))
    assert code == 2 and "is a folder; pass a file path such as" in out and out.count("\n") == 1
    code, out = run_cli(capsys, "data", "show", config, "--data-root", str(tmp_path / "nowhere"),
                        "--out", str(tmp_path / "x.png"))
    assert code == 2 and "nowhere" in out and out.count("\n") == 1
    for flags, message in ((["--epoch", "-3", "--augment"], "--epoch -3: epochs count from 0"),
                           (["--epoch", "2"], "bisenet data show: error: --epoch 2 needs --augment"),
                           (["--width", "100000"], "need 1-100 samples and 32-2048 pixels per panel"),
                           (["--out", str(tmp_path / "x.jpg")], "the drawing is a PNG (lossless colours); name it x.png")):
        argv = ["data", "show", config, "--data-root", str(DUBAI), "--out", str(tmp_path / "y.png"), *flags]
        code, out = run_cli(capsys, *argv)
        assert code == 2 and message in out and out.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_show_draws_ignore_pixels_as_a_checkerboard_not_a_class_colour(tmp_path, capsys):
    # With a black class (VOC's background), ignore pixels drawn black would look like that class.
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.full((64, 64, 3), 100, np.uint8))
    label = np.zeros((64, 64), np.uint8)
    label[:, 32:] = 255
    cv2.imwrite(str(tmp_path / "lab" / "a.png"), label)
    (tmp_path / "list.txt").write_text("img/a.png,lab/a.png\n")
    (tmp_path / "voc.yaml").write_text("data:\n  num_classes: 2\n  palette: [[0, 0, 0], [128, 0, 0]]\n")
    code, _ = run_cli(capsys, "data", "show", str(tmp_path / "voc.yaml"), "--data-root", str(tmp_path), "--list",
                      "list.txt", "--width", "64", "--out", str(tmp_path / "s.png"))
    assert code == 0
    drawn = _label_panel(tmp_path / "s.png", 0, 64, 64)
    assert (drawn[:, :32] == 0).all()  # class 0 in its colour, black
    assert set(np.unique(drawn[:, 32:])) == {110, 200}  # ignore: the grey checkerboard


def test_show_says_when_the_list_has_fewer_pairs_than_count(tmp_path, capsys):
    config = REPO / "configs" / "bisenetv2_dubai.yaml"
    (tmp_path / "two.txt").write_text("".join((DUBAI / "val.txt").read_text().splitlines(keepends=True)[:2]))
    argv = ["data", "show", str(config), "--data-root", str(DUBAI), "--list", str(tmp_path / "two.txt"),
            "--width", "64", "--out", str(tmp_path / "s.png")]
    code, out = run_cli(capsys, *argv, "--count", "5")
    assert code == 0
    assert out.splitlines()[0] == f"{tmp_path / 'two.txt'} has 2 pairs; showing 2, not --count 5"
    code, out = run_cli(capsys, *argv, "--count", "2")  # as many as asked: no note
    assert code == 0 and out == f"wrote {tmp_path / 's.png'}\n"


def test_show_captions_too_long_for_the_width_end_in_an_ellipsis_not_a_cut_letter(tmp_path, capsys):
    from bisenet.data.show import CAPTION, CAPTION_SCALE, FONT, fit_text

    name = "M" * 60  # wide letters: cut at the picture's edge, one would leave ink in the last columns
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "img" / f"{name}.png"), np.full((32, 32, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "lab" / f"{name}.png"), np.zeros((32, 32), np.uint8))
    (tmp_path / "list.txt").write_text(f"img/{name}.png,lab/{name}.png\n")
    (tmp_path / "c.yaml").write_text("data:\n  num_classes: 2\n")
    code, _ = run_cli(capsys, "data", "show", str(tmp_path / "c.yaml"), "--data-root", str(tmp_path), "--list",
                      "list.txt", "--width", "32", "--out", str(tmp_path / "s.png"))
    assert code == 0
    bar = cv2.imread(str(tmp_path / "s.png"))[:CAPTION]
    inked = np.flatnonzero((bar < 128).any(axis=(0, 2)))
    assert inked.size and inked.max() < bar.shape[1] - 4  # the text stops inside the bar's right margin
    shown = fit_text(f"list.txt line 1: {name}.png", bar.shape[1] - 8, CAPTION_SCALE)
    assert shown.startswith("list.txt line 1: M") and shown.endswith("...")
    assert cv2.getTextSize(shown, FONT, CAPTION_SCALE, 1)[0][0] <= bar.shape[1] - 8
    assert fit_text("short", 200, CAPTION_SCALE) == "short"


def test_show_words_a_bad_pair_as_data_check_does(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "lab" / "a.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "c.yaml").write_text("data:\n  num_classes: 2\n")
    (tmp_path / "header.txt").write_text("image,label\nimg/a.png,lab/a.png\n")
    (tmp_path / "missing.txt").write_text("img/a.png,lab/gone.png\n")
    for name, fix in (("header.txt", "that looks like a header line: delete it (list files have no header)"),
                      ("missing.txt", "regenerate it with `bisenet data lists` or fix the paths")):
        code, check = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", name, "--num-classes", "2")
        code, show = run_cli(capsys, "data", "show", str(tmp_path / "c.yaml"), "--data-root", str(tmp_path), "--list",
                             name, "--width", "32", "--count", "1", "--out", str(tmp_path / "s.png"))
        assert code == 2 and show == f"bisenet data show: error: {check.splitlines()[0]}\n" and show.endswith(f"; {fix}\n")


def test_show_refuses_a_crop_train_refuses_in_trains_words(tmp_path, capsys):
    # The config check at load: data show drew crops that `bisenet train` then refused.
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  num_classes: 5\naugment:\n  crop_size: [250, 300]\n")
    code, out = run_cli(capsys, "data", "show", str(config), "--data-root", str(DUBAI), "--augment",
                        "--out", str(tmp_path / "s.png"))
    assert code == 2 and out == (f"bisenet data show: error: {config}: augment.crop_size = 250x300 must be "
                                 "multiples of 32 (the network's stride; crops enter it as they are): use 256x320\n")
    assert not (tmp_path / "s.png").exists()
