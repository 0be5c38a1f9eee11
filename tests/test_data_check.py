"""`bisenet data check|convert` through bisenet.cli.main, on real files in temp folders."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_data_lists import DUBAI, REPO, SHARED, _touch_png, needs_shared, run_cli  # tests/ is on sys.path

CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


# ---------------------------------------------------------------- convert


@needs_shared
def test_convert_cityscapes_matches_official_and_is_idempotent(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    shutil.copytree(SHARED / "cityscapes_sample" / "gtFine", root / "gtFine")
    sources = sorted(root.rglob("*_gtFine_labelIds.png"))
    assert len(sources) == 5
    code, out = run_cli(capsys, "data", "convert", "cityscapes", str(root), "--workers", "2")
    assert code == 0 and "converted 5, up to date 0, failed 0" in out
    for source in sources:
        raw = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
        expected = np.full_like(raw, 255)
        for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
            expected[raw == label_id] = train_id
        target = source.with_name(source.name.replace("_labelIds.png", "_labelTrainIds.png"))
        np.testing.assert_array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), expected)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*_labelTrainIds.png")}
    code, out = run_cli(capsys, "data", "convert", "cityscapes", str(root))
    assert code == 0 and "converted 0, up to date 5" in out
    assert stamps == {p: p.stat().st_mtime_ns for p in root.rglob("*_labelTrainIds.png")}
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temp files behind
    newer = time.time_ns() + 10**10
    os.utime(sources[0], ns=(newer, newer))  # an edited source is converted again
    code, out = run_cli(capsys, "data", "convert", "cityscapes", str(root))
    assert "converted 1, up to date 4" in out


def test_convert_without_gtfine_is_one_line_error(tmp_path, capsys):
    code, out = run_cli(capsys, "data", "convert", "cityscapes", str(tmp_path))
    assert code == 2 and "no *_gtFine_labelIds.png files under" in out and out.count("\n") == 1


def test_convert_names_a_broken_source_with_one_fix(tmp_path, capsys):
    label = tmp_path / "gtFine" / "val" / "x" / "x_000000_000000_gtFine_labelIds.png"
    label.parent.mkdir(parents=True)
    cv2.imwrite(str(label), np.full((8, 8), 7, np.uint8))
    label.write_bytes(label.read_bytes()[:-20])
    code, out = run_cli(capsys, "data", "convert", "cityscapes", str(tmp_path))
    assert code == 1 and "failed 1" in out
    assert "truncated (file ends early); re-extract it from gtFine_trainvaltest.zip" in out and "re-copy" not in out



# ---------------------------------------------------------------- check


def test_check_summary_on_bundled_dubai(capsys):
    code, out = run_cli(capsys, "data", "check", "--root", str(DUBAI), "--list", "val.txt", "--dataset", "dubai",
                        "--workers", "2")
    assert code == 0
    assert "12 pairs, no problems" in out and "building" in out and "RGB mean/std" in out
    code, out = run_cli(capsys, "data", "check", "--config", str(REPO / "configs" / "bisenetv2_dubai.yaml"),
                        "--root", str(DUBAI), "--split", "val")
    assert code == 0 and "12 pairs" in out


def test_check_counts_read_in_the_singular_for_one(tmp_path, capsys):
    # One pair, and six image sizes: the summary shows five and "1 more size".
    lines = []
    for k in range(6):
        cv2.imwrite(str(tmp_path / f"i{k}.png"), np.zeros((4, 4 + k, 3), np.uint8))
        cv2.imwrite(str(tmp_path / f"l{k}.png"), np.zeros((4, 4 + k), np.uint8))
        lines.append(f"i{k}.png,l{k}.png\n")
    (tmp_path / "one.txt").write_text(lines[0])
    (tmp_path / "six.txt").write_text("".join(lines))
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "one.txt", "--num-classes", "2")
    assert code == 0 and "\n1 pair, no problems\n" in out
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "six.txt", "--num-classes", "2")
    assert code == 0 and "6 pairs, no problems" in out and out.split("sizes (WxH): ")[1].splitlines()[0].endswith(
        ", ... 1 more size")


@pytest.fixture
def broken(tmp_path):
    """A small dataset with one good pair and one file per kind of problem."""
    good_label = np.zeros((6, 8), np.uint8)
    pairs = {}

    def add(name, image=None, label=None):
        image = np.full((6, 8, 3), 90, np.uint8) if image is None else image
        cv2.imwrite(str(tmp_path / "img" / f"{name}.png"), image)
        cv2.imwrite(str(tmp_path / "lab" / f"{name}.png"), good_label if label is None else label)
        pairs[name] = f"img/{name}.png,lab/{name}.png"

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    add("good")
    add("missing")
    (tmp_path / "lab" / "missing.png").unlink()
    add("truncated")
    data = (tmp_path / "img" / "truncated.png").read_bytes()
    (tmp_path / "img" / "truncated.png").write_bytes(data[:-20])
    add("rgb", label=np.dstack([good_label, good_label, good_label + 128]))
    add("gray3", label=np.dstack([good_label] * 3))  # a grayscale mask saved as RGB
    add("range", label=np.array([[0, 1, 7, 9, 255, 0, 0, 0]] * 6, np.uint8))
    add("size", label=np.zeros((5, 8), np.uint8))
    return tmp_path, pairs


@pytest.mark.parametrize("case, message", [
    ("missing", r"line 1: label .*missing.png not found; regenerate it with `bisenet data lists`"),
    ("truncated", r"line 1: image .*truncated.png is truncated"),
    ("rgb", r"line 1: label .*rgb.png has 3 channels .*map each palette colour to its id"),
    ("gray3", r"line 1: label .*gray3.png has 3 channels, but its 3 colour channels are equal: save it as a "
              r"single-channel \(grayscale\) PNG$"),
    ("range", r"line 1: label .*range.png has values 7, 9 outside \[0, 2\) that are not the ignore index 255"),
    ("size", r"line 1: image .*size.png is 8x6 but label .*size.png is 8x5 \(WxH\)"),
])
def test_check_reports_each_problem(broken, capsys, case, message):
    root, pairs = broken
    (root / "one.txt").write_text(pairs[case] + "\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "one.txt", "--num-classes", "2")
    assert code == 1
    problem = out.splitlines()[0]
    assert problem.startswith(str(root / "one.txt"))
    assert re.search(message, problem), problem
    assert out.splitlines()[-1] == f"1 problem in {root / 'one.txt'} (1 pair)"


def test_check_names_a_header_line_and_quoted_paths(broken, capsys):
    # Spreadsheet exports: "image,label" on line 1, or every path in quotes.
    root, pairs = broken
    (root / "csv.txt").write_text("image,label\n" + pairs["good"] + "\n")
    (root / "quoted.txt").write_text('"img/good.png","lab/good.png"\n')
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "csv.txt", "--num-classes", "2")
    assert code == 1 and out.count("that looks like a header line: delete it") == 2 and "line 2" not in out
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "quoted.txt", "--num-classes", "2")
    assert code == 1 and out.count("remove the quotes around the paths") == 2


def test_check_all_problems_in_order_plus_list_errors(broken, capsys):
    root, pairs = broken
    lines = [pairs[k] for k in ("good", "missing", "truncated", "rgb", "range", "size")] + ["just-one-path.png"]
    (root / "all.txt").write_text("\n".join(lines) + "\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "all.txt", "--num-classes", "2",
                        "--workers", "2")
    assert code == 1
    reported = out.splitlines()[:-1]
    assert len(reported) == 6 and "line 7: malformed line 'just-one-path.png'" in reported[0]
    assert [int(line.split(" line ")[1].split(":")[0]) for line in reported[1:]] == [2, 3, 4, 5, 6]
    (root / "empty.txt").write_text("")
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "empty.txt", "--num-classes", "2")
    assert code == 1 and "empty.txt: list is empty" in out
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "nope.txt", "--num-classes", "2")
    assert code == 2 and "list file" in out and "not found" in out and out.count("\n") == 1
    assert f"looked for {root / 'nope.txt'} and {Path.cwd() / 'nope.txt'}); check the --list path" in out
    assert "data.train_list" not in out  # the list came from --list, not from a config
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "all.txt")
    assert code == 2 and "--num-classes N is required" in out


def test_check_notes_binary_masks_saved_as_0_255_and_label_map_fixes_them(tmp_path, capsys):
    _touch_png(tmp_path / "img" / "a.png", 3)
    _touch_png(tmp_path / "lab" / "a.png")
    cv2.imwrite(str(tmp_path / "lab" / "a.png"), np.array([[0, 0, 0, 255]] * 4, np.uint8))  # class 1 saved as 255
    (tmp_path / "l.txt").write_text("img/a.png,lab/a.png\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--num-classes", "2")
    assert code == 0 and "(absent)" in out and out.splitlines()[-1] == (
        "note: class 1 never occurs and 25.0% of pixels are the ignore index 255: if 255 marks a class in your masks "
        "(e.g. 0/255 binary masks), map it, e.g. data.label_map: {0: 0, 255: 1} (values left out of the map are "
        "ignored); then check with `bisenet data check --config CFG`")
    (tmp_path / "c.yaml").write_text(f"data:\n  root: {tmp_path}\n  num_classes: 2\n  train_list: l.txt\n"
                                     "  label_map: {0: 0, 255: 1}\n")
    code, out = run_cli(capsys, "data", "check", "--config", str(tmp_path / "c.yaml"))
    assert code == 0 and "(0.00% ignored)" in out and "75.00%" in out and "25.00%" in out
    assert "absent" not in out and "note:" not in out


def test_check_dataset_applies_label_map(tmp_path, capsys):
    _touch_png(tmp_path / "a.png", 3)
    cv2.imwrite(str(tmp_path / "a_gtFine_labelIds.png"), np.array([[7, 26, 0, 33]] * 4, np.uint8))
    (tmp_path / "l.txt").write_text("a.png,a_gtFine_labelIds.png\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--num-classes", "19")
    assert code == 1 and "values 26, 33 outside [0, 19)" in out
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--dataset",
                        "cityscapes")
    assert code == 0 and out.count("33.33%") == 3  # road, car and bicycle; id 0 is ignored


def test_check_refuses_class_counts_8_bit_labels_cannot_hold_and_notes_jpeg_labels(broken, capsys):
    root, pairs = broken
    (root / "one.txt").write_text(pairs["good"] + "\n")
    for count in ("0", "300"):
        code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "one.txt", "--num-classes", count)
        assert code == 2 and f"--num-classes {count} must lie in [1, 255]" in out
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "one.txt", "--num-classes", "5",
                        "--ignore-index", "2")
    assert code == 2 and "--ignore-index 2 must lie in [num classes, 255]" in out
    cv2.imwrite(str(root / "lab" / "good.jpg"), np.zeros((6, 8), np.uint8))  # in range, yet a JPEG
    (root / "jpeg.txt").write_text("img/good.png,lab/good.jpg\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", "jpeg.txt", "--num-classes", "2")
    # A note, not a problem (exit 0): without PNG originals there is nothing better to train on.
    assert code == 0 and "note: 1 label is a JPEG (e.g. " in out and "good.jpg), whose lossy compression" in out


def test_check_blames_jpeg_compression_for_a_jpeg_labels_bad_values(tmp_path, capsys):
    label = cv2.imread(str(DUBAI / "val" / "labels" / min(os.listdir(DUBAI / "val" / "labels"))), -1)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((*label.shape, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), label)  # ringing at class edges: values above 4 and below 255
    (tmp_path / "l.txt").write_text("a.png,a.jpg\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--num-classes", "5")
    assert code == 1 and "outside [0, 5)" in out
    assert "it is a JPEG, whose lossy compression invents values at class edges: save the labels as lossless PNG" in out


def test_check_says_an_exif_orientation_turns_the_image(tmp_path, capsys):
    from PIL import Image

    photo = Image.fromarray(np.full((6, 8, 3), 90, np.uint8))  # 8x6 as stored, shown 6x8 after orientation 6
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "a.jpg", exif=exif.tobytes())
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((6, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((6, 9), np.uint8))
    (tmp_path / "l.txt").write_text("a.jpg,a.png\na.jpg,b.png\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--num-classes", "2")
    first, second = out.splitlines()[:2]
    assert code == 1 and "is 6x8 but label" in first and "is 8x6 (WxH), each other's transpose" in first
    assert "EXIF orientation tag (6: rotate 90 degrees clockwise) is applied on reading" in first
    assert "strip the tag" in first and "rotate the label to match" in first and "resize" not in first
    assert "EXIF orientation" in second and "give both the same size" in second


def test_check_notes_label_values_a_partial_label_map_sends_to_ignore(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 5, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "l.png"), np.array([[0, 1, 2, 3, 4, 255, 0, 1, 4, 4]] * 2, np.uint8).reshape(4, 5))
    (tmp_path / "l.txt").write_text("a.png,l.png\n")
    (tmp_path / "c.yaml").write_text(f"data:\n  root: {tmp_path}\n  num_classes: 2\n  train_list: l.txt\n"
                                     "  label_map: {0: 0, 1: 1}\n")
    code, out = run_cli(capsys, "data", "check", "--config", str(tmp_path / "c.yaml"))
    assert code == 0 and "(60.00% ignored)" in out  # 2, 3, 4 and 255
    assert out.splitlines()[-1] == ("note: label values 2, 3, 4 (50.0% of pixels) are not in data.label_map and "
                                    "become the ignore index 255; add them to data.label_map if they are classes")
    code, out = run_cli(capsys, "data", "check", "--config", str(REPO / "configs" / "bisenetv2_dubai.yaml"),
                        "--root", str(DUBAI), "--list", str(DUBAI / "val.txt"))
    assert code == 0 and "12 pairs" in out and "not in data.label_map" not in out  # a dataset's own map: no note


def test_check_reports_values_a_named_dataset_does_not_have_and_notes_mostly_ignored_labels(tmp_path, capsys):
    # Values outside a dataset's ids are another dataset or encoding, not "ignore": the map would hide them.
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 20, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "coco.png"), np.full((4, 20), 182, np.uint8))  # 1-based COCO-Stuff ids
    cv2.imwrite(str(tmp_path / "a_gtFine_labelIds.png"), np.array([[7, 26, 0, 33] * 5] * 4, np.uint8))
    cv2.imwrite(str(tmp_path / "road.png"), np.array([[0] * 19 + [7]] * 4, np.uint8))  # 95% unlabelled
    for name in ("coco", "a_gtFine_labelIds", "road"):
        (tmp_path / f"{name}.txt").write_text(f"a.png,{name}.png\n")
    check = ("data", "check", "--root", str(tmp_path), "--list")
    code, out = run_cli(capsys, *check, "coco.txt", "--dataset", "cocostuff")
    assert code == 1 and out.splitlines()[0] == (
        f"{tmp_path / 'coco.txt'} line 1: label {tmp_path / 'coco.png'} has value 182, which is not a label id of "
        "cocostuff (0-181, 255); wrong --dataset / data.dataset, or labels in another encoding?")
    code, out = run_cli(capsys, *check, "a_gtFine_labelIds.txt", "--dataset", "camvid")
    assert code == 1 and "has values 26, 33, which are not label ids of camvid (0-11, 255); wrong --dataset" in out
    code, out = run_cli(capsys, *check, "a_gtFine_labelIds.txt", "--dataset", "cityscapes")
    assert code == 0 and "note" not in out
    code, out = run_cli(capsys, *check, "road.txt", "--dataset", "cityscapes")  # ids 0 and 7 both are Cityscapes'
    assert code == 0 and "(95.00% ignored)" in out and out.splitlines()[-1] == (
        "note: 95.0% of pixels are the ignore index 255, so little is left to learn: wrong --dataset / "
        "data.dataset, or labels in another encoding? `bisenet data show CFG` draws what the network gets")
    code, out = run_cli(capsys, *check, "road.txt", "--num-classes", "8")  # 0 and 7 are classes here
    assert code == 0 and "note" not in out
    (tmp_path / "c.yaml").write_text(f"data:\n  dataset: cityscapes\n  root: {tmp_path}\n  train_list: coco.txt\n"
                                     "  label_map: {7: 0}\n")  # a user's own map: left-out values stay a note
    code, out = run_cli(capsys, "data", "check", "--config", str(tmp_path / "c.yaml"))
    assert code == 1 and out.splitlines()[0] == (  # all ignore: nothing to learn, as train refuses it
        f"{tmp_path / 'coco.txt'}: every pixel of the 1 label read maps to the ignore index 255, so there is nothing "
        "to learn; data.label_map's keys must be the values stored in the label files (they hold 182, which it leaves "
        "out)")


@needs_shared
def test_check_passes_the_real_datasets_under_their_own_names(tmp_path, capsys):
    # The named datasets' ids: CamVid (void 11), Cityscapes labelIds and, after convert, trainIds, Dubai.
    city = tmp_path / "cityscapes"
    shutil.copytree(SHARED / "cityscapes_sample", city)
    runs = [(SHARED / "camvid", "val", "camvid"), (SHARED / "dubai_aerial", "val", "dubai"),
            (city, "train", "cityscapes"), (city, "val", "cityscapes")]
    for root, split, dataset in runs:
        code, out = run_cli(capsys, "data", "check", "--root", str(root), "--list", str(root / f"{split}.txt"),
                            "--dataset", dataset, "--workers", "2")
        assert code == 0 and "no problems" in out and "note" not in out, out
    assert run_cli(capsys, "data", "convert", "cityscapes", str(city), "--workers", "2")[0] == 0
    assert run_cli(capsys, "data", "lists", "cityscapes", str(city), "--train-ids")[0] == 0
    for split in ("train", "val"):
        assert "labelTrainIds.png" in (city / f"{split}.txt").read_text()
        code, out = run_cli(capsys, "data", "check", "--root", str(city), "--list", str(city / f"{split}.txt"),
                            "--dataset", "cityscapes", "--workers", "2")
        assert code == 0 and "no problems" in out and "note" not in out, out


def test_percent_never_rounds_a_part_to_all_or_none():
    from bisenet.data.check import percent
    assert [percent(s) for s in (0, 1, 0.5, 0.99999, 0.00001)] == ["0.0", "100.0", "50.0", ">99.9", "<0.1"]
    assert percent(0.99999, 2) == ">99.99" and percent(0.123456, 2) == "12.35"


def test_check_notes_repeated_lines(tmp_path, capsys):
    # Two lists concatenated by hand: every repeated pair would count twice in training and in mIoU.
    for name in ("a", "b"):
        _touch_png(tmp_path / "img" / f"{name}.png", 3)
        _touch_png(tmp_path / "lab" / f"{name}.png")
        cv2.imwrite(str(tmp_path / "lab" / f"{name}.png"), np.array([[0, 1, 0, 1]] * 4, np.uint8))
    (tmp_path / "l.txt").write_text("img/a.png,lab/a.png\nimg/b.png,lab/b.png\nimg/a.png,lab/a.png\n"
                                    "img/b.png,lab/b.png\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--num-classes", "2")
    assert code == 0 and out.splitlines()[-1] == (
        "note: line 3 repeats line 1 (the same image and label) and 1 more line repeat earlier ones: a repeated "
        "pair counts twice in training and evaluation; remove repeats unless you mean to oversample")
    (tmp_path / "l.txt").write_text("img/a.png,lab/a.png\nimg/b.png,lab/b.png\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--num-classes", "2")
    assert code == 0 and "note:" not in out


def test_check_and_show_read_the_list_under_root_over_a_same_named_one_in_the_cwd_and_say_so(tmp_path, capsys,
                                                                                              monkeypatch):
    root = tmp_path / "R"
    (root / "imgs").mkdir(parents=True)
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "imgs" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(root / "masks" / "a.png"), np.zeros((8, 8), np.uint8))
    (root / "train.txt").write_text("imgs/a.png,masks/a.png\n")
    (tmp_path / "train.txt").write_text("imgs/b.png,masks/b.png\n")  # another dataset's list, in the cwd
    (tmp_path / "c.yaml").write_text(f"data:\n  num_classes: 2\n  root: {root}\n")
    monkeypatch.chdir(tmp_path)
    note = (f"note: --list train.txt names both {Path('R') / 'train.txt'} and train.txt in the current directory: "
            f"reading {Path('R') / 'train.txt'}, the one under the data root (pass ./NAME or an absolute path for the other)")
    code, out = run_cli(capsys, "data", "check", "--root", "R", "--list", "train.txt", "--num-classes", "2")
    assert code == 0 and out.splitlines()[:3] == [note, f"{Path('R') / 'train.txt'}:", "1 pair, no problems"]
    code, out = run_cli(capsys, "data", "show", "c.yaml", "--data-root", "R", "--list", "train.txt", "--width", "32",
                        "--out", "s.png")
    assert code == 0 and out.splitlines()[0] == note
    (root / "train.txt").unlink()  # only the cwd's: read, and named as found
    code, out = run_cli(capsys, "data", "check", "--root", "R", "--list", "train.txt", "--num-classes", "2")
    assert code == 1 and out.startswith(f"train.txt line 1: image {Path('R') / 'imgs' / 'b.png'} not found")
    code, out = run_cli(capsys, "data", "check", "--list", "train.txt", "--num-classes", "2")  # root . : one file
    assert code == 1 and "note:" not in out
    (root / "train.txt").write_text("imgs/a.png,masks/a.png\n")  # both again: ./train.txt is the cwd's, no note
    code, out = run_cli(capsys, "data", "check", "--root", "R", "--list", "./train.txt", "--num-classes", "2")
    assert code == 1 and "note:" not in out and "imgs/b.png" in out.replace(os.sep, "/")


def test_check_says_a_lines_columns_look_swapped_when_its_label_is_a_photo_and_its_image_a_mask(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "swapped.txt").write_text("a.png,a.jpg\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "swapped.txt", "--num-classes", "2")
    assert code == 1 and out.splitlines()[0] == (
        f"{tmp_path / 'swapped.txt'} line 1: label {tmp_path / 'a.jpg'} is a colour JPEG, a photo, and image "
        f"{tmp_path / 'a.png'} a single-channel mask: the list's columns look swapped; each line is 'image,label', "
        "so put the photo first (for `bisenet data lists pairs`: the photo folder is --images, the mask folder --labels)")


@pytest.mark.parametrize("kind, label", [("instanceIds", np.array([[7, 26001]] * 2, np.uint16)),
                                         ("color", np.full((2, 2, 4), (128, 64, 128, 255), np.uint8))])
def test_check_points_cityscapes_instance_and_colour_files_at_the_label_ids(tmp_path, capsys, kind, label):
    name = "aachen_000000_000019"
    cv2.imwrite(str(tmp_path / f"{name}_leftImg8bit.png"), np.zeros((2, 2, 3), np.uint8))
    cv2.imwrite(str(tmp_path / f"{name}_gtFine_{kind}.png"), label)
    (tmp_path / "train.txt").write_text(f"{name}_leftImg8bit.png,{name}_gtFine_{kind}.png\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", "train.txt",
                        "--dataset", "cityscapes")
    holds = "instance ids (class id x 1000 + instance number)" if kind == "instanceIds" else "colours for viewing"
    assert code == 1 and out.splitlines()[0] == (
        f"{tmp_path / 'train.txt'} line 1: label {tmp_path / f'{name}_gtFine_{kind}.png'} is a Cityscapes file of "
        f"{holds}, not class ids: point the list at the *_gtFine_labelIds.png files (here {name}_gtFine_labelIds.png), "
        "or at *_gtFine_labelTrainIds.png after `bisenet data convert cityscapes ROOT`; `bisenet data lists "
        "cityscapes ROOT` writes such lists")


def test_check_refuses_flags_it_would_ignore_and_notes_flags_that_replace_the_configs(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "train.txt").write_text("a.png,m.png\n")
    (tmp_path / "c.yaml").write_text(f"data:\n  num_classes: 5\n  root: {tmp_path}\n  train_list: train.txt\n")
    plain = ("data", "check", "--root", str(tmp_path), "--list", "train.txt", "--num-classes", "5")
    for argv, message in (
            ((*plain, "--split", "val"), "bisenet data check: error: --split val picks the list of a --config's "
                                         "data.val_list; without --config, name the list with --list"),
            ((*plain, "--workers", "0"), "bisenet data check: error: --workers 0: need at least 1 (files read in "
                                         "parallel; 1 reads them one by one)"),
            (("data", "convert", "cityscapes", str(tmp_path), "--workers", "-1"),
             "bisenet data convert: error: --workers -1: need at least 1 (files read in parallel; 1 reads them one "
             "by one)"),
            (("data", "check", "--config", str(tmp_path / "c.yaml"), "--dataset", "cityscapes"),
             "bisenet data check: error: --dataset cityscapes with --config: the config's data.dataset (custom) says "
             "how labels are read; drop --dataset or change data.dataset in the config")):
        code, out = run_cli(capsys, *argv)
        assert code == 2 and out == message + "\n"
    config = ("data", "check", "--config", str(tmp_path / "c.yaml"))
    code, out = run_cli(capsys, *config, "--num-classes", "7", "--ignore-index", "200")
    assert code == 0 and out.splitlines()[:2] == [
        f"note: --num-classes 7 replaces {tmp_path / 'c.yaml'}'s data.num_classes 5 for this check (training uses "
        "the config's; to train with it, change data.num_classes there)",
        f"note: --ignore-index 200 replaces {tmp_path / 'c.yaml'}'s data.ignore_index 255 for this check (training "
        "uses the config's; to train with it, change data.ignore_index there)"]
    assert "    6 " in out  # 7 classes checked
    code, out = run_cli(capsys, *config, "--num-classes", "5", "--ignore-index", "255")  # the config's own: no note
    assert code == 0 and "note:" not in out


def test_a_corrupt_tiff_is_one_line_without_opencvs_own_log_lines(tmp_path, capfd):
    # libtiff's errors came out as OpenCV log lines on the process's stderr, besides our reason.
    cv2.imwrite(str(tmp_path / "a.tif"), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "a.tif").write_bytes(data[: len(data) // 2])
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64), np.uint8))
    (tmp_path / "l.txt").write_text("a.tif,a.png\n")
    code, out = run_cli(capfd, "data", "check", "--root", str(tmp_path), "--list", "l.txt", "--num-classes", "2")
    assert code == 1 and "a.tif is not a readable image" in out and "TIFF" not in out


def test_decoding_on_many_threads_puts_opencvs_log_level_back(tmp_path):
    # Each call saved and restored the level itself: overlapping calls could leave OpenCV silent for good.
    from concurrent.futures import ThreadPoolExecutor

    from bisenet.data.decode import read_image

    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8))
    before = cv2.utils.logging.getLogLevel()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: read_image(tmp_path / "a.png"), range(400)))
    assert cv2.utils.logging.getLogLevel() == before
