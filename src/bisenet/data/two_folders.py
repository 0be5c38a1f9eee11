"""`bisenet data lists pairs` with an images folder and a labels folder: which naming rule pairs them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bisenet.data.layouts import Pairing, files_under, key_in, pair_files, suffix_note
from bisenet.errors import DataError

SEPARATORS = "_-. "
Key = Callable[[Path], str]


def pair_two_folders(images_dir: Path, labels_dir: Path, hidden: list[Path]) -> Pairing:
    """Pair by the same path without the extension, or by <image name><suffix>: the rule that pairs more.

    Where the two rules give one file two different partners (road_mask.png: road_mask.jpg's by name,
    road.jpg's by the suffix rule), the rule pairing more files wins with a note; a tie is refused. The suffix rule
    is weighed only where it pairs a label the same-name rule leaves unpaired: names ending in _0/_1 (tiles,
    frames) that all pair by name raise no conflict.
    """
    images, labels = files_under(images_dir, hidden=hidden), files_under(labels_dir, hidden=hidden)
    image_key, label_key = key_in(images_dir), key_in(labels_dir)
    pairing = pair_files(images, labels, image_key, label_key)
    if not pairing.lonely_labels or not pairing.lonely_images:
        return pairing
    chosen = _suffix_rule(images, labels, image_key, label_key, pairing, (images_dir, labels_dir))
    if chosen is not None:
        return chosen
    lonely = [label_key(p) for p in pairing.lonely_labels]
    suffix = _label_suffix(lonely, {image_key(p) for p in pairing.lonely_images})
    example = pairing.lonely_labels[0]
    by_name = {Path(key).name: label for key, label in zip(lonely, pairing.lonely_labels)}
    moved = [(image, by_name[Path(image_key(image)).name]) for image in pairing.lonely_images
             if Path(image_key(image)).name in by_name]  # same name, other subfolder
    if suffix and not pairing.pairs:  # every label is <image name><suffix>: pair them that way
        pairing = pair_files(images, labels, image_key, lambda p: label_key(p).removesuffix(suffix))
        pairing.notes.append(suffix_note(suffix, *pairing.pairs[0]))
    elif suffix:  # some labels match by name, the rest carry a suffix: say how to rename those
        end, ext = suffix + example.suffix, example.suffix  # e.g. '_mask.png' -> '.png'
        one_kind = all(p.suffix == ext for p in pairing.lonely_labels) and "/" not in "".join(lonely) and \
            not any(label.name.endswith(end) for _, label in pairing.pairs)  # the loop would rename a_0.png onto a.png
        rename = f': for f in {labels_dir}/*{end}; do mv "$f" "${{f%{end}}}{ext}"; done' if one_kind else ""
        many = f"{len(lonely)} labels are" if len(lonely) > 1 else "1 label is"
        pairing.notes.append(f"{many} named <image name>{suffix} (e.g. {example.name}) but images and labels pair by "
                             f"the same file name without the extension; rename them{rename}")
    elif moved:
        image, label = moved[0]
        expected = labels_dir / Path(image_key(image)).with_suffix(label.suffix)
        many = f"{len(moved)} images have" if len(moved) > 1 else "1 image has"
        pairing.notes.append(f"{many} a label of the same name in another subfolder (e.g. {image} and {label}); "
                             f"pairs matches the path inside --images and --labels, subfolders included, so {image} "
                             f"expects {expected}: give the labels the images' subfolders")
    elif _case_note(pairing, image_key, label_key):
        pairing.notes.append(_case_note(pairing, image_key, label_key))
    elif len(pairing.lonely_labels) > len(pairing.pairs):
        pairing.notes.append(f"images and labels pair by the same path without the extension (e.g. "
                             f"{pairing.lonely_images[0].name} <-> {Path(image_key(pairing.lonely_images[0])).name}"
                             f".png); give each label its image's name")
    return pairing


def _suffix_rule(images: list[Path], labels: list[Path], image_key: Key, label_key: Key, by_name: Pairing,
                 folders: tuple[Path, Path]) -> Pairing | None:
    """The pairing by the commonest <image name><suffix> rule where it gives a file another partner than the
    same-name rule and pairs more; None where the name rule stands (the callers' notes apply).

    Suffixes are counted over the labels the name rule leaves unpaired only: a suffix rule that pairs none of
    them adds nothing, however many paired labels also read as <image name>_0 (tiles a, a_0 and labels a, a_0).
    """
    keys = {image_key(p) for p in images}
    counts: dict[str, int] = {}
    for label in by_name.lonely_labels:
        key = label_key(label)
        for i in range(1, len(key)):
            if key[i] in SEPARATORS and "/" not in key[i:] and key[:i] in keys:
                counts[key[i:]] = counts.get(key[i:], 0) + 1
    if not counts:
        return None
    suffix = max(counts, key=lambda s: (counts[s], len(s)))
    by_suffix = pair_files(images, labels, image_key,
                           lambda p: k[: -len(suffix)] if (k := label_key(p)).endswith(suffix) else "\0" + k)
    partner = dict(by_suffix.pairs)
    label_of = {label: image for image, label in by_suffix.pairs}
    clash = next(((image, label) for image, label in by_name.pairs
                  if partner.get(image, label) != label or label_of.get(label, image) != image), None)
    if clash is None:
        return None
    image, label = clash
    other = label_of.get(label)
    conflict = (f"{image.name} <-> {label.name} by the same name, but {other.name if other else image.name} <-> "
                f"{(label if other else partner[image]).name} by the rule <image name>{suffix}")
    if len(by_suffix.pairs) == len(by_name.pairs):
        raise DataError(f"images in {folders[0]} and labels in {folders[1]} fit two naming rules that pair them "
                        f"differently ({conflict}), each pairing {len(by_name.pairs)}: rename the labels to one rule "
                        f"(all <image name>{suffix}, or all the image's name)")
    if len(by_suffix.pairs) < len(by_name.pairs):
        by_name.notes.append(f"paired by the same name ({len(by_name.pairs)} pairs), not by the rule <image name>"
                             f"{suffix} ({len(by_suffix.pairs)}), which pairs them differently ({conflict})")
        return None  # the name rule stands: the callers' notes (case, subfolder, rename) still apply
    by_suffix.notes.append(f"labels fit two naming rules that pair them differently ({conflict}): paired by <image "
                           f"name>{suffix}, which pairs {len(by_suffix.pairs)} against {len(by_name.pairs)}; check "
                           "the list, and rename the labels to that one rule")
    return by_suffix


def _case_note(pairing: Pairing, image_key: Key, label_key: Key) -> str:
    """A note when lonely images and labels differ only in letter case (IMG_0.JPG <-> img_0.png), else ''."""
    labels = {label_key(p).casefold(): p for p in pairing.lonely_labels}
    matches = [(image, labels[image_key(image).casefold()]) for image in pairing.lonely_images
               if image_key(image).casefold() in labels]
    if not matches:
        return ""
    image, label = matches[0]
    many = f"{len(matches)} images match a label" if len(matches) > 1 else "1 image matches a label"
    return (f"{many} only in letter case (e.g. {image.name} <-> {label.name}): names pair case-sensitively; "
            "rename the images or the labels to the same case")


def _label_suffix(label_keys: list[str], image_keys: set[str]) -> str:
    """The suffix (e.g. '_mask') that makes every label key an image key plus it, or '' if there is none."""
    first = label_keys[0]
    candidates = sorted((first[len(key):] for key in image_keys if first.startswith(key)), key=len)
    for suffix in candidates:  # e.g. '_mask', '-gt', '.label': a separator, then no folder
        if suffix and suffix[0] in SEPARATORS and "/" not in suffix and \
                all(k.endswith(suffix) and k[: -len(suffix)] in image_keys for k in label_keys):
            return suffix
    return ""
