"""`bisenet data lists`: list files from official dataset layouts or from two folders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bisenet.data.decode import MASK_MODES, swapped_kind
from bisenet.data.lists import check_list_output, existing_lines, format_list
from bisenet.errors import DataError, check_output_file, write_text_atomic

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")  # all OpenCV reads
LAYOUTS = ("cityscapes", "cocostuff", "ade20k", "camvid")


@dataclass
class Pairing:
    """Matched (image, label) pairs and the files left without a partner."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    lonely_images: list[Path] = field(default_factory=list)
    lonely_labels: list[Path] = field(default_factory=list)
    duplicate_images: list[Path] = field(default_factory=list)  # same name as a paired image, other extension
    hidden: list[Path] = field(default_factory=list)  # dot-files (macOS ._x.jpg, .DS_Store...), never paired
    notes: list[str] = field(default_factory=list)  # how names were matched, or how to rename them to match
    swapped: str = ""  # why --images and --labels look swapped: such a list is refused


@dataclass
class ListsReport:
    """Lists written (path -> number of pairs), lists they replaced (path -> old line count), unmatched groups."""

    written: dict[Path, int] = field(default_factory=dict)
    replaced: dict[Path, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def files_under(folder: Path, exts: tuple[str, ...] = IMAGE_EXTS, hidden: list[Path] | None = None) -> list[Path]:
    """Image files under `folder`, sorted; dot-files (and files in dot-folders) go to `hidden` instead."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):  # AppleDouble ._x.jpg is no image
            if hidden is not None:
                hidden.append(path)
        else:
            files.append(path)
    return files


def pair_files(images: list[Path], labels: list[Path], image_key: Callable[[Path], str],
               label_key: Callable[[Path], str]) -> Pairing:
    """Match images and labels whose keys are equal; keep the image order."""
    by_key: dict[str, Path] = {}
    for label in labels:
        by_key.setdefault(label_key(label), label)
    result = Pairing()
    used = set()
    for image in images:
        label = by_key.get(image_key(image))
        if label is None:
            result.lonely_images.append(image)
        elif label in used:  # a.jpg and a.png: one label would be listed twice
            result.duplicate_images.append(image)
        else:
            result.pairs.append((image, label))
            used.add(label)
    result.lonely_labels = [label for label in labels if label not in used]
    return result


def pair_folders(images_dir: Path, labels_dir: Path) -> Pairing:
    """Pair files by their path inside each folder without the extension (a/b.jpg <-> a/b.png).

    One folder for both pairs each label named <image name><suffix> with its image (a.jpg <-> a_mask.png).
    """
    for what, folder in (("--images", images_dir), ("--labels", labels_dir)):
        if not folder.is_dir():
            raise DataError(f"{what} {folder} is not a directory; pass the folder that holds the files")
    hidden: list[Path] = []
    if images_dir.resolve() == labels_dir.resolve():  # by name alone every file would be its own partner
        pairing = _pair_in_one_folder(images_dir, files_under(images_dir, hidden=hidden))
    else:
        # two_folders builds on this module's helpers: imported here, once this module is loaded
        from bisenet.data.two_folders import pair_two_folders

        pairing = pair_two_folders(images_dir, labels_dir, hidden)
    pairing.hidden = hidden
    pairing.swapped = _looks_swapped(pairing.pairs)
    return pairing


def key_in(folder: Path) -> Callable[[Path], str]:
    """Key = path inside `folder` without the extension."""
    return lambda p: p.relative_to(folder).with_suffix("").as_posix()


def suffix_note(suffix: str, image: Path, label: Path) -> str:
    """The note saying that labels were paired by the <image name><suffix> rule, with one example."""
    return (f"labels are named <image name>{suffix}: paired each with the image of its name without {suffix!r} "
            f"(e.g. {image.name} <-> {label.name})")


ONE_FOLDER_RULE = ("in one folder, pairs needs every label named <image name><suffix> (e.g. a.jpg, a_mask.png); rename "
                   "the labels so, or keep images and labels in two folders (e.g. images/a.jpg, labels/a.png)")


def _pair_in_one_folder(folder: Path, files: list[Path]) -> Pairing:
    """Images and labels in one folder: labels are the files named <image name><suffix>, for one common suffix.

    Only files that look like masks count for a suffix, so a.jpg's a_vis.jpg (a JPEG visualisation) loses to
    a_mask.png even where more images have one.
    """
    key = key_in(folder)
    by_key: dict[str, list[Path]] = {}
    for path in files:
        by_key.setdefault(key(path), []).append(path)
    candidates: dict[str, list[str]] = {}  # suffix -> keys named <image key><suffix>
    for k in by_key:
        for i in range(1, len(k)):
            if k[i] in "_-. " and "/" not in k[i:] and k[:i] in by_key:
                candidates.setdefault(k[i:], []).append(k)
    kinds: dict[Path, str] = {}
    if not candidates:
        pairing = _pair_by_extension(by_key, kinds)
        if pairing is None:
            raise DataError(f"--images and --labels are both {folder}, and its files follow no one label naming "
                            f"rule: {ONE_FOLDER_RULE}")
        return pairing
    scores = {suffix: _mask_score(keys, by_key, kinds) for suffix, keys in candidates.items()}
    ranked = sorted(scores, key=lambda suffix: scores[suffix], reverse=True)
    suffix = ranked[0]
    if scores[suffix] == (0, 0):
        common = sorted(candidates, key=lambda s: len(candidates[s]), reverse=True)
        found = "; ".join(_describe_suffix(s, candidates[s], by_key, kinds) for s in common[:3])
        more = "; ..." if len(common) > 3 else ""
        raise DataError(f"--images and --labels are both {folder}, and no file named <image name><suffix> looks like "
                        f"a label mask (found {found}{more}): labels must be single-channel class ids (e.g. 8-bit "
                        f"grayscale or palette PNG; map colour masks to ids first); {ONE_FOLDER_RULE}")
    if len(ranked) > 1 and scores[ranked[1]] == scores[suffix]:  # two suffixes with as many masks: no rule
        raise DataError(f"--images and --labels are both {folder}, and its files follow no one label naming rule "
                        f"(as many masks end in {suffix!r} as in {ranked[1]!r}): {ONE_FOLDER_RULE}")
    labels = [p for p in files if key(p).endswith(suffix)]
    taken = set(labels)
    pairing = pair_files([p for p in files if p not in taken], labels, key, lambda p: key(p).removesuffix(suffix))
    if pairing.pairs:
        pairing.notes.append(suffix_note(suffix, *pairing.pairs[0]))
    by_name = max(candidates, key=lambda s: len(candidates[s]))
    if len(candidates[by_name]) > len(candidates[suffix]):  # the old rule, by name alone, would have picked it
        pairing.notes.append(f"{_describe_suffix(by_name, candidates[by_name], by_key, kinds)} look less like "
                             f"masks than the {suffix!r} files, so they were taken as images, not labels")
    return pairing


def _pair_by_extension(by_key: dict[str, list[Path]], kinds: dict[Path, str]) -> Pairing | None:
    """a.jpg beside a.png: where every name held twice is one mask and one non-mask, the mask is the label.

    None when some name's two files cannot be told apart (two masks, two photos) or a name is held thrice.
    """
    groups = [paths for paths in by_key.values() if len(paths) > 1]
    if not groups or any(len(paths) != 2 for paths in groups):
        return None
    pairing = Pairing()
    for paths in by_key.values():
        if len(paths) == 1:
            alone = paths[0]
            (pairing.lonely_labels if _mask_kind(alone, kinds) == "mask" else pairing.lonely_images).append(alone)
            continue
        masks = [p for p in paths if _mask_kind(p, kinds) == "mask"]
        if len(masks) != 1:
            return None
        image = paths[1] if masks[0] == paths[0] else paths[0]
        pairing.pairs.append((image, masks[0]))
    image, label = pairing.pairs[0]
    pairing.notes.append(f"labels share their image's name with another extension: paired each single-channel mask "
                         f"with the other file of its name (e.g. {image.name} <-> {label.name})")
    return pairing


def _mask_kind(path: Path, kinds: dict[Path, str]) -> str:
    """'mask' (lossless single-channel), 'lossy' (grayscale JPEG), else why not: 'JPEG', 'colour', 'unreadable'."""
    if path not in kinds:
        try:
            with Image.open(path) as image:  # the header only
                jpeg = image.format == "JPEG"
                kinds[path] = ("lossy" if image.mode == "L" else "JPEG") if jpeg else \
                    "mask" if image.mode in MASK_MODES else "colour"
        except (OSError, ValueError, SyntaxError):
            kinds[path] = "unreadable"
    return kinds[path]


def _mask_score(keys: list[str], by_key: dict[str, list[Path]], kinds: dict[Path, str]) -> tuple[int, int]:
    """(lossless masks, grayscale JPEG masks) among these keys' files: lossless ones rank first, lossy ones as a
    last resort (data check notes JPEG labels), photos and colour files never."""
    found = [{_mask_kind(p, kinds) for p in by_key[k]} for k in keys]
    return sum("mask" in f for f in found), sum("lossy" in f and "mask" not in f for f in found)


KIND_WORDS = {"mask": "a single-channel mask", "lossy": "a grayscale JPEG", "JPEG": "a colour JPEG",
              "colour": "a colour image", "unreadable": "no readable image"}


def _describe_suffix(suffix: str, keys: list[str], by_key: dict[str, list[Path]], kinds: dict[Path, str]) -> str:
    """E.g. "3 files named <image name>'_vis' (e.g. a_vis.jpg, a colour JPEG)"."""
    example = by_key[keys[0]][0]
    many = f"{len(keys)} files" if len(keys) > 1 else "1 file"
    return f"{many} named <image name>{suffix!r} (e.g. {example.name}, {KIND_WORDS[_mask_kind(example, kinds)]})"


def _looks_swapped(pairs: list[tuple[Path, Path]]) -> str:
    """Why the 'labels' look like photos (colour) and the 'images' like masks; '' otherwise."""
    if not pairs:
        return ""
    kinds = [swapped_kind(*pairs[i]) for i in sorted({0, len(pairs) // 2, len(pairs) - 1})]  # a few pairs
    if not all(kinds):  # one pair that is not swapped: not clearly swapped
        return ""
    image, label = pairs[0]
    return (f"--images and --labels look swapped: the labels are photos (e.g. {label.name}, {kinds[0]}) and the "
            f"images single-channel masks (e.g. {image.name}); pass the photo folder as --images and the mask folder "
            "as --labels")


def _strip(suffix: str) -> Callable[[Path], str]:
    """Key = file name without a dataset-specific suffix (e.g. '_leftImg8bit.png')."""
    return lambda p: p.name.removesuffix(suffix)


def _cityscapes(root: Path, train_ids: bool) -> dict[str, Pairing]:
    label_suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
    splits = {}
    for split in ("train", "val", "test"):
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        if image_dir.is_dir():
            images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
            labels = sorted(label_dir.glob(f"*/*{label_suffix}")) if label_dir.is_dir() else []
            splits[split] = pair_files(images, labels, _strip("_leftImg8bit.png"), _strip(label_suffix))
    return splits


def _by_stem(image_dir: Path, label_dir: Path) -> Pairing:
    images = files_under(image_dir) if image_dir.is_dir() else []
    labels = files_under(label_dir, (".png",)) if label_dir.is_dir() else []
    return pair_files(images, labels, lambda p: p.stem, lambda p: p.stem)


def _cocostuff(root: Path, train_ids: bool = False) -> dict[str, Pairing]:
    """COCO-Stuff 164k: raw-id labels X.png, or mmsegmentation's converted X_labelTrainIds.png (annotations/)."""
    splits = {}
    for split, name in (("train", "train2017"), ("val", "val2017")):
        image_dir = next((d for d in (root / "images" / name, root / name) if d.is_dir()), None)
        label_dir = next((d for d in (root / "labels" / name, root / "stuffthingmaps_trainval2017" / name,
                                      root / "stuffthingmaps" / name, root / "annotations" / name) if d.is_dir()),
                         root / "labels" / name)
        if image_dir is None:
            continue
        images = files_under(image_dir)
        labels = files_under(label_dir, (".png",)) if label_dir.is_dir() else []
        converted = [p for p in labels if p.name.endswith(TRAIN_IDS)]
        raw = [p for p in labels if not p.name.endswith(TRAIN_IDS)]
        # Both beside each other (mmsegmentation converts in place): --train-ids picks which; the other is no orphan.
        chosen = converted if converted and (train_ids or not raw) else raw
        splits[split] = pair_files(images, chosen, lambda p: p.stem, lambda p: p.name.removesuffix(TRAIN_IDS)
                                   .removesuffix(".png"))
    return splits


TRAIN_IDS = "_labelTrainIds.png"


def _ade20k(root: Path) -> dict[str, Pairing]:
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    return {split: _by_stem(root / "images" / name, root / "annotations" / name)
            for split, name in (("train", "training"), ("val", "validation")) if (root / "images" / name).is_dir()}


def _camvid(root: Path) -> dict[str, Pairing]:
    splits = {}
    for split in ("train", "val", "test"):
        if (root / split / "images").is_dir():  # images/labels subfolders
            splits[split] = _by_stem(root / split / "images", root / split / "labels")
        elif (root / split).is_dir():  # SegNet: train/ + trainannot/
            splits[split] = _by_stem(root / split, root / f"{split}annot")
    return splits


EXPECTED = {
    "cityscapes": "leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_labelIds.png",
    "cocostuff": "images/{train2017,val2017}/*.jpg and labels/{train2017,val2017}/*.png (or annotations/.../"
                 "*.png or *_labelTrainIds.png, mmsegmentation's layout)",
    "ade20k": "ADEChallengeData2016/images/{training,validation}/*.jpg and annotations/.../*.png",
    "camvid": "train/ val/ test/ with trainannot/ ... (SegNet) or <split>/images + <split>/labels",
}


def write_dataset_lists(dataset: str, root: str | Path, out: str | Path | None = None,
                        train_ids: bool = False) -> ListsReport:
    """Write train/val(/test).txt for an official layout; paths in them are relative to root."""
    root = Path(root)
    if dataset not in LAYOUTS:
        raise DataError(f"no list layout for {dataset!r}; choose one of {', '.join(LAYOUTS)} or use 'pairs'")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass the {dataset} dataset folder")
    finders = {"cityscapes": lambda r: _cityscapes(r, train_ids), "cocostuff": lambda r: _cocostuff(r, train_ids),
               "ade20k": _ade20k, "camvid": _camvid}
    splits = finders[dataset](root)
    if not any(p.pairs for p in splits.values()):
        if dataset == "cityscapes" and train_ids and any(p.pairs for p in _cityscapes(root, False).values()):
            raise DataError(f"found no *_gtFine_labelTrainIds.png under {root / 'gtFine'}; write them first with "
                            f"`bisenet data convert cityscapes {root}`, or drop --train-ids to list the labelIds files")
        raise DataError(f"found no {dataset} image/label pairs under {root}; expected {EXPECTED[dataset]}")
    out_dir = Path(out) if out is not None else root
    report = ListsReport()
    texts = {}
    for split, pairing in splits.items():
        report.warnings.extend(describe_unmatched(pairing, f"{dataset} {split}"))
        if pairing.pairs:  # format and check every list before writing any: no half-updated set of lists
            path = check_output_file(out_dir / f"{split}.txt", "list file", f"{split}.txt")
            check_list_output(path, "list file", f"pass another --out folder, e.g. --out {out_dir / 'lists'}",
                              pairing.pairs)
            texts[path] = (format_list(pairing.pairs, root), len(pairing.pairs))
    for path, (text, count) in texts.items():
        old = existing_lines(path)
        if old is not None:
            report.replaced[path] = old
        write_text_atomic(path, text, "list file", path.name)
        report.written[path] = count
    return report


def describe_unmatched(pairing: Pairing, what: str) -> list[str]:
    """One warning line per side with unmatched files (naming the first few)."""
    lines = []
    for files, side, partner in ((pairing.lonely_images, "image", "a label"),
                                 (pairing.lonely_labels, "label", "an image")):
        if files:
            shown = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
            many = f"{side}s" if len(files) > 1 else side
            lines.append(f"{what}: {len(files)} {many} without {partner}, skipped: {shown}")
    if pairing.hidden:
        files = pairing.hidden
        shown = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
        many = "hidden files (names starting with '.')" if len(files) > 1 else "hidden file (name starting with '.')"
        lines.append(f"{what}: {len(files)} {many}, skipped: {shown}")
    if pairing.duplicate_images:
        files = pairing.duplicate_images
        shown = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
        share = "images share their name" if len(files) > 1 else "image shares its name"
        lines.append(f"{what}: {len(files)} {share} with another image (other extension), skipped: "
                     f"{shown}; keep one file per name")
    return lines + [f"{what}: {note}" for note in pairing.notes]
