"""Data-side findings of a black-box test: notes and refusals of `data check`, `data lists` and the config checks,
on small real files built in temp folders from the bundled Dubai example and ../shared/data."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_data_lists import DUBAI, SHARED, needs_shared, run_cli  # tests/ is on sys.path

from bisenet.config import load_config
from bisenet.errors import ConfigError, DataError


def _dubai_photo(index: int = 0) -> np.ndarray:
    """A real aerial photo (BGR) from the bundled example."""
    return cv2.imread(str(sorted((DUBAI / "train" / "images").glob("*.jpg"))[index]))


def _binary_case(root: Path, share: float = 0.04, count: int = 3) -> Path:
    """`count` real photos with 0/255 masks whose 255 foreground covers `share` of the pixels."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    for i in range(count):
        photo = _dubai_photo(i)
        mask = np.zeros(photo.shape[:2], np.uint8)
        side = int(np.sqrt(share * mask.size))
        mask[:side, :side] = 255
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), photo)
        cv2.imwrite(str(root / "labels" / f"{i}.png"), mask)
        lines.append(f"images/{i}.jpg,labels/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt"


# ---------------------------------------------------------------- 1: 0/255 binary masks


def test_binary_masks_with_a_small_foreground_get_the_255_note(tmp_path, capsys):
    listed = _binary_case(tmp_path, share=0.04)
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", str(listed), "--num-classes", "2")
    assert code == 0 and "no problems" in out
    assert "note: class 1 never occurs and 4." in out and "data.label_map: {0: 0, 255: 1}" in out


def test_train_sample_check_prints_the_binary_mask_note(tmp_path, capsys):
    from bisenet.data import validate_split

    _binary_case(tmp_path, share=0.04)
    cfg = load_config({"data": {"num_classes": 2, "root": str(tmp_path), "train_list": "train.txt"}})
    validate_split(cfg, "train", sample=8)  # as `bisenet train` calls it: no problem, but the note on stderr
    err = capsys.readouterr().err
    assert "(3 labels read): class 1 never occurs" in err and "0/255 binary masks" in err


# ---------------------------------------------------------------- 2: EXIF orientation


def test_an_exif_orientation_that_keeps_the_size_is_noted(tmp_path, capsys):
    listed = _binary_case(tmp_path, share=0.2, count=2)
    photo = Image.open(tmp_path / "images" / "0.jpg")
    exif = photo.getexif()
    exif[0x0112] = 3  # rotate 180 degrees: same size, so no size mismatch to say it
    photo.save(tmp_path / "images" / "0.jpg", exif=exif.tobytes())
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", str(listed), "--num-classes", "2")
    assert code == 0
    assert "has the EXIF orientation tag 3 (rotate 180 degrees), which is applied on reading" in out
    assert "strip the tag" in out


# ---------------------------------------------------------------- 3: wrong --dataset


def _camvid_list(tmp_path: Path, count: int) -> Path:
    lines = (SHARED / "camvid" / "train.txt").read_text().splitlines()[:count]
    listed = tmp_path / "camvid.txt"
    listed.write_text("\n".join(lines) + "\n")
    return listed


@needs_shared
def test_camvid_labels_checked_as_cityscapes_get_the_wrong_dataset_note(tmp_path, capsys):
    check = ("data", "check", "--root", str(SHARED / "camvid"), "--workers", "2", "--list")
    code, out = run_cli(capsys, *check, str(_camvid_list(tmp_path, 3)), "--dataset", "cityscapes")
    assert code == 0 and re.search(r"note: \d\d\.\d% of pixels are the ignore index 255, so little is left to learn: "
                                   r"wrong --dataset / data.dataset", out)  # ~80% ignored: below the old 90%
    listed = _camvid_list(tmp_path, 20)  # over 20 labels, absent classes count too
    code, out = run_cli(capsys, *check, str(listed), "--dataset", "cityscapes")
    assert code == 0 and re.search(r"note: \d\d\.\d% of pixels are the ignore index 255 and 1\d of 19 cityscapes "
                                   r"classes never occur, so little is left to learn", out)
    code, out = run_cli(capsys, *check, str(listed), "--dataset", "camvid")
    assert code == 0 and "note" not in out  # the right preset: ~4% void


def test_a_correct_cocostuff_subset_gets_no_wrong_dataset_note(tmp_path, capsys):
    # COCO-Stuff is long-tailed (~8-10 of 171 classes an image): 24 correct labels leave most classes absent.
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    photo, lines = _dubai_photo()[:16, :16], []
    for i in range(24):
        label = np.zeros((16, 16), np.uint8)  # raw id 0: person
        for j, raw in enumerate((95 + i % 7, 105 + i % 5, 123 + i % 11, 156 + i % 3)):  # used stuff ids
            label[4 * j: 4 * j + 4, 8:] = raw
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), photo)
        cv2.imwrite(str(tmp_path / "labels" / f"{i}.png"), label)
        lines.append(f"images/{i}.jpg,labels/{i}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", str(tmp_path / "train.txt"),
                        "--dataset", "cocostuff", "--workers", "1")
    assert code == 0 and "no problems" in out and "note" not in out, out


# ---------------------------------------------------------------- 4: COCO-Stuff labels holding train ids


def test_cocostuff_labels_holding_train_ids_get_a_note(tmp_path, capsys):
    listed = _binary_case(tmp_path, count=2)
    for label in (tmp_path / "labels").glob("*.png"):
        ids = np.zeros(cv2.imread(str(label), cv2.IMREAD_UNCHANGED).shape, np.uint8)
        ids[:, : ids.shape[1] // 2] = 11  # train id 11 (stop sign's neighbour): an unused raw id of COCO-Stuff
        ids[: ids.shape[0] // 2] = 25
        cv2.imwrite(str(label), ids)
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", str(listed), "--dataset", "cocostuff")
    assert code == 0
    assert "note: labels hold values 11, 25, which COCO-Stuff's raw label files never use" in out
    assert "*_labelTrainIds.png" in out


# ---------------------------------------------------------------- 5 and 9: lists pairs naming rules


def _named(folder: Path, names: list[str], mask: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.zeros((8, 8), np.uint8) if mask else _dubai_photo()[:8, :8])


def test_pairs_takes_the_naming_rule_that_pairs_the_most_files(tmp_path, capsys):
    _named(tmp_path / "images", ["road_mask.jpg", "road.jpg", "field.jpg"], mask=False)
    _named(tmp_path / "labels", ["road_mask_mask.png", "road_mask.png", "field_mask.png"], mask=True)
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "images", "--labels", "labels",
                        "--out", "train.txt")
    assert code == 0 and "fit two naming rules" in out and "road.jpg <-> road_mask.png" in out
    assert (tmp_path / "train.txt").read_text().splitlines() == [
        "images/field.jpg,labels/field_mask.png", "images/road.jpg,labels/road_mask.png",
        "images/road_mask.jpg,labels/road_mask_mask.png"]


def test_pairs_refuses_two_naming_rules_that_pair_as_many(tmp_path, capsys):
    # a_gt.png: a_gt.jpg's, or a.jpg's? By name a_gt and d pair, by <image name>_gt a and c: 2 pairs each. c_gt.png,
    # which the name rule leaves unpaired, is what puts the suffix rule in play at all.
    _named(tmp_path / "images", ["a.jpg", "a_gt.jpg", "c.jpg", "d.jpg"], mask=False)
    _named(tmp_path / "labels", ["a_gt.png", "c_gt.png", "d.png"], mask=True)
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "images", "--labels", "labels",
                        "--out", "train.txt")
    assert code == 2 and "fit two naming rules that pair them differently" in out and out.count("\n") == 1
    assert not (tmp_path / "train.txt").exists()


def test_pairs_ignores_a_suffix_rule_that_pairs_no_unpaired_label(tmp_path, capsys):
    # Tiles a, a_0: every _0 label already pairs by name, so <image name>_0 is no rival rule; the note left is the
    # case-only one on IMG_7.
    _named(tmp_path / "images", ["a.jpg", "a_0.jpg", "b.jpg", "b_0.jpg", "IMG_7.jpg"], mask=False)
    _named(tmp_path / "labels", ["a.png", "a_0.png", "b.png", "b_0.png", "img_7.png"], mask=True)
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "images", "--labels", "labels",
                        "--out", "train.txt")
    assert code == 0 and "paired by the same name" not in out and "naming rule" not in out
    assert "1 image matches a label only in letter case (e.g. IMG_7.jpg <-> img_7.png)" in out
    assert (tmp_path / "train.txt").read_text().split() == [f"images/{n}.jpg,labels/{n}.png" for n in ("a", "a_0", "b", "b_0")]


def test_pairs_by_name_without_a_tie_over_frame_suffixes(tmp_path, capsys):
    # a_1.png and b_1.png pair by name; z.png and y.png pair by no rule: not a tie between two rules.
    _named(tmp_path / "images", ["a.jpg", "a_1.jpg", "b.jpg", "b_1.jpg"], mask=False)
    _named(tmp_path / "labels", ["a_1.png", "b_1.png", "z.png", "y.png"], mask=True)
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "images", "--labels", "labels",
                        "--out", "train.txt")
    assert code == 0 and "naming rule" not in out and "paired by the same name" not in out
    assert (tmp_path / "train.txt").read_text().splitlines() == [
        "images/a_1.jpg,labels/a_1.png", "images/b_1.jpg,labels/b_1.png"]


def test_pairs_by_name_over_a_suffix_rule_still_gives_the_rename_hint(tmp_path, capsys):
    # c_0.png pairs only by <image name>_0, which pairs 3 against the name rule's 4: the name rule stands, and the
    # rename hint for c_0.png still follows its note.
    _named(tmp_path / "images", ["a.jpg", "a_0.jpg", "b.jpg", "b_0.jpg", "c.jpg"], mask=False)
    _named(tmp_path / "labels", ["a.png", "a_0.png", "b.png", "b_0.png", "c_0.png"], mask=True)
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "images", "--labels", "labels",
                        "--out", "train.txt")
    assert "paired by the same name (4 pairs), not by the rule <image name>_0 (3)" in out
    assert "1 label is named <image name>_0 (e.g. c_0.png)" in out and "rename them" in out
    assert "for f in" not in out  # a loop over *_0.png would move a_0.png onto a.png


def test_pairs_says_when_names_differ_only_in_letter_case(tmp_path, capsys):
    _named(tmp_path / "images", ["IMG_0.JPG", "IMG_1.JPG"], mask=False)
    _named(tmp_path / "labels", ["img_0.png", "img_1.png"], mask=True)
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "images", "--labels", "labels",
                        "--out", "train.txt")
    assert code == 2 and "2 images match a label only in letter case (e.g. IMG_0.JPG <-> img_0.png)" in out


def test_lists_of_a_layout_refuses_the_pairs_folders(tmp_path, capsys):
    code, out = run_cli(capsys, "data", "lists", "cityscapes", str(tmp_path), "--out", str(tmp_path / "x"),
                        "--images", "foo")
    assert code == 2 and "--images applies to `bisenet data lists pairs` only" in out


# ---------------------------------------------------------------- 6: mmsegmentation's COCO-Stuff layout


def test_lists_cocostuff_finds_mmsegmentation_train_id_labels(tmp_path, capsys):
    for split in ("train2017", "val2017"):
        _named(tmp_path / "images" / split, ["000000000009.jpg"], mask=False)
        _named(tmp_path / "annotations" / split, ["000000000009_labelTrainIds.png"], mask=True)
    code, out = run_cli(capsys, "data", "lists", "cocostuff", str(tmp_path))
    assert code == 0 and "train.txt: 1 pair" in out and "without" not in out
    assert (tmp_path / "train.txt").read_text() == \
        "images/train2017/000000000009.jpg,annotations/train2017/000000000009_labelTrainIds.png\n"


# ---------------------------------------------------------------- 7: a FIFO in a list


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_check_refuses_a_fifo_without_opening_it(tmp_path, capsys):
    listed = _binary_case(tmp_path, count=1)
    (tmp_path / "labels" / "0.png").unlink()
    os.mkfifo(tmp_path / "labels" / "0.png")  # opening it for reading would block until a writer comes
    result = []
    worker = threading.Thread(target=lambda: result.append(run_cli(capsys, "data", "check", "--root", str(tmp_path),
                                                                   "--list", str(listed), "--num-classes", "2")),
                              daemon=True)
    worker.start()
    worker.join(60)
    if not result:  # unblock the hung reader so the test run can end
        with open(tmp_path / "labels" / "0.png", "wb"):
            pass
        pytest.fail("data check hung on a FIFO")
    code, out = result[0]
    assert code == 1
    assert "train.txt line 1: label " in out and "0.png is a FIFO (named pipe), not a regular file" in out


# ---------------------------------------------------------------- 8: Cityscapes' blank test labels


@needs_shared
def test_cityscapes_test_split_blank_labels_are_said_to_be_for_prediction(tmp_path, capsys):
    source = next((SHARED / "cityscapes_sample" / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    image = tmp_path / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000019_leftImg8bit.png"
    label = tmp_path / "gtFine" / "test" / "berlin" / "berlin_000000_000019_gtFine_labelIds.png"
    image.parent.mkdir(parents=True)
    label.parent.mkdir(parents=True)
    shutil.copy(source, image)
    height, width = cv2.imread(str(image)).shape[:2]
    cv2.imwrite(str(label), np.zeros((height, width), np.uint8))  # the test split's labels: all "unlabeled" (0)
    (tmp_path / "test.txt").write_text(f"{image.relative_to(tmp_path)},{label.relative_to(tmp_path)}\n")
    code, out = run_cli(capsys, "data", "check", "--root", str(tmp_path), "--list", str(tmp_path / "test.txt"),
                        "--dataset", "cityscapes")
    assert code == 0 and "Cityscapes test labels is ignore: the test split's labels are blank" in out
    assert "wrong --dataset" not in out
    cfg = load_config({"data": {"dataset": "cityscapes", "root": str(tmp_path), "train_list": "test.txt"}})
    from bisenet.data import validate_split

    with pytest.raises(DataError, match="labels are blank .* fit for prediction"):
        validate_split(cfg, "train", sample=4)


# ---------------------------------------------------------------- 10: label map keys


def test_a_label_map_key_outside_0_255_is_refused():
    with pytest.raises(ConfigError, match=r"data.label_map key 300 \(-> 2\) is not a label value: .* 0-255"):
        load_config({"data": {"num_classes": 3, "label_map": {0: 0, 300: 2}}})
    assert load_config({"data": {"num_classes": 3, "label_map": {0: 0, 255: 2}}}).data.label_map[255] == 2


def test_check_fails_when_a_label_map_sends_every_pixel_to_ignore_as_train_does(tmp_path, capsys) -> None:
    # data check said "no problems (100.00% ignored)" and exited 0 on a list that train then refused.
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{arch: bisenetv2}}\ndata: {{dataset: custom, root: {DUBAI}, num_classes: 6, "
                      "train_list: train.txt, val_list: val.txt, label_map: {200: 0}}\n")
    code, out = run_cli(capsys, "data", "check", "--config", str(config), "--split", "val")
    assert code == 1, out
    assert (f"{DUBAI / 'val.txt'}: every pixel of the 12 labels read maps to the ignore index 255, so there is "
            "nothing to learn; data.label_map's keys must be the values stored in the label files") in out


def test_all_ignore_under_a_preset_blames_the_dataset_not_a_label_map_the_user_never_set(capsys) -> None:
    code, out = run_cli(capsys, "data", "check", "--root", str(DUBAI), "--list", "train.txt", "--dataset", "cityscapes")
    assert code == 1 and "data.label_map" not in out
    assert ("so there is nothing to learn; wrong --dataset / data.dataset (cityscapes), or labels in another "
            "encoding? (they hold ") in out and "which cityscapes maps to ignore)" in out


def test_train_says_a_data_note_once_when_it_validates_on_its_training_list(tmp_path, capsys):
    # train_list == val_list (a quick custom run) printed every note twice, once per split.
    from bisenet.engine.train import train

    _binary_case(tmp_path / "data", share=0.04)
    cfg = load_config({"data": {"num_classes": 2, "root": str(tmp_path / "data"), "train_list": "train.txt",
                                "val_list": "train.txt"}},
                      ["augment.crop_size=[64, 64]", "train.batch_size=2", "train.workers=0", "train.device=cpu",
                       "train.max_iters=1", "train.eval_interval=1"])
    train(cfg, tmp_path / "run")
    assert capsys.readouterr().err.count("0/255 binary masks") == 1
