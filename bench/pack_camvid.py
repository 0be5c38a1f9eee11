"""Pack CamVid small enough to travel to a lent GPU machine (the device tool carries <= 64 MiB).

    python bench/pack_camvid.py [--src ../shared/data/camvid] [--out .gpu/camvid] [--quality 95]

Images become JPEG (quality 95: the 120 MiB of PNGs shrink to about 34 MiB); labels stay
lossless PNG; train.txt and val.txt are rewritten to match. `.gpu/` is git-ignored, so name it
in the device call's `carry`. JPEG changes pixels slightly: score the weights that come back
on the original PNGs here (`bisenet eval ... --data-root ../shared/data/camvid`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2


def pack(src: Path, out: Path, quality: int) -> int:
    """Copy every pair of src's train/val lists into out, images as JPEG; returns the bytes written."""
    total = 0
    for split in ("train", "val"):
        lines = []
        for line_no, line in enumerate((src / f"{split}.txt").read_text().splitlines(), 1):
            if not line.strip():
                continue
            image_rel, label_rel = line.split(",")
            image = cv2.imread(str(src / image_rel), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f"{src / f'{split}.txt'} line {line_no}: cannot read {src / image_rel}")
            jpeg_rel = str(Path(image_rel).with_suffix(".jpg"))
            for rel in (jpeg_rel, label_rel):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / jpeg_rel), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            shutil.copyfile(src / label_rel, out / label_rel)
            total += (out / jpeg_rel).stat().st_size + (out / label_rel).stat().st_size
            lines.append(f"{jpeg_rel},{label_rel}")
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("../shared/data/camvid"))
    parser.add_argument("--out", type=Path, default=Path(".gpu/camvid"))
    parser.add_argument("--quality", type=int, default=95)
    args = parser.parse_args()
    if not (args.src / "train.txt").is_file():
        raise SystemExit(f"{args.src / 'train.txt'}: not found; pass --src pointing at the CamVid folder")
    size = pack(args.src, args.out, args.quality)
    try:  # carry names a path inside the repository, relative to its root (this script runs from there)
        carry = args.out.resolve().relative_to(Path.cwd().resolve()).parts[0]
        advice = f"carry it with the device call: carry ['{carry}']"
    except ValueError:
        advice = "it lies outside this folder: pack it inside the repository (e.g. --out .gpu/camvid) to carry it"
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB); {advice}")


if __name__ == "__main__":
    main()
