"""`bisenet data lists` (official layouts and `pairs`) through bisenet.cli.main, on real files in temp folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
DUBAI = REPO / "examples" / "dubai"
# The tests use these three; a checkout with only some of them skips rather than failing on a missing folder.
SHARED_SETS = ("camvid", "cityscapes_sample", "dubai_aerial")
needs_shared = pytest.mark.skipif(not all((SHARED / name).is_dir() for name in SHARED_SETS),
                                  reason=f"real datasets not found at {SHARED} (../shared/data with "
                                         f"{', '.join(SHARED_SETS)})")


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def _touch_png(path: Path, channels: int = 1) -> None:
    """A 4x4 mask of zeros, or with channels=3 a colour photo (noise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((4, 4), np.uint8) if channels == 1 else np.random.default_rng(0).integers(0, 256, (4, 4, 3), np.uint8)
    cv2.imwrite(str(path), pixels)


@needs_shared
def test_lists_cityscapes_and_camvid_reproduce_shipped_lists(tmp_path, capsys):
    for name in ("cityscapes_sample", "camvid"):
        layout = "cityscapes" if name.startswith("cityscapes") else "camvid"
        code, out = run_cli(capsys, "data", "lists", layout, str(SHARED / name), "--out", str(tmp_path / name))
        assert code == 0 and "wrote" in out
        for split in ("train", "val"):
            got = (tmp_path / name / f"{split}.txt").read_text().splitlines()
            assert sorted(got) == sorted((SHARED / name / f"{split}.txt").read_text().splitlines())


def test_lists_segnet_ade20k_and_cocostuff_layouts(tmp_path, capsys):
    camvid = tmp_path / "camvid"
    for split in ("train", "val", "test"):
        _touch_png(camvid / split / "0001.png", 3)
        _touch_png(camvid / f"{split}annot" / "0001.png")
    code, _ = run_cli(capsys, "data", "lists", "camvid", str(camvid))
    assert code == 0 and (camvid / "test.txt").read_text() == "test/0001.png,testannot/0001.png\n"

    ade = tmp_path / "ade" / "ADEChallengeData2016"
    for split in ("training", "validation"):
        _touch_png(ade / "images" / split / f"ADE_{split}_1.jpg", 3)
        _touch_png(ade / "annotations" / split / f"ADE_{split}_1.png")
    code, _ = run_cli(capsys, "data", "lists", "ade20k", str(tmp_path / "ade"))
    assert (tmp_path / "ade" / "val.txt").read_text() == (
        "ADEChallengeData2016/images/validation/ADE_validation_1.jpg,"
        "ADEChallengeData2016/annotations/validation/ADE_validation_1.png\n")

    coco = tmp_path / "coco"
    for split in ("train2017", "val2017"):
        _touch_png(coco / "images" / split / "000000000009.jpg", 3)
        _touch_png(coco / "labels" / split / "000000000009.png")
    _touch_png(coco / "images" / "val2017" / "000000000010.jpg", 3)  # no label
    code, out = run_cli(capsys, "data", "lists", "cocostuff", str(coco))
    assert code == 0 and "cocostuff val: 1 image without a label, skipped" in out
    assert (coco / "train.txt").read_text() == "images/train2017/000000000009.jpg,labels/train2017/000000000009.png\n"

    code, out = run_cli(capsys, "data", "lists", "ade20k", str(coco))
    assert code == 2 and "found no ade20k image/label pairs" in out


def test_lists_pairs_by_stem_reports_unmatched(tmp_path, capsys):
    for name in ("a", "b", "c"):
        _touch_png(tmp_path / "imgs" / f"{name}.jpg", 3)
    for name in ("a", "b", "z"):
        _touch_png(tmp_path / "masks" / f"{name}.png")
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "imgs", "--labels", "masks",
                        "--out", "train.txt")
    assert code == 0 and out.endswith(f"wrote {tmp_path / 'train.txt'}: 2 pairs\n")
    assert (tmp_path / "train.txt").read_text() == "imgs/a.jpg,masks/a.png\nimgs/b.jpg,masks/b.png\n"
    assert "1 image without a label, skipped: " in out and "c.jpg" in out
    assert "1 label without an image, skipped: " in out and "z.png" in out and "rename" not in out
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "imgs")
    assert code == 2 and "needs --images DIR --labels DIR --out LIST" in out


def test_lists_pairs_finds_every_format_the_reader_takes(tmp_path, capsys):
    # Palette GIF/BMP/TIFF labels are read as their indices, so pairing must find them too.
    for i, ext in enumerate((".gif", ".bmp", ".tif", ".pgm")):
        _touch_png(tmp_path / "imgs" / f"{i}.jpg", 3)
        _touch_png(tmp_path / "masks" / f"{i}{ext}")
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "imgs", "--labels", "masks",
                        "--out", "train.txt")
    assert code == 0 and out.endswith(": 4 pairs\n"), out
    assert (tmp_path / "train.txt").read_text().splitlines()[0] == "imgs/0.jpg,masks/0.gif"


def test_lists_pairs_strips_a_common_label_suffix_or_says_how_to_rename(tmp_path, capsys):
    for name in ("a", "b", "c"):
        _touch_png(tmp_path / "imgs" / f"{name}.jpg", 3)
        _touch_png(tmp_path / "masks" / f"{name}_mask.png")
    args = ("data", "lists", "pairs", str(tmp_path), "--images", "imgs", "--labels", "masks", "--out", "train.txt")
    code, out = run_cli(capsys, *args)  # every label is <image name>_mask: paired, and said so
    assert code == 0 and "paired each with the image of its name without '_mask' (e.g. a.jpg <-> a_mask.png)" in out
    assert (tmp_path / "train.txt").read_text() == "".join(f"imgs/{n}.jpg,masks/{n}_mask.png\n" for n in "abc")
    (tmp_path / "masks" / "a_mask.png").rename(tmp_path / "masks" / "a.png")  # mixed names: how to rename the rest
    code, out = run_cli(capsys, *args)
    assert code == 0 and (tmp_path / "train.txt").read_text() == "imgs/a.jpg,masks/a.png\n"
    assert out.endswith(f"replaced {tmp_path / 'train.txt'} (was 3 lines): 1 pair\n")  # not "1 pairs"
    assert (f'2 labels are named <image name>_mask (e.g. b_mask.png) but images and labels pair by the same file '
            f'name without the extension; rename them: for f in {tmp_path / "masks"}/*_mask.png; do mv "$f" '
            f'"${{f%_mask.png}}.png"; done') in out
    for f in (tmp_path / "masks").iterdir():
        f.rename(f.with_name(f"x{f.name}"))  # no common suffix: the naming rule, then the error
    code, out = run_cli(capsys, *args)
    assert code == 2 and "pair by the same path without the extension (e.g. a.jpg <-> a.png)" in out


def test_lists_refuse_commas_in_paths_before_writing(tmp_path, capsys):
    _touch_png(tmp_path / "img" / "a.jpg", 3)
    _touch_png(tmp_path / "lbl" / "a.png")
    _touch_png(tmp_path / "img" / "x,1.jpg", 3)
    _touch_png(tmp_path / "lbl" / "x,1.png")
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "img", "--labels", "lbl",
                        "--out", "train.txt")
    assert code == 2 and out.count("\n") == 1
    assert f"'{tmp_path / 'img' / 'x,1.jpg'}': list files cannot hold commas" in out and "rename" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "lbl"]  # no list, no temp file
    camvid = tmp_path / "camvid"
    for split, name in (("train", "0001"), ("val", "0,2")):
        _touch_png(camvid / split / f"{name}.png", 3)
        _touch_png(camvid / f"{split}annot" / f"{name}.png")
    code, out = run_cli(capsys, "data", "lists", "camvid", str(camvid))
    assert code == 2 and "0,2.png'" in out and "commas" in out
    assert not list(camvid.glob("*.txt"))  # train.txt was fine but is not written either: all or nothing


def test_lists_out_that_is_a_folder_is_refused_without_temp_files(tmp_path, capsys):
    _touch_png(tmp_path / "img" / "a.jpg", 3)
    _touch_png(tmp_path / "lbl" / "a.png")
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "img", "--labels", "lbl",
                        "--out", "img")
    assert code == 2
    assert out == f"bisenet data lists: error: --out {tmp_path / 'img'} is a folder; pass a file path such as " \
                  f"{tmp_path / 'img' / 'train.txt'}\n"
    camvid = tmp_path / "camvid"
    for split in ("train", "val"):
        _touch_png(camvid / split / "0001.png", 3)
        _touch_png(camvid / f"{split}annot" / "0001.png")
    (tmp_path / "lists" / "val.txt").mkdir(parents=True)
    code, out = run_cli(capsys, "data", "lists", "camvid", str(camvid), "--out", str(tmp_path / "lists"))
    assert code == 2 and f"list file {tmp_path / 'lists' / 'val.txt'} is a folder" in out
    assert sorted(p.name for p in (tmp_path / "lists").iterdir()) == ["val.txt"]  # train.txt not written either
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_lists_pairs_keeps_symlink_names_and_skips_a_second_extension(tmp_path, capsys):
    # A folder of symlinks (or a symlinked folder) stays relative to ROOT under its own names;
    # a.jpg next to a.png would list one label twice.
    store = tmp_path / "store"
    _touch_png(store / "x.png", 3)
    _touch_png(tmp_path / "d" / "masks" / "a.png")
    _touch_png(tmp_path / "d" / "masks" / "b.png")
    (tmp_path / "d" / "imgs").mkdir()
    (tmp_path / "d" / "imgs" / "a.png").symlink_to(store / "x.png")
    shutil.copy(store / "x.png", tmp_path / "d" / "imgs" / "b.png")
    shutil.copy(store / "x.png", tmp_path / "d" / "imgs" / "b.jpg")
    (tmp_path / "d" / "linked").symlink_to(tmp_path / "d" / "masks")
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path / "d"), "--images", "imgs", "--labels",
                        "linked", "--out", "train.txt")
    assert code == 0 and "1 image shares its name with another image" in out and "b.png" in out
    assert (tmp_path / "d" / "train.txt").read_text() == "imgs/a.png,linked/a.png\nimgs/b.jpg,linked/b.png\n"


def test_lists_cityscapes_train_ids_before_convert_says_to_convert(tmp_path, capsys):
    _touch_png(tmp_path / "leftImg8bit" / "train" / "ulm" / "ulm_000000_000019_leftImg8bit.png", 3)
    _touch_png(tmp_path / "gtFine" / "train" / "ulm" / "ulm_000000_000019_gtFine_labelIds.png")
    code, out = run_cli(capsys, "data", "lists", "cityscapes", str(tmp_path), "--train-ids")
    assert code == 2 and f"`bisenet data convert cityscapes {tmp_path}`" in out
    assert not (tmp_path / "train.txt").exists()


def test_lists_pairs_in_one_folder_uses_the_label_suffix_or_refuses_without_one(tmp_path, capsys):
    for name in ("a", "b"):
        _touch_png(tmp_path / "all" / f"{name}.jpg", 3)
        _touch_png(tmp_path / "all" / f"{name}_mask.png")
    _touch_png(tmp_path / "all" / "c.jpg", 3)  # no label: reported, not paired with itself
    args = ("data", "lists", "pairs", str(tmp_path), "--images", "all", "--labels", "./all/", "--out", "train.txt")
    code, out = run_cli(capsys, *args)
    assert code == 0 and "paired each with the image of its name without '_mask' (e.g. a.jpg <-> a_mask.png)" in out
    assert "1 image without a label, skipped: " in out and "c.jpg" in out
    assert (tmp_path / "train.txt").read_text() == "all/a.jpg,all/a_mask.png\nall/b.jpg,all/b_mask.png\n"
    (tmp_path / "train.txt").unlink()
    for f in (tmp_path / "all").glob("*_mask.png"):
        f.rename(f.with_name(f.name.replace("_mask", "")))  # a.jpg / a.png: the single-channel PNG is the label
    code, out = run_cli(capsys, *args)
    assert code == 0 and "paired each single-channel mask with the other file of its name (e.g. a.jpg <-> a.png)" in out
    assert (tmp_path / "train.txt").read_text() == "all/a.jpg,all/a.png\nall/b.jpg,all/b.png\n"
    assert "1 image without a label, skipped: " in out and "c.jpg" in out
    (tmp_path / "train.txt").unlink()
    _touch_png(tmp_path / "all" / "b.tif")  # three files of one name: nothing tells which pair is meant
    code, out = run_cli(capsys, *args)
    assert code == 2 and "--images and --labels are both" in out
    assert "every label named <image name><suffix> (e.g. a.jpg, a_mask.png)" in out
    assert "without the extension" not in out and not (tmp_path / "train.txt").exists()


def test_lists_pairs_skips_hidden_files_and_says_so(tmp_path, capsys):
    # macOS copies leave AppleDouble ._x.jpg / ._x.png beside the files: junk that fails training.
    _touch_png(tmp_path / "images" / "train" / "x.jpg", 3)
    _touch_png(tmp_path / "labels" / "train" / "x.png")
    for junk in ("images/train/._x.jpg", "labels/train/._x.png", "labels/train/.cache/x.png"):
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_bytes(b"\x00\x05\x16\x07")
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "images/train", "--labels",
                        "labels/train", "--out", "train.txt")
    assert code == 0 and (tmp_path / "train.txt").read_text() == "images/train/x.jpg,labels/train/x.png\n"
    assert "pairs: 3 hidden files (names starting with '.'), skipped: " in out and "._x.jpg" in out
    assert "without" not in out


def test_lists_pairs_names_the_subfolder_rule_and_warns_when_folders_look_swapped(tmp_path, capsys):
    _touch_png(tmp_path / "img" / "a" / "y.jpg", 3)
    _touch_png(tmp_path / "lab" / "y.png")
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "img", "--labels", "lab",
                        "--out", "train.txt")
    assert code == 2 and "give each label its image's name" not in out
    assert f"{tmp_path / 'img' / 'a' / 'y.jpg'} expects {tmp_path / 'lab' / 'a' / 'y.png'}" in out
    _touch_png(tmp_path / "photos" / "y.jpg", 3)  # a JPEG, by its extension
    _touch_png(tmp_path / "masks" / "y.png")
    args = ("data", "lists", "pairs", str(tmp_path), "--out", "train.txt")
    code, out = run_cli(capsys, *args, "--images", "masks", "--labels", "photos")
    assert code == 1 and "pairs: --images and --labels look swapped: the labels are photos (e.g. y.jpg" in out
    assert out.rstrip().endswith("as --labels; nothing written") and not (tmp_path / "train.txt").exists()
    code, out = run_cli(capsys, *args, "--images", "photos", "--labels", "masks")
    assert code == 0 and "swapped" not in out


def test_lists_say_which_lists_they_replace(tmp_path, capsys):
    camvid = tmp_path / "camvid"
    for split in ("train", "val"):
        _touch_png(camvid / split / "0001.png", 3)
        _touch_png(camvid / f"{split}annot" / "0001.png")
    (camvid / "train.txt").write_text("# my own list\na.png,b.png\nc.png,d.png\n")
    code, out = run_cli(capsys, "data", "lists", "camvid", str(camvid))
    assert code == 0 and out.splitlines() == [f"replaced {camvid / 'train.txt'} (was 3 lines): 1 pair",
                                              f"wrote {camvid / 'val.txt'}: 1 pair"]
    args = ("data", "lists", "pairs", str(camvid), "--images", "train", "--labels", "trainannot", "--out", "val.txt")
    code, out = run_cli(capsys, *args)
    assert code == 0 and out.splitlines() == [f"replaced {camvid / 'val.txt'} (was 1 line): 1 pair"]


@pytest.mark.parametrize("vis", ["_vis.jpg", "_vis.png"])  # a colour JPEG or PNG beside every photo
def test_lists_pairs_in_one_folder_counts_only_files_that_look_like_masks(tmp_path, capsys, vis):
    for name in ("a", "b", "c"):
        _touch_png(tmp_path / "D" / f"{name}.jpg", 3)
        _touch_png(tmp_path / "D" / f"{name}{vis}", 3)
    for name in ("a", "c"):
        _touch_png(tmp_path / "D" / f"{name}_mask.png")
    args = ("data", "lists", "pairs", str(tmp_path / "D"), "--images", ".", "--labels", ".", "--out", "train.txt")
    code, out = run_cli(capsys, *args)
    assert code == 0 and (tmp_path / "D" / "train.txt").read_text() == "a.jpg,a_mask.png\nc.jpg,c_mask.png\n"
    kind = "a colour JPEG" if vis.endswith(".jpg") else "a colour image"
    assert f"3 files named <image name>'_vis' (e.g. a{vis}, {kind}) look less like masks than the '_mask'" in out
    (tmp_path / "D" / "train.txt").unlink()
    for f in (tmp_path / "D").glob("*_mask.png"):
        f.unlink()
    code, out = run_cli(capsys, *args)
    assert code == 2 and not (tmp_path / "D" / "train.txt").exists()
    assert "no file named <image name><suffix> looks like a label mask (found 3 files named <image name>'_vis'" in out
    assert "labels must be single-channel class ids" in out


def test_lists_pairs_in_one_folder_takes_grayscale_jpeg_masks_when_nothing_is_lossless(tmp_path, capsys):
    for name in ("a", "b"):
        _touch_png(tmp_path / "D" / f"{name}.png")  # grayscale scans (X-ray, SAR)
        _touch_png(tmp_path / "D" / f"{name}_mask.jpg")  # lossy, but masks: data check notes JPEG labels
        _touch_png(tmp_path / "D" / f"{name}_vis.jpg", 3)
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path / "D"), "--images", ".", "--labels", ".",
                        "--out", "train.txt")
    assert code == 0 and (tmp_path / "D" / "train.txt").read_text() == "a.png,a_mask.jpg\nb.png,b_mask.jpg\n"


def test_lists_pairs_grayscale_jpeg_labels_of_grayscale_images_do_not_look_swapped(tmp_path, capsys):
    _touch_png(tmp_path / "scans" / "y.png")
    _touch_png(tmp_path / "masks" / "y.jpg")  # mode L: a lossy mask, not a photo
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "scans", "--labels", "masks",
                        "--out", "train.txt")
    assert code == 0 and (tmp_path / "train.txt").read_text() == "scans/y.png,masks/y.jpg\n"
    assert "swapped" not in out


def test_lists_pairs_grayscale_photos_beside_colour_masks_do_not_look_swapped(tmp_path, capsys):
    # X-ray or SAR photos (one channel, many values) with colour masks, or masks saved as three equal channels.
    scan = np.random.default_rng(0).integers(0, 256, (16, 16), np.uint8)  # 256 values: a photo, not class ids
    (tmp_path / "scans").mkdir()
    cv2.imwrite(str(tmp_path / "scans" / "y.png"), scan)
    _touch_png(tmp_path / "masks" / "y.png", 3)
    _touch_png(tmp_path / "masks3" / "y.png")
    cv2.imwrite(str(tmp_path / "masks3" / "y.png"), np.zeros((4, 4, 3), np.uint8))  # three equal channels
    for masks in ("masks", "masks3"):
        code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path), "--images", "scans", "--labels", masks,
                            "--out", f"{masks}.txt")
        assert code == 0 and "swapped" not in out and (tmp_path / f"{masks}.txt").is_file()


def test_lists_pairs_names_empty_folders_and_a_missing_root(tmp_path, capsys, monkeypatch):
    (tmp_path / "E" / "a").mkdir(parents=True)
    (tmp_path / "E" / "b").mkdir()
    code, out = run_cli(capsys, "data", "lists", "pairs", str(tmp_path / "E"), "--images", "a", "--labels", "b",
                        "--out", "t.txt")
    assert code == 2 and out.count("\n") == 1 and "see the lines above" not in out
    assert f"--images {tmp_path / 'E' / 'a'} and --labels {tmp_path / 'E' / 'b'} hold no image files (.jpg" in out
    _touch_png(tmp_path / "imgs" / "x.png", 3)  # folders of those names in the cwd, none in the missing root
    _touch_png(tmp_path / "masks" / "x.png")
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(capsys, "data", "lists", "pairs", "nonexist", "--images", "imgs", "--labels", "masks",
                        "--out", "y.txt")
    assert code == 2 and out == ("bisenet data lists: error: ROOT nonexist is not a directory; pass the dataset "
                                 "folder (the list's paths are relative to it)\n")
    assert not (tmp_path / "nonexist").exists()


@pytest.mark.parametrize(("given", "from_cwd"), [("val.txt", False), ("sub/val.txt", False), ("./val.txt", True),
                                                 ("../val.txt", True), (Path("../val.txt"), True), ("/x/val.txt", True)])
def test_a_list_written_from_the_cwd_is_told_apart_from_a_bare_name(given, from_cwd):
    from bisenet.data.lists import written_from_cwd

    assert written_from_cwd(given) is from_cwd


def test_a_given_list_written_from_the_cwd_is_that_file_and_a_bare_name_is_looked_up_under_the_root_first(
        tmp_path, monkeypatch):
    # `--list ./val.txt` read the data root's val.txt: "./" was dropped as if the name were bare.
    from bisenet.data.lists import read_given_list

    root, here = tmp_path / "root", tmp_path / "here"
    for folder, lines in ((root, ["a.png,a.png", "b.png,b.png"]), (here, ["c.png,c.png"])):
        folder.mkdir()
        (folder / "val.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(here)
    pinned = read_given_list("./val.txt", "../root")
    assert [e.image.name for e in pinned.entries] == ["c.png"] and pinned.notes == []
    bare = read_given_list("val.txt", "../root")
    assert [e.image.name for e in bare.entries] == ["a.png", "b.png"]
    note = (f"note: --list val.txt names both {Path('../root/val.txt')} and val.txt in the current directory: "
            f"reading {Path('../root/val.txt')}, the one under the data root (pass ./NAME or an absolute path for the other)")
    assert bare.notes == [note]
    (here / "sub").mkdir()
    (tmp_path / "val.txt").write_text("d.png,d.png\n")  # what root/../val.txt names
    monkeypatch.chdir(here / "sub")  # ../val.txt is here/val.txt, never root/../val.txt
    assert [e.image.name for e in read_given_list("../val.txt", "../../root").entries] == ["c.png"]
