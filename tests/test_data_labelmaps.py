"""Every dataset's label map, checked against tables written out independently here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet.config import load_config
from bisenet.data import build_dataset, validate_split
from bisenet.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real datasets not found at {SHARED} (../shared/data)")

# Official cityscapesScripts labels.py: labelId -> trainId (everything else -> 255).
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# COCO-Stuff 164k: 0-based ids of the 11 thing classes that never occur (1-based 12, 26, 29, ...).
COCO_UNUSED = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}


def official_cityscapes(raw: np.ndarray) -> np.ndarray:
    out = np.full_like(raw, 255)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        out[raw == label_id] = train_id
    return out


def write_case(root: Path, label: np.ndarray, name: str = "a") -> None:
    """One synthetic image/label pair plus list.txt under root."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "lab").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "img" / f"{name}.png"), np.full((*label.shape, 3), 128, np.uint8))
    cv2.imwrite(str(root / "lab" / f"{name}.png"), label)
    with open(root / "list.txt", "a") as f:
        f.write(f"img/{name}.png,lab/{name}.png\n")


def val_label(cfg_dict: dict, root: Path, index: int = 0) -> np.ndarray:
    cfg = load_config(cfg_dict)
    return build_dataset(cfg, "val", data_root=root, list_file=root / "list.txt")[index][1].numpy()


@needs_shared
def test_cityscapes_label_ids_match_official_table():
    root = SHARED / "cityscapes_sample"
    cfg = load_config({"data": {"dataset": "cityscapes", "root": str(root)}})
    for list_name in ("val.txt", "train.txt"):  # "val" split: no augmentation, full frames
        ds = build_dataset(cfg, "val", list_file=root / list_name)
        assert ds.num_classes == 19
        for index in range(min(2, len(ds))):
            raw = cv2.imread(str(ds.samples[index][1]), cv2.IMREAD_UNCHANGED)
            got = ds[index][1].numpy()
            np.testing.assert_array_equal(got, official_cityscapes(raw))
            assert set(np.unique(got)) - {255} <= set(range(19))


@needs_shared
def test_cityscapes_label_train_ids_skip_the_map(tmp_path):
    root = SHARED / "cityscapes_sample"
    image, label_ids = (root / "val.txt").read_text().split()[0].split(",")
    raw = cv2.imread(str(root / label_ids), cv2.IMREAD_UNCHANGED)
    train_ids = tmp_path / "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    cv2.imwrite(str(train_ids), official_cityscapes(raw))
    (tmp_path / "list.txt").write_text(f"{root / image},{train_ids}\n{image},{label_ids}\n")
    cfg = load_config({"data": {"dataset": "cityscapes", "root": str(root)}})
    ds = build_dataset(cfg, "val", list_file=tmp_path / "list.txt")
    np.testing.assert_array_equal(ds[0][1].numpy(), official_cityscapes(raw))
    np.testing.assert_array_equal(ds[1][1].numpy(), official_cityscapes(raw))  # mixed lists work too


def test_a_users_own_label_map_applies_to_train_id_files_too(tmp_path):
    # *_labelTrainIds.png skipped every label map by its name: a map of 19 train ids into fewer classes was ignored
    # (its classes "outside [0, 7)"), and one leaving road out kept road. Only the Cityscapes labelIds map is skipped.
    train_ids = np.array([[0, 1, 2], [7, 18, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "x_gtFine_labelTrainIds.png"), train_ids)
    cv2.imwrite(str(tmp_path / "x.png"), np.full((2, 3, 3), 128, np.uint8))
    (tmp_path / "list.txt").write_text("x.png,x_gtFine_labelTrainIds.png\n")
    categories = {"data": {"dataset": "custom", "num_classes": 3, "label_map": {0: 0, 1: 0, 2: 1, 7: 2, 18: 2}}}
    validate_split(load_config(categories), "val", data_root=tmp_path, list_file=tmp_path / "list.txt", full=True)
    np.testing.assert_array_equal(val_label(categories, tmp_path), [[0, 0, 1], [2, 2, 255]])
    for preset in ("cityscapes", "cocostuff"):  # their own maps: the file holds train ids already (mmseg writes both)
        np.testing.assert_array_equal(val_label({"data": {"dataset": preset}}, tmp_path), train_ids)


@needs_shared
def test_camvid_void_11_becomes_ignore():
    root = SHARED / "camvid"
    cfg = load_config({"data": {"dataset": "camvid", "root": str(root)}})
    ds = build_dataset(cfg, "val")
    assert ds.num_classes == 11 and len(ds) == 101
    for index in (0, 50):
        raw = cv2.imread(str(ds.samples[index][1]), cv2.IMREAD_UNCHANGED)
        got = ds[index][1].numpy()
        assert (raw == 11).any()
        np.testing.assert_array_equal(got, np.where(raw == 11, 255, raw))


def test_ade20k_zero_is_ignore_and_others_shift(tmp_path):
    raw = np.arange(151, dtype=np.uint8).repeat(2).reshape(2, 151)
    write_case(tmp_path, raw)
    got = val_label({"data": {"dataset": "ade20k"}}, tmp_path)
    expected = np.where(raw == 0, 255, raw.astype(int) - 1)
    np.testing.assert_array_equal(got, expected)


def test_cocostuff_182_ids_to_171_classes(tmp_path):
    raw = np.concatenate([np.arange(182), [255] * 2]).astype(np.uint8).reshape(4, 46)
    write_case(tmp_path, raw)
    got = val_label({"data": {"dataset": "cocostuff"}}, tmp_path)
    used = [i for i in range(182) if i not in COCO_UNUSED]
    assert len(used) == 171
    expected = np.full(raw.shape, 255)
    for train_id, raw_id in enumerate(used):
        expected[raw == raw_id] = train_id
    np.testing.assert_array_equal(got, expected)
    assert load_config({"data": {"dataset": "cocostuff"}}).num_classes == 171


def test_custom_label_map_and_identity(tmp_path):
    raw = np.array([[10, 20, 30, 40], [0, 10, 255, 20]], np.uint8)
    write_case(tmp_path, raw)
    mapped = val_label({"data": {"num_classes": 3, "label_map": {10: 0, 20: 1, 30: 2}}}, tmp_path)
    np.testing.assert_array_equal(mapped, [[0, 1, 2, 255], [255, 0, 255, 1]])
    # Identity (no map): 40 is neither a class of a 3-class dataset nor the ignore index.
    with pytest.raises(DataError, match=r"list.txt line 1: label .*a.png has values 10, 20, 30, 40 outside \[0, 3\)"):
        val_label({"data": {"num_classes": 3}}, tmp_path)


def test_custom_ignore_index_and_dubai_identity(tmp_path):
    raw = np.array([[0, 1, 4], [2, 3, 4]], np.uint8)
    write_case(tmp_path, raw)
    got = val_label({"data": {"num_classes": 4, "ignore_index": 4}}, tmp_path)
    np.testing.assert_array_equal(got, raw)
    got = val_label({"data": {"dataset": "dubai", "ignore_index": 255}}, tmp_path)
    np.testing.assert_array_equal(got, raw)


def test_palette_and_gray_alpha_png_labels_read_as_their_ids(tmp_path):
    # VOC-style masks: the class id is the palette index; the colours are only for viewing.
    from PIL import Image

    from bisenet.data.decode import read_label

    raw = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    write_case(tmp_path, raw)
    mask = Image.fromarray(raw, mode="P")
    mask.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [255, 255, 255] * 252)
    mask.save(tmp_path / "lab" / "a.png")
    assert Image.open(tmp_path / "lab" / "a.png").mode == "P"
    np.testing.assert_array_equal(read_label(tmp_path / "lab" / "a.png"), raw)
    np.testing.assert_array_equal(val_label({"data": {"num_classes": 4}}, tmp_path), raw)
    cfg = load_config({"data": {"num_classes": 4, "root": str(tmp_path), "val_list": "list.txt"}})
    validate_split(cfg, "val", full=True)
    # A 4-bit palette (few classes, small files) reads the same.
    small = Image.fromarray(np.minimum(raw, 3), mode="P")
    small.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] * 4)
    small.save(tmp_path / "lab" / "a.png", bits=4)
    assert (tmp_path / "lab" / "a.png").read_bytes()[24:26] == b"\x04\x03"  # 4-bit depth, palette type
    np.testing.assert_array_equal(read_label(tmp_path / "lab" / "a.png"), np.minimum(raw, 3))
    # Gray + alpha (some editors add an alpha channel): the gray values are the ids.
    Image.fromarray(np.dstack([raw, np.full_like(raw, 255)]), mode="LA").save(tmp_path / "lab" / "a.png")
    np.testing.assert_array_equal(read_label(tmp_path / "lab" / "a.png"), raw)


# ---------------------------------------------------------------- bad data in the dataset


def test_bad_samples_raise_one_line_data_errors(tmp_path):
    good = np.zeros((8, 8), np.uint8)
    write_case(tmp_path, good, "ok")
    write_case(tmp_path, good, "rgb")
    cv2.imwrite(str(tmp_path / "lab" / "rgb.png"), np.dstack([np.zeros((8, 8), np.uint8)] * 2 + [np.ones((8, 8), np.uint8)]))
    write_case(tmp_path, good, "small")
    cv2.imwrite(str(tmp_path / "lab" / "small.png"), np.zeros((4, 8), np.uint8))
    write_case(tmp_path, good, "gone")
    (tmp_path / "img" / "gone.png").unlink()
    write_case(tmp_path, good, "cut")
    data = (tmp_path / "img" / "cut.png").read_bytes()
    (tmp_path / "img" / "cut.png").write_bytes(data[: len(data) // 2])
    cfg = load_config({"data": {"num_classes": 2, "root": str(tmp_path), "val_list": "list.txt"}})
    ds = build_dataset(cfg, "val")
    ds[0]
    expected = {1: r"list.txt line 2: label .*rgb.png has 3 channels \(a colour mask\).*map each palette colour to its id",
                2: r"list.txt line 3: image .*small.png is 8x8 but label .*small.png is 8x4 \(WxH\)",
                3: r"list.txt line 4: image .*gone.png not found",
                4: r"list.txt line 5: image .*cut.png is truncated"}
    for index, pattern in expected.items():
        with pytest.raises(DataError, match=pattern) as info:
            ds[index]
        assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"line 4: image .*gone.png not found"):
        validate_split(cfg, "val")


def test_validate_split_list_problems(tmp_path):
    write_case(tmp_path, np.zeros((4, 4), np.uint8))
    cfg = load_config({"data": {"num_classes": 2, "root": str(tmp_path), "val_list": "list.txt"}})
    validate_split(cfg, "val")
    validate_split(cfg, "val", full=True)
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(DataError, match="empty.txt: list is empty"):
        validate_split(cfg, "val", list_file=tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("img/a.png,lab/a.png\nimg/a.png\n")
    with pytest.raises(DataError, match=r"bad.txt line 2: malformed line 'img/a.png'"):
        validate_split(cfg, "val", list_file=tmp_path / "bad.txt")
    with pytest.raises(DataError, match="list file .*nope.txt not found"):
        validate_split(cfg, "val", list_file="nope.txt")
    cv2.imwrite(str(tmp_path / "lab" / "a.png"), np.full((4, 4), 7, np.uint8))
    validate_split(cfg, "val")  # the quick check only looks for files
    with pytest.raises(DataError, match=r"line 1: label .*a.png has value 7 outside \[0, 2\)"):
        validate_split(cfg, "val", full=True)


def test_training_data_show_and_data_check_word_bad_pairs_alike(tmp_path, capsys):
    # An EXIF-turned photo and a JPEG label: data check's advice reaches training and data show too.
    from PIL import Image

    from bisenet.cli import main

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    photo = Image.fromarray(np.full((6, 8, 3), 90, np.uint8))  # 8x6 as stored, 6x8 once turned on reading
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "img" / "turned.jpg", exif=exif.tobytes())
    cv2.imwrite(str(tmp_path / "lab" / "turned.png"), np.zeros((6, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "img" / "b.png"), np.zeros((6, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "lab" / "b.jpg"), np.full((6, 8), 7, np.uint8))
    (tmp_path / "list.txt").write_text("img/turned.jpg,lab/turned.png\nimg/b.png,lab/b.jpg\n")
    cfg = load_config({"data": {"num_classes": 2, "root": str(tmp_path), "val_list": "list.txt"}})
    ds = build_dataset(cfg, "val")
    trained = []
    for index in range(2):
        with pytest.raises(DataError) as info:
            ds[index]
        trained.append(str(info.value))
    assert "EXIF orientation tag (6: rotate 90 degrees clockwise)" in trained[0]
    assert "it is a JPEG, whose lossy compression invents values" in trained[1]
    assert main(["data", "check", "--root", str(tmp_path), "--list", str(tmp_path / "list.txt"),
                 "--num-classes", "2"]) == 1
    assert capsys.readouterr().out.splitlines()[:2] == trained
    (tmp_path / "c.yaml").write_text(f"data:\n  num_classes: 2\n  root: {tmp_path}\n  train_list: list.txt\n")
    assert main(["data", "show", str(tmp_path / "c.yaml"), "--count", "1", "--out", str(tmp_path / "s.png")]) == 2
    assert capsys.readouterr().err == f"bisenet data show: error: {trained[0]}\n"


def test_a_missing_list_file_given_as_an_argument_is_blamed_on_it(tmp_path, capsys):
    from bisenet.cli import main

    write_case(tmp_path, np.zeros((4, 4), np.uint8))
    cfg = load_config({"data": {"num_classes": 2, "root": str(tmp_path), "val_list": "list.txt"}})
    with pytest.raises(DataError, match=r"list file nope.txt not found \(looked for .*\); check the --list path") as info:
        build_dataset(cfg, "val", list_file="nope.txt")
    assert "data.train_list" not in str(info.value)
    (tmp_path / "c.yaml").write_text(f"data:\n  num_classes: 2\n  root: {tmp_path}\n  train_list: list.txt\n")
    assert main(["data", "show", str(tmp_path / "c.yaml"), "--list", "nope.txt", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "check the --list path" in err and "data.train_list" not in err


def test_training_refuses_values_a_named_dataset_does_not_have(tmp_path):
    # COCO-Stuff's raw ids are 0-181 (255 unlabelled): 182 is another encoding (1-based ids), not "ignore".
    write_case(tmp_path, np.array([[0, 181, 255, 182]] * 4, np.uint8))
    cfg = load_config({"data": {"dataset": "cocostuff", "root": str(tmp_path), "val_list": "list.txt"}})
    message = (r"list.txt line 1: label .*a.png has value 182, which is not a label id of cocostuff \(0-181, 255\); "
               r"wrong --dataset / data.dataset, or labels in another encoding\?")
    with pytest.raises(DataError, match=message):
        build_dataset(cfg, "val")[0]
    with pytest.raises(DataError, match=message):
        validate_split(cfg, "val", full=True)
    own = load_config({"data": {"dataset": "cocostuff", "root": str(tmp_path), "val_list": "list.txt",
                                "label_map": {0: 0, 181: 170}}})  # the user's own map: values it leaves out are theirs
    assert set(np.unique(build_dataset(own, "val")[0][1].numpy())) == {0, 170, 255}
    write_case(tmp_path / "ade", np.array([[0, 150, 151]], np.uint8))
    ade = load_config({"data": {"dataset": "ade20k", "root": str(tmp_path / "ade"), "val_list": "list.txt"}})
    with pytest.raises(DataError, match=r"has value 151, which is not a label id of ade20k \(0-150, 255\)"):
        build_dataset(ade, "val")[0]
