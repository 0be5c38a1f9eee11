"""Decoded-image cache: PNG decoding dominates loading, so keep the decoded pixels.

- "memory": decoded arrays kept in a dict in each process (each DataLoader worker fills
  its own; use it for small datasets).
- "disk": decoded arrays written once as .npy files and memory-mapped afterwards, so a
  random crop reads only the rows it needs. Files live under $BISENET_CACHE_DIR, else
  $XDG_CACHE_HOME/bisenet/decoded, else ~/.cache/bisenet/decoded, keyed by DECODE_VERSION and
  the source file's absolute path, size and modification time (an edited file is decoded again).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bisenet.data.decode import read_image, read_label

# Part of every disk cache key: bump it whenever decode.read_label or decode.read_image change their
# output, or entries decoded the old way are served as if current (files' size and mtime don't change).
# 2: 1/2/4-bit grayscale PNG labels read as their stored values (a 1-bit mask 0/1, no longer 0/255).
DECODE_VERSION = 2


def default_cache_dir() -> Path:
    """Where the disk cache lives unless BISENET_CACHE_DIR says otherwise."""
    if os.environ.get("BISENET_CACHE_DIR"):
        return Path(os.environ["BISENET_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bisenet" / "decoded"


class DecodedCache:
    """Return decoded images (HxWx3 BGR uint8) and labels (HxW uint8), cached per `mode`."""

    def __init__(self, mode: str = "none", directory: str | Path | None = None) -> None:
        if mode not in ("none", "memory", "disk"):
            raise ValueError(f"cache mode must be none, memory or disk, got {mode!r}")
        self.mode = mode
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._memory: dict[tuple[str, Path], np.ndarray] = {}

    def image(self, path: Path) -> np.ndarray:
        """The decoded image at `path` (a read-only memory map in disk mode)."""
        return self._get("image", path, read_image)[0]

    def label(self, path: Path) -> np.ndarray:
        """The decoded raw label at `path`."""
        return self._get("label", path, read_label)[0]

    def label_decoded(self, path: Path) -> tuple[np.ndarray, bool]:
        """The decoded raw label at `path`, and whether it was decoded from its file just now.

        A label served from the cache is the one decoded before; one decoded now may have been
        rewritten since (a file changed mid-run), so a caller that verified it once checks it again.
        """
        return self._get("label", path, read_label)

    def _get(self, kind: str, path: Path, reader: Callable[[Path], np.ndarray]) -> tuple[np.ndarray, bool]:
        if self.mode == "none":
            return reader(path), True
        if self.mode == "memory":
            key = (kind, path)
            array = self._memory.get(key)
            if array is None:
                array = self._memory[key] = reader(path)
                return array, True
            return array, False
        return self._disk(kind, path, reader)

    def _disk(self, kind: str, path: Path, reader: Callable[[Path], np.ndarray]) -> tuple[np.ndarray, bool]:
        try:
            stat = path.stat()
        except OSError:
            return reader(path), True  # let the reader raise its one-line "not found" message
        ident = f"v{DECODE_VERSION}|{kind}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        digest = hashlib.sha1(ident.encode()).hexdigest()
        target = self.directory / digest[:2] / f"{digest}.npy"
        if target.is_file():
            try:
                return np.load(target, mmap_mode="r"), False
            except (OSError, ValueError):
                pass  # a damaged cache entry: decode again and overwrite it
        array = np.ascontiguousarray(reader(path))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Unique temp name then os.replace: concurrent workers never see half a file.
            tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, array)
            os.replace(tmp, target)
        except OSError:
            pass  # a read-only or full cache dir only costs speed, never correctness
        return array, True
