"""DecodedCache on real files: disk entries are keyed by the decoder version, so a decode fix reaches cached data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from bisenet.data import cache as cache_module
from bisenet.data.cache import DecodedCache

MASK = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)


def _one_bit_png(path: Path) -> Path:
    Image.fromarray(MASK.astype(bool)).save(path)  # mode "1": a 1-bit grayscale PNG
    assert path.read_bytes()[24] == 1  # IHDR bit depth
    return path


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.npy"))


def test_a_one_bit_label_cached_by_the_old_decoder_reads_as_0_1(tmp_path):
    label = _one_bit_png(tmp_path / "m.png")
    stat = label.stat()
    # An entry the pre-fix decoder wrote under the pre-version key kind|path|size|mtime: 0/255, not 0/1.
    old = hashlib.sha1(f"label|{label.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    stale = tmp_path / "cache" / old[:2] / f"{old}.npy"
    stale.parent.mkdir(parents=True)
    np.save(stale, MASK * 255)
    assert np.array_equal(DecodedCache("disk", tmp_path / "cache").label(label), MASK)
    assert np.array_equal(DecodedCache("disk", tmp_path / "cache").label(label), MASK)  # now from its own entry
    assert len(_entries(tmp_path / "cache")) == 2


def test_bumping_the_decode_version_decodes_again(tmp_path, monkeypatch):
    label = _one_bit_png(tmp_path / "m.png")
    cache = DecodedCache("disk", tmp_path / "cache")
    assert np.array_equal(cache.label(label), MASK)
    first = _entries(tmp_path / "cache")
    assert len(first) == 1
    np.save(first[0], MASK * 255)  # stands in for output of an older decoder under the current key
    assert np.array_equal(cache.label(label), MASK * 255)  # same version: the entry is trusted
    monkeypatch.setattr(cache_module, "DECODE_VERSION", cache_module.DECODE_VERSION + 1)
    assert np.array_equal(cache.label(label), MASK)
    assert len(_entries(tmp_path / "cache")) == 2


def test_images_and_labels_of_one_file_keep_separate_entries(tmp_path):
    label = _one_bit_png(tmp_path / "m.png")
    cache = DecodedCache("disk", tmp_path / "cache")
    assert cache.image(label).shape == (2, 3, 3) and np.array_equal(cache.label(label), MASK)
    assert len(_entries(tmp_path / "cache")) == 2
