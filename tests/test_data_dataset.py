"""SegmentationDataset / build_dataset / validate_split on real files (no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bisenet.config import load_config
from bisenet.data import SegmentationDataset, build_dataset
from bisenet.data.lists import read_list
from bisenet.errors import DataError

REPO = Path(__file__).resolve().parents[1]
DUBAI = REPO / "examples" / "dubai"  # bundled: these tests never need ../shared/data


def dubai_cfg(**augment):
    return load_config({"data": {"dataset": "dubai", "root": str(DUBAI)},
                        "augment": {"crop_size": [128, 160], "scale_range": [0.5, 1.5], **augment}})


def make_pairs(root: Path, labels: dict[str, np.ndarray], image_hw=None) -> Path:
    """Write image/label PNGs for each name and a list file; return the list path."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "lab").mkdir(exist_ok=True)
    lines = []
    for name, label in labels.items():
        h, w = image_hw or label.shape[:2]
        image = np.random.default_rng(len(lines)).integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "img" / f"{name}.png"), image)
        cv2.imwrite(str(root / "lab" / f"{name}.png"), label)
        lines.append(f"img/{name}.png,lab/{name}.png")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


def custom_cfg(root: Path, num_classes: int = 3, **data):
    return load_config({"data": {"dataset": "custom", "root": str(root), "num_classes": num_classes,
                                 "train_list": "list.txt", "val_list": "list.txt", **data}})


# ---------------------------------------------------------------- contract


def test_dubai_train_and_val_contract():
    cfg = dubai_cfg()
    train = build_dataset(cfg, "train")
    assert isinstance(train, SegmentationDataset)
    assert len(train) == 42 and len(train.samples) == 42 and train.num_classes == 5 and train.ignore_index == 255
    assert train.names[0] == Path(train.samples[0][0]).stem == "tile1_image_part_001"
    image, label = train[0]
    assert image.dtype == torch.float32 and image.shape == (3, 128, 160)
    assert label.dtype == torch.int64 and label.shape == (128, 160)
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    val = build_dataset(cfg, "val")
    image, label = val[0]
    raw = cv2.imread(str(val.samples[0][0]))
    assert image.shape == (3, *raw.shape[:2]) and label.shape == raw.shape[:2]
    # Normalisation: RGB order, (v / 255 - mean) / std.
    expected = (raw[..., ::-1].astype(np.float32) / 255 - np.array(cfg.data.mean)) / np.array(cfg.data.std)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_yaml_path_and_overrides(tmp_path):
    cfg_file = REPO / "configs" / "bisenetv2_dubai.yaml"
    assert len(build_dataset(cfg_file, "val", data_root=DUBAI)) == 12
    list_file = tmp_path / "two.txt"
    list_file.write_text("\n".join((DUBAI / "val.txt").read_text().splitlines()[:2]) + "\n")
    ds = build_dataset(cfg_file, "val", data_root=DUBAI, list_file=list_file)
    assert len(ds) == 2 and ds.samples[0][0].is_file()
    with pytest.raises(DataError, match="no list for the test split"):
        build_dataset(cfg_file, "test", data_root=DUBAI)
    with pytest.raises(DataError, match="not one of"):
        build_dataset(cfg_file, "training", data_root=DUBAI)


def test_same_key_same_sample_and_epochs_differ():
    ds = build_dataset(dubai_cfg(), "train")
    a, b = ds[(3, 5)], ds[(3, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(ds[(4, 5)][0], a[0])
    ds.set_epoch(3)
    assert torch.equal(ds[5][0], a[0])
    other_seed = build_dataset(load_config(dubai_cfg(), ["train.seed=1"]), "train")
    assert not torch.equal(other_seed[(3, 5)][0], a[0])


def test_dataloader_workers_do_not_change_samples():
    ds = build_dataset(dubai_cfg(), "train")
    keys = [(e, i) for e in (0, 1) for i in (0, 7, 20)]

    def run(workers):
        loader = DataLoader(ds, batch_size=2, sampler=keys, num_workers=workers)
        return [batch for batch in loader]

    alone, workers = run(0), run(2)
    assert len(alone) == len(workers) == 3  # zip below would pass over a loader that lost batches
    for (x0, y0), (x2, y2) in zip(alone, workers):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_padding_when_crop_exceeds_image():
    cfg = dubai_cfg(crop_size=[896, 896], scale_range=[0.5, 0.5], brightness=0.0, contrast=0.0, saturation=0.0)
    ds = build_dataset(cfg, "train")
    image, label = ds[0]
    pad = label == 255
    assert pad.float().mean() > 0.5  # a <=256 px image inside a 896x896 crop
    zero = (0 - torch.tensor(cfg.data.mean)) / torch.tensor(cfg.data.std)
    corner = image[:, 0, 0] if pad[0, 0] else image[:, -1, -1]
    torch.testing.assert_close(corner, zero)


# ---------------------------------------------------------------- geometry


def test_image_and_label_stay_aligned(tmp_path):
    """Pixels encode their own coordinates; after augmenting, label and image must agree."""
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    # image: R = x // 2, G = y, B = 0; label: column band id x // 40 (8 classes)
    image = np.dstack([np.zeros_like(xx), yy, xx // 2]).astype(np.uint8)  # BGR on disk
    label = (xx // 40).astype(np.uint8)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), image)
    cv2.imwrite(str(tmp_path / "lab" / "a.png"), label)
    (tmp_path / "list.txt").write_text("img/a.png,lab/a.png\n")
    cfg = load_config({
        "data": {"root": str(tmp_path), "num_classes": 8, "train_list": "list.txt", "mean": [0, 0, 0],
                 "std": [1 / 255] * 3},
        "augment": {"crop_size": [192, 192], "scale_range": [0.5, 2.0], "brightness": 0.0, "contrast": 0.0,
                    "saturation": 0.0},
    })
    ds = build_dataset(cfg, "train")
    flips = set()
    for epoch in range(30):
        img, lab = ds[(epoch, 0)]
        x_src = img[0].numpy() * 2  # R channel = x // 2 -> approximate source column
        valid = lab.numpy() != 255
        assert valid.any()
        # Away from band edges the label must be the band of the column the image shows.
        band = x_src / 40
        safe = valid & (np.abs(band - np.round(band)) > 0.15)
        assert (lab.numpy()[safe] == np.floor(band[safe])).mean() > 0.99
        row = img[0].numpy()[0][valid[0]]
        if row.size > 10:
            flips.add(bool(row[0] > row[-1]))
    assert flips == {True, False}  # both flipped and unflipped crops were exercised


def test_matches_resize_pad_crop_flip_reference():
    """The single-warp crop equals resize-whole-image -> pad -> crop -> flip (within 1 level)."""
    from bisenet.data.transforms import CropParams, normalise_tables, train_sample

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (7, 7), 2)
    label = cv2.resize(rng.integers(0, 5, (30, 40), dtype=np.uint8), (400, 300), interpolation=cv2.INTER_NEAREST)
    identity = normalise_tables([0, 0, 0], [1 / 255] * 3)
    ch, cw = 160, 240
    for _ in range(25):
        s = rng.uniform(0.25, 2.0)
        sh, sw = round(300 * s), round(400 * s)
        oy = int(rng.integers(min(0, sh - ch), max(0, sh - ch) + 1))
        ox = int(rng.integers(min(0, sw - cw), max(0, sw - cw) + 1))
        flip = bool(rng.random() < 0.5)
        out, lab = train_sample(image, label, CropParams((sh, sw), (oy, ox), flip, 1, 1, 1), (ch, cw), None, 255,
                                identity)
        py, px = max(0, -oy), max(0, -ox)
        canvas = np.zeros((py + max(sh, ch) + ch, px + max(sw, cw) + cw, 3), np.uint8)
        lcanvas = np.full(canvas.shape[:2], 255, np.uint8)
        canvas[py:py + sh, px:px + sw] = cv2.resize(image, (sw, sh))
        lcanvas[py:py + sh, px:px + sw] = cv2.resize(label, (sw, sh), interpolation=cv2.INTER_NEAREST_EXACT)
        ref = canvas[oy + py:oy + py + ch, ox + px:ox + px + cw]
        lref = lcanvas[oy + py:oy + py + ch, ox + px:ox + px + cw]
        if flip:
            ref, lref = ref[:, ::-1], lref[:, ::-1]
        assert np.abs(out - ref[..., ::-1].transpose(2, 0, 1)).max() <= 1.0
        # Nearest-neighbour ties may round the other way, but only on a class boundary.
        kernel = np.ones((3, 3), np.uint8)
        boundary = cv2.dilate(lref, kernel) != cv2.erode(lref, kernel)
        assert not ((lab != lref) & ~boundary).any()


def test_jitter_changes_colour_not_geometry():
    plain = build_dataset(dubai_cfg(brightness=0.0, contrast=0.0, saturation=0.0), "train")
    jitter = build_dataset(dubai_cfg(brightness=0.4, contrast=0.4, saturation=0.4), "train")
    changed = 0
    for i in range(6):
        (x0, y0), (x1, y1) = plain[(0, i)], jitter[(0, i)]
        assert torch.equal(y0, y1)
        changed += int(not torch.allclose(x0, x1))
    assert changed >= 5


# ---------------------------------------------------------------- cache and worker errors


def test_decoded_cache_gives_identical_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("BISENET_CACHE_DIR", str(tmp_path / "cache"))
    reference = build_dataset(dubai_cfg(), "train")
    for mode in ("memory", "disk"):
        cached = build_dataset(load_config(dubai_cfg(), [f"data.cache={mode}"]), "train")
        for key in [(0, 0), (1, 0), (0, 9)]:
            (x0, y0), (x1, y1) = reference[key], cached[key]
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4  # 2 images + 2 labels
    cached.preload(workers=2)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2 * len(cached)


def test_disk_cache_notices_an_edited_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BISENET_CACHE_DIR", str(tmp_path / "cache"))
    list_file = make_pairs(tmp_path / "data", {"a": np.zeros((16, 16), np.uint8)})
    cfg = custom_cfg(tmp_path / "data", cache="disk")
    assert build_dataset(cfg, "val", list_file=list_file)[0][1].max() == 0
    cv2.imwrite(str(tmp_path / "data" / "lab" / "a.png"), np.ones((16, 16), np.uint8))
    os_stat = (tmp_path / "data" / "lab" / "a.png").stat()
    os.utime(tmp_path / "data" / "lab" / "a.png", ns=(os_stat.st_atime_ns, os_stat.st_mtime_ns + 10**9))
    assert build_dataset(cfg, "val", list_file=list_file)[0][1].min() == 1


@pytest.mark.parametrize("cache", ["none", "disk"])
def test_label_rewritten_mid_run_is_checked_again(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("BISENET_CACHE_DIR", str(tmp_path / "cache"))
    list_file = make_pairs(tmp_path / "data", {"a": np.zeros((16, 16), np.uint8)})
    ds = build_dataset(custom_cfg(tmp_path / "data", cache=cache), "val", list_file=list_file)
    assert ds[0][1].max() == 0  # verified once here
    label_path = tmp_path / "data" / "lab" / "a.png"
    cv2.imwrite(str(label_path), np.full((16, 16), 7, np.uint8))  # the file changes under the running job
    stat = label_path.stat()
    os.utime(label_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match=r"list.txt line 1: label .*a.png has value 7 outside \[0, 3\) that is not the ignore index"):
        ds[0]


def test_worker_errors_stay_one_line_data_errors(tmp_path):
    list_file = make_pairs(tmp_path, {"a": np.zeros((16, 16), np.uint8)})
    with open(list_file, "a") as f:
        f.write("img/none.png,lab/a.png\n")
    ds = build_dataset(custom_cfg(tmp_path), "val")
    with pytest.raises(DataError) as info:
        list(DataLoader(ds, num_workers=1))
    assert str(info.value) == (f"{list_file} line 2: image {tmp_path / 'img' / 'none.png'} not found; regenerate it "
                               "with `bisenet data lists` or fix the paths")


@pytest.mark.skipif(os.sep != "/", reason="backslashes are separators on Windows already")
def test_list_written_on_windows_with_backslashes_reads_on_posix(tmp_path):
    make_pairs(tmp_path, {"a": np.ones((8, 8), np.uint8)})
    (tmp_path / "win.txt").write_text("img\\a.png,lab\\a.png\r\n")
    cfg = load_config({"data": {"dataset": "custom", "num_classes": 2, "root": str(tmp_path), "val_list": "win.txt"}})
    image, label = build_dataset(cfg, "val")[0]
    assert image.shape == (3, 8, 8) and label.unique().tolist() == [1]


@pytest.mark.parametrize("fmt, ext, options", [("BMP", "bmp", {}), ("GIF", "gif", {"optimize": False}),
                                               ("TIFF", "tif", {}), ("TIFF", "tiff", {"compression": "tiff_lzw"})])
def test_palette_bmp_gif_tiff_labels_read_as_their_indices(tmp_path, fmt, ext, options):
    # As palette PNGs: the class id is the palette index; OpenCV alone would expand it to a colour mask.
    from PIL import Image

    from bisenet.data.decode import read_label

    ids = np.array([[0, 1, 2, 3], [2, 255, 1, 0], [3, 3, 0, 1]], np.uint8)
    make_pairs(tmp_path, {"a": ids})
    mask = Image.fromarray(ids, mode="P")
    mask.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [255, 255, 255] * 252)
    label = tmp_path / "lab" / f"a.{ext}"
    mask.save(label, fmt, **options)
    assert Image.open(label).mode == "P" and cv2.imread(str(label), cv2.IMREAD_UNCHANGED).ndim == 3
    (tmp_path / "list.txt").write_text(f"img/a.png,lab/a.{ext}\n")
    np.testing.assert_array_equal(read_label(label), ids)
    _, got = build_dataset(custom_cfg(tmp_path, num_classes=4), "val")[0]
    np.testing.assert_array_equal(got.numpy(), ids)
    if fmt == "GIF":  # GIF has no colour mode: Pillow saves RGB as a palette too
        return
    # Colour (RGB) ones in these formats are still refused as colour masks.
    Image.fromarray(np.dstack([ids, ids * 0, ids]), mode="RGB").save(label, fmt)
    with pytest.raises(DataError, match=r"list.txt line 1: label .* has 3 channels \(a colour mask\)"):
        build_dataset(custom_cfg(tmp_path, num_classes=4), "val")[0]


def test_truncated_palette_bmp_label_is_one_line_truncated_error(tmp_path):
    from PIL import Image

    make_pairs(tmp_path, {"a": np.zeros((16, 16), np.uint8)})
    mask = Image.fromarray(np.zeros((16, 16), np.uint8), mode="P")
    mask.putpalette([0, 0, 0, 200, 0, 0] * 128)
    mask.save(tmp_path / "lab" / "a.bmp")
    data = (tmp_path / "lab" / "a.bmp").read_bytes()
    (tmp_path / "lab" / "a.bmp").write_bytes(data[:-100])
    (tmp_path / "list.txt").write_text("img/a.png,lab/a.bmp\n")
    with pytest.raises(DataError, match=r"^\S*list.txt line 1: label \S*a.bmp is truncated \(file ends early\) "
                                         r"\(BMP with a palette\); re-copy or re-download it$"):
        build_dataset(custom_cfg(tmp_path, num_classes=2), "val")[0]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_low_bit_depth_gray_png_labels_read_as_their_stored_values(tmp_path, bits):
    # libpng scales 1/2/4-bit gray to 0..255: a 1-bit 0/1 mask would read 0/255, class 1 becoming ignore.
    from PIL import Image

    from bisenet.data.decode import read_label

    ids = np.array([[0, 1, 1, 0, 1, 0, 0, 1]] * 6, np.uint8) * (1 if bits == 1 else 2**bits - 1)
    image = Image.fromarray(ids.astype(bool)) if bits == 1 else Image.fromarray(ids)
    list_file = make_pairs(tmp_path, {"a": np.zeros((6, 8), np.uint8)})
    image.save(tmp_path / "lab" / "a.png", **({} if bits == 1 else {"bits": bits}))
    assert (tmp_path / "lab" / "a.png").read_bytes()[24] == bits  # the IHDR bit depth really is that low
    np.testing.assert_array_equal(read_label(tmp_path / "lab" / "a.png"), ids)
    if bits == 1:
        ds = SegmentationDataset(read_list(list_file, tmp_path), num_classes=2)
        assert ds[0][1].unique().tolist() == [0, 1]
