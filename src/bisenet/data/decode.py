"""Reading images and label masks with OpenCV, with one-line reasons when a file is bad.

The readers raise `FileProblem` (a plain exception carrying a short reason and a fix);
callers add the list file and line number before turning it into a `DataError`.
"""

from __future__ import annotations

import io
import stat
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bisenet.data.lists import ListEntry, not_found_fix

COLOUR_MASK_FIX = (
    "labels must be single-channel class ids: map each palette colour to its id "
    "(e.g. ids = lut[r*65536 + g*256 + b]) and save an 8-bit grayscale PNG"
)
JPEG_FIX = ("it is a JPEG, whose lossy compression invents values at class edges: save the labels as lossless PNG "
            "from the original masks (if those values are real classes, fix data.num_classes / data.label_map)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MASK_MODES = ("1", "L", "P", "LA", "PA", "I", "I;16", "I;16B", "I;16L")  # Pillow modes of single-channel files
PHOTO_MODES = ("RGB", "RGBA", "CMYK")
# BMP, GIF, TIFF and BigTIFF: formats that may hold a palette, which OpenCV expands to BGR colours.
PALETTE_SIGNATURES = (b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class FileProblem(Exception):
    """A bad image or label file; `kind` is a short tag used in summaries."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        mode = path.stat().st_mode  # before opening: a FIFO or device would block the read for good
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"
            raise FileProblem("unreadable", f"{what} {path} is {kind}, not a regular file; list only image and "
                                            "label files (copy the data to a regular file first)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileProblem("missing", f"{what} {path} not found") from None
    except IsADirectoryError:
        raise FileProblem("missing", f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise FileProblem("unreadable", f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise FileProblem("unreadable", f"{what} {path} is empty (0 bytes); re-copy or re-download it")
    return data


def _truncated(data: bytes) -> bool:
    """True when a PNG or JPEG stream stops before its end marker.

    OpenCV happily returns a half-grey image for a cut JPEG, so check the trailer.
    """
    if data[:8] == PNG_SIGNATURE:
        return b"IEND" not in data[-16:]
    if data[:2] == b"\xff\xd8":
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    return False


_quiet_lock = threading.Lock()
_quiet_calls = 0  # decodes in flight (thread pools decode in parallel)
_saved_log_level = 0


def _quiet_imdecode(data: bytes, flags: int) -> np.ndarray | None:
    # A corrupt TIFF makes libtiff log lines of its own (into the progress bar); the None it returns
    # becomes our one-line reason, so OpenCV's log is silent while any decode runs, then put back.
    # The level is global: counted, so overlapping calls cannot restore "silent" for good.
    global _quiet_calls, _saved_log_level
    with _quiet_lock:
        if _quiet_calls == 0:
            _saved_log_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_calls += 1
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    finally:
        with _quiet_lock:
            _quiet_calls -= 1
            if _quiet_calls == 0:
                cv2.utils.logging.setLogLevel(_saved_log_level)


def _decode(data: bytes, flags: int, path: Path, what: str) -> np.ndarray:
    if _truncated(data):
        raise FileProblem("truncated", f"{what} {path} is truncated (file ends early); re-copy or re-download it")
    array = _quiet_imdecode(data, flags)
    if array is None:
        raise FileProblem("unreadable", f"{what} {path} is not a readable image (corrupt or unsupported format)")
    return array


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image as an HxWx3 uint8 BGR array (OpenCV order)."""
    path = Path(path)
    image = _decode(_read_bytes(path, "image"), cv2.IMREAD_COLOR, path, "image")
    if image.dtype != np.uint8:  # IMREAD_COLOR already gives 8 bits; keep the promise explicit
        image = cv2.convertScaleAbs(image)
    return image


def _png_colour_type(data: bytes) -> int | None:
    """The PNG's IHDR colour type (0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA), None for other files."""
    return data[25] if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 25 else None


def _png_gray_bit_depth(data: bytes) -> int | None:
    """The bit depth (1, 2, 4, 8, 16) of a plain grayscale PNG, None for any other file."""
    return data[24] if _png_colour_type(data) == 0 else None


def read_label(path: str | Path) -> np.ndarray:
    """Decode a label mask as an HxW uint8 array of raw values, exactly as stored.

    A palette PNG, BMP, GIF or TIFF gives its indices, not its colours: that is how VOC-style
    tools store class ids; a gray + alpha PNG gives its gray values (OpenCV would expand both
    to BGR(A), so Pillow reads these); a 1-, 2- or 4-bit gray PNG gives its stored values
    (a 1-bit mask is 0/1, not 0/255).
    """
    path = Path(path)
    data = _read_bytes(path, "label")
    if data.startswith(PALETTE_SIGNATURES):
        ids = _palette_indices(data, path)
        if ids is not None:
            return as_label_array(ids, path)
    if _png_colour_type(data) in (3, 4) and not _truncated(data):
        try:
            with Image.open(io.BytesIO(data)) as image:
                ids = np.asarray(image)
        except (OSError, ValueError, SyntaxError):
            raise FileProblem("unreadable", f"label {path} is not a readable PNG (corrupt)") from None
        return as_label_array(ids[..., 0] if ids.ndim == 3 else ids, path)  # gray + alpha: the gray values
    label = _decode(data, cv2.IMREAD_UNCHANGED, path, "label")
    depth = _png_gray_bit_depth(data)
    if depth in (1, 2, 4) and label.dtype == np.uint8 and label.ndim == 2:
        # libpng scales 1/2/4-bit gray to 0..255 (a 1-bit 0/1 mask reads as 0/255, i.e. ignore): undo it
        label = label // (255 // (2**depth - 1))
    return as_label_array(label, path)


def _palette_indices(data: bytes, path: Path) -> np.ndarray | None:
    """The palette indices of a palette-mode BMP/GIF/TIFF, or None for other files (OpenCV reads those)."""
    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, ValueError, SyntaxError):
        return None  # not one Pillow reads: OpenCV's decoder gives the verdict
    with image:
        if image.mode not in ("P", "PA"):
            return None
        try:
            ids = np.asarray(image)
        except (OSError, ValueError, SyntaxError) as exc:  # header fine, pixels not: OpenCV would say "colour mask"
            kind = "truncated" if "truncated" in str(exc) else "unreadable"
            raise FileProblem(kind, f"label {path} is {'truncated (file ends early)' if kind == 'truncated' else 'corrupt'}"
                                    f" ({image.format} with a palette); re-copy or re-download it") from None
    return ids[..., 0] if ids.ndim == 3 else ids  # palette + alpha: the indices


MAX_MASK_VALUES = 64  # distinct values a class-id mask may hold; a grayscale photo holds far more


def swapped_kind(image_path: Path, label_path: Path) -> str:
    """'JPEG' or 'colour' when a pair's label looks like a photo and its image like a mask (swapped), else ''."""
    try:
        with Image.open(image_path) as image, Image.open(label_path) as label:
            # Colour labels only: a grayscale JPEG is a lossy mask (data check notes it), e.g. beside X-ray PNGs.
            if label.mode not in PHOTO_MODES or image.mode not in MASK_MODES or image.format == "JPEG":
                return ""
            # Pixels only now: grayscale photos (X-ray, SAR) beside colour masks, or masks saved as three equal
            # channels, are not swapped columns.
            if len(np.unique(np.asarray(image))) > MAX_MASK_VALUES:
                return ""
            if equal_channels(np.asarray(label.convert("RGB"))):
                return ""
            return "JPEG" if label.format == "JPEG" else "colour"
    except (OSError, ValueError, SyntaxError):
        return ""


def swapped_columns(image_path: Path, label_path: Path) -> str:
    """Why a list line looks like 'label,image' (its label a photo, its image a mask), '' when it does not."""
    kind = swapped_kind(image_path, label_path)
    if not kind:
        return ""
    photo = "a colour JPEG" if kind == "JPEG" else "a colour image"
    return (f"label {label_path} is {photo}, a photo, and image {image_path} a single-channel mask: the list's "
            "columns look swapped; each line is 'image,label', so put the photo first (for `bisenet data lists "
            "pairs`: the photo folder is --images, the mask folder --labels)")


def pair_problem(exc: FileProblem, entry: ListEntry, what: str) -> str:
    """The reason and fix for the unreadable `what` ('image' or 'label') of a list line, as every tool words it."""
    if exc.kind == "missing":
        return f"{exc}; {not_found_fix(entry, entry.image if what == 'image' else entry.label)}"
    if what == "label":
        other_file = cityscapes_other_file(entry.label)
        if other_file:
            return other_file
    if exc.kind == "not single-channel" and what == "label":
        return swapped_columns(entry.image, entry.label) or str(exc)
    return str(exc)


CITYSCAPES_OTHER_FILES = {"_instanceids.png": "instance ids (class id x 1000 + instance number)",
                          "_color.png": "colours for viewing", "_polygons.json": "polygons"}


def cityscapes_other_file(path: Path) -> str:
    """Why a Cityscapes gtFine/gtCoarse file other than the class ids cannot be a label, '' for any other file."""
    name = path.name.lower()
    for end, holds in CITYSCAPES_OTHER_FILES.items():
        kind = "_gtFine" if name.endswith("_gtfine" + end) else "_gtCoarse" if name.endswith("_gtcoarse" + end) else ""
        if kind:
            ids = path.name[: len(path.name) - len(kind + end)] + kind + "_labelIds.png"
            return (f"label {path} is a Cityscapes file of {holds}, not class ids: point the list at the "
                    f"*{kind}_labelIds.png files (here {ids}), or at *{kind}_labelTrainIds.png after `bisenet data "
                    "convert cityscapes ROOT`; `bisenet data lists cityscapes ROOT` writes such lists")
    return ""


def equal_channels(pixels: np.ndarray) -> bool:
    """True when an H x W x C array's channels are all alike (a grayscale picture saved in colour)."""
    return bool((pixels == pixels[:, :, :1]).all())


def is_jpeg(path: Path) -> bool:
    """True for a .jpg/.jpeg file name (a lossy label: its bad values are blamed on the compression)."""
    return path.suffix.lower() in (".jpg", ".jpeg")


def label_value_fix(path: Path) -> str | None:
    """The advice for a label's out-of-range values: JPEG_FIX for a JPEG, else None (the value check's own)."""
    return JPEG_FIX if is_jpeg(path) else None


def as_label_array(label: np.ndarray, path: Path) -> np.ndarray:
    """Check a decoded mask is single-channel with values that fit in 8 bits."""
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim != 2:
        channels = label.shape[2]
        if equal_channels(label[:, :, :3]):  # a grayscale mask saved as RGB: its values are the class ids already
            raise FileProblem("not single-channel", f"label {path} has {channels} channels, but its 3 colour channels "
                                                    f"are equal: save it as a single-channel (grayscale) PNG")
        raise FileProblem(
            "not single-channel",
            f"label {path} has {channels} channels (a colour mask); {COLOUR_MASK_FIX}",
        )
    if label.dtype != np.uint8:
        if not np.issubdtype(label.dtype, np.integer):
            raise FileProblem("bad dtype", f"label {path} holds {label.dtype} values; save integer class ids as 8-bit PNG")
        high = int(label.max()) if label.size else 0
        if label.min() < 0 or high > 255:
            raise FileProblem(
                "out of range",
                f"label {path} is {label.dtype} with values up to {high} (above 255); "
                "save train ids (or remap them) as an 8-bit PNG",
            )
        label = label.astype(np.uint8)
    return label


EXIF_ORIENTATION = 0x0112
EXIF_TURNS = {2: "mirror", 3: "rotate 180 degrees", 4: "flip upside down", 5: "transpose",
              6: "rotate 90 degrees clockwise", 7: "transverse", 8: "rotate 90 degrees counter-clockwise"}


def exif_orientation(path: str | Path) -> int:
    """The EXIF Orientation tag (2-8: OpenCV rotates or mirrors the image on reading), 1 when none."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG" and "exif" not in image.info:  # else Pillow decodes every pixel to look further
                return 1
            value = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        return 1
    return value if value in EXIF_TURNS else 1


def size_mismatch(image_path: Path, image_shape: tuple, label_path: Path, label_shape: tuple) -> str:
    """Why an image and its label differ in size, and the fix ('' when they match)."""
    (ih, iw), (lh, lw) = image_shape[:2], label_shape[:2]
    if (ih, iw) == (lh, lw):
        return ""
    sizes = f"image {image_path} is {iw}x{ih} but label {label_path} is {lw}x{lh} (WxH)"
    orientation = exif_orientation(image_path)  # read only on a mismatch: one header parse per bad pair
    if orientation == 1:
        return f"{sizes}; they must be the same size (resize the label with nearest)"
    turn = (f"the image's EXIF orientation tag ({orientation}: {EXIF_TURNS[orientation]}) is applied on reading, "
            f"so strip the tag (e.g. `exiftool -Orientation= -overwrite_original {image_path}`) or rotate the label "
            "to match the displayed image")
    if (ih, iw) == (lw, lh):
        return f"{sizes}, each other's transpose: {turn}"
    return f"{sizes}; {turn}, and give both the same size (resize the label with nearest)"


def image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) as OpenCV decodes it (EXIF turn applied), from the file header only; (-1, -1) when unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.format == "TIFF":  # the stored size: newer Pillow reports a TIFF's size turned already
                width, height = image.tag_v2.get(256, width), image.tag_v2.get(257, height)
            # OpenCV applies the EXIF turn on reading: orientations 5-8 swap the sides.
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except (OSError, ValueError, SyntaxError):
        return (-1, -1)  # unreadable: the reader raises the real error
    return (height, width) if turned else (width, height)
