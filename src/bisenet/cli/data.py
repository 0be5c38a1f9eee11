"""`bisenet data convert|lists|check|show`: thin wrappers over bisenet.data tools."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bisenet.errors import DataError, check_output_file

DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the convert, lists, check and show tools."""
    sub = parser.add_subparsers(dest="data_command", metavar="TOOL", required=True)

    convert = sub.add_parser("convert", help="write Cityscapes *_gtFine_labelTrainIds.png files",
                             description="Write *_gtFine_labelTrainIds.png beside every *_gtFine_labelIds.png "
                                         "(parallel; up-to-date files are skipped; each file written atomically).")
    convert.add_argument("dataset", choices=["cityscapes"])
    convert.add_argument("root", type=Path, help="folder holding gtFine/")
    convert.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                         help=f"files converted in parallel (default {DEFAULT_WORKERS})")
    convert.add_argument("--force", action="store_true", help="rewrite files that look up to date")

    lists = sub.add_parser("lists", help="write train/val(/test) list files",
                           description="Write 'image,label' list files (paths relative to ROOT) from an official "
                                       "layout, or pair two folders of a custom dataset by file name.")
    lists.add_argument("layout", choices=["cityscapes", "cocostuff", "ade20k", "camvid", "pairs"])
    lists.add_argument("root", type=Path, help="dataset folder; list paths are relative to it")
    lists.add_argument("--out", type=Path, default=None,
                       help="folder for the lists (default ROOT; a relative folder is taken from the current "
                            "directory); for 'pairs' (required there): the list file (relative to ROOT)")
    lists.add_argument("--images", type=Path, help="pairs: image folder (relative to ROOT or absolute)")
    lists.add_argument("--labels", type=Path, help="pairs: label folder (relative to ROOT or absolute)")
    lists.add_argument("--train-ids", action="store_true",
                       help="cityscapes: point at *_labelTrainIds.png (after `bisenet data convert`); cocostuff: "
                            "prefer mmsegmentation's *_labelTrainIds.png where raw-id labels lie beside them")

    check = sub.add_parser("check", help="read every pair of a list and report problems",
                           description="Read every image/label pair; print one line per problem (exit 1) or a "
                                       "summary with class shares and the RGB mean/std for a config.")
    check.add_argument("--root", type=Path, help="data root the list paths are relative to (default: . or the config's)")
    check.add_argument("--list", help="list file: a bare name under ROOT, else the cwd; ./NAME or ../NAME is that file")
    check.add_argument("--config", help="take root, list, classes, ignore index and label map from this YAML")
    check.add_argument("--split", choices=["train", "val", "test"],
                       help="with --config: the split whose list to check (default train)")
    check.add_argument("--num-classes", type=int,
                       help="classes (default: the --dataset's; with --config: data.num_classes, which this replaces)")
    check.add_argument("--ignore-index", type=int,
                       help="label value that marks unlabelled pixels (default 255; with --config: data.ignore_index, "
                            "which this replaces)")
    check.add_argument("--dataset", help="read labels as this dataset's ids: its label map, classes and valid "
                                         "values (e.g. cityscapes for labelIds)")
    check.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                       help=f"pairs read in parallel (default {DEFAULT_WORKERS})")

    show = sub.add_parser("show", help="draw samples as the network gets them: photo | train ids | overlay",
                          description="Write one PNG with samples spread over a split: the photo, its train ids "
                                      "in the config's colours and their overlay, plus a legend of the classes "
                                      "shown; --augment draws the training crop, scale, flip and jitter.")
    show.add_argument("config", help="YAML config (classes, colours, label map, augmentation)")
    show.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG to write (default samples.png)")
    show.add_argument("--split", choices=["train", "val", "test"], default="train",
                      help="the split whose list to draw (default train)")
    show.add_argument("--list", help="list file instead of the split's")
    show.add_argument("--data-root", type=Path, help="override data.root")
    show.add_argument("--count", type=int, default=6, help="samples, spread evenly over the list (default 6)")
    show.add_argument("--augment", action="store_true", help="train split: as augmented for training")
    show.add_argument("--epoch", type=int, default=0,
                      help="with --augment: the epoch whose random draws to show (default 0)")
    show.add_argument("--width", type=int, default=400, help="pixels per panel (default 400)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen tool; 0 on success, 1 when it found problems."""
    return {"convert": _convert, "lists": _lists, "check": _check, "show": _show}[args.data_command](args)


def _show(args: argparse.Namespace) -> int:
    from bisenet.data.show import show_samples

    check_output_file(args.out, "--out", "samples.png")  # before any decoding
    path = show_samples(args.config, args.out, split=args.split, count=args.count, augment=args.augment,
                        data_root=args.data_root, list_file=args.list, epoch=args.epoch, width=args.width, log=print)
    print(f"wrote {path}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from bisenet.data.convert import convert_cityscapes

    _check_workers(args.workers)
    report = convert_cityscapes(args.root, workers=args.workers, force=args.force)
    for line in report.failures:
        print(line)
    print(f"converted {report.converted}, up to date {report.skipped}, failed {len(report.failures)}")
    return 1 if report.failures else 0


def _check_workers(workers: int) -> None:
    """Refuse a --workers below 1 (a pool of 0 threads reads nothing; it used to be taken as 1 silently)."""
    if workers < 1:
        raise DataError(f"--workers {workers}: need at least 1 (files read in parallel; 1 reads them one by one)")


def _under(root: Path, path: Path) -> Path:
    """A user path: absolute as is, else relative to ROOT when it exists there, else to the cwd."""
    if path.is_absolute() or not (root / path).exists() and path.exists():
        return path
    return root / path


def _lists(args: argparse.Namespace) -> int:
    from bisenet.data.layouts import IMAGE_EXTS, describe_unmatched, pair_folders, write_dataset_lists
    from bisenet.data.lists import check_list_output, existing_lines, write_list

    if args.layout != "pairs":  # they name the two folders of `pairs` only: a layout finds its own
        given = [flag for flag, value in (("--images", args.images), ("--labels", args.labels)) if value is not None]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise DataError(f"{' and '.join(given)} {verb} to `bisenet data lists pairs` only; `lists {args.layout}` "
                            f"finds the {args.layout} layout's folders under ROOT itself: drop {' and '.join(given)}, "
                            "or use `bisenet data lists pairs ROOT --images DIR --labels DIR --out LIST`")
    if args.layout == "pairs":
        if args.images is None or args.labels is None or args.out is None:
            raise DataError("lists pairs needs --images DIR --labels DIR --out LIST")
        if not args.root.is_dir():  # else --images/--labels found in the cwd would pair into a list under no root
            raise DataError(f"ROOT {args.root} is not a directory; pass the dataset folder (the list's paths are "
                            "relative to it)")
        out = args.out if args.out.is_absolute() else args.root / args.out
        check_output_file(out, "--out", "train.txt")  # before pairing the folders
        images, labels = _under(args.root, args.images), _under(args.root, args.labels)
        pairing = pair_folders(images, labels)
        # Before anything is printed: a label, a config or any other non-list file there must survive.
        example = "pairs.txt" if args.out.name == "train.txt" else "train.txt"
        check_list_output(out, "--out", f"pass another path, e.g. --out {example} (relative to ROOT)", pairing.pairs)
        unmatched = describe_unmatched(pairing, "pairs")
        for line in unmatched:
            print(line)
        if pairing.swapped:  # every label would fail `data check` as a colour file
            print(f"pairs: {pairing.swapped}; nothing written")
            return 1
        if not pairing.pairs:
            empty = [f"{flag} {folder}" for flag, folder, files in
                     (("--images", images, pairing.lonely_images), ("--labels", labels, pairing.lonely_labels))
                     if not files]
            if empty:  # nothing to pair: "see the lines above" would point at nothing
                many = "hold" if len(empty) > 1 else "holds"
                raise DataError(f"{' and '.join(empty)} {many} no image files ({', '.join(IMAGE_EXTS)}, in subfolders "
                                "too); pass the folders that hold the files")
            raise DataError(f"no image in {images} has a label at the same path inside {labels} (without the "
                            "extension, or plus one suffix such as _mask); see the lines above")
        old = existing_lines(out)
        print(_wrote(out, write_list(out, pairing.pairs, args.root), old))
        return 0
    report = write_dataset_lists(args.layout, args.root, args.out, train_ids=args.train_ids)
    for line in report.warnings:
        print(line)
    for path, count in report.written.items():
        print(_wrote(path, count, report.replaced.get(path)))
    return 0


def _wrote(path: Path, count: int, old_lines: int | None) -> str:
    """'wrote LIST: N pairs', or 'replaced LIST (was M lines): N pairs' when a list was there (never silently)."""
    from bisenet.data.lists import plural

    done = "wrote" if old_lines is None else "replaced"
    was = "" if old_lines is None else f" (was {plural(old_lines, 'line')})"
    return f"{done} {path}{was}: {plural(count, 'pair')}"


def _check(args: argparse.Namespace) -> int:
    from bisenet.data.catalog import DATASETS, preset_labels
    from bisenet.data.check import check_pairs, format_summary
    from bisenet.data.lists import plural, read_given_list
    from bisenet.errors import nearest

    _check_workers(args.workers)
    names, label_map, map_name, notes = None, None, None, []
    if args.config is not None:
        from bisenet.config import load_config
        from bisenet.data.dataset import split_pairs

        cfg = load_config(args.config)
        if args.dataset is not None and args.dataset != cfg.data.dataset:  # it was silently ignored
            raise DataError(f"--dataset {args.dataset} with --config: the config's data.dataset ({cfg.data.dataset}) "
                            "says how labels are read; drop --dataset or change data.dataset in the config")
        pairs = split_pairs(cfg, args.split or "train", args.root, args.list)  # a missing --list is blamed on --list
        num_classes, ignore_index = cfg.num_classes, cfg.data.ignore_index
        for flag, given, key, value in (("--num-classes", args.num_classes, "data.num_classes", num_classes),
                                        ("--ignore-index", args.ignore_index, "data.ignore_index", ignore_index)):
            if given is not None and given != value:  # checking with other settings than training would use: say so
                notes.append(f"note: {flag} {given} replaces {args.config}'s {key} {value} for this check "
                             f"(training uses the config's; to train with it, change {key} there)")
        num_classes = args.num_classes if args.num_classes is not None else num_classes
        ignore_index = args.ignore_index if args.ignore_index is not None else ignore_index
        label_map, names = cfg.data.label_map, cfg.data.class_names
        dataset = preset_labels(cfg.data.dataset, label_map)
        preset = DATASETS.get(cfg.data.dataset)
        if label_map is not None and (preset is None or label_map != preset.label_map):
            map_name = "data.label_map"  # the user's own map: name the values it leaves out
    else:
        if args.list is None:
            raise DataError("--list LIST is required (or --config CFG [--split val])")
        if args.split is not None:  # it picks a config's list: without one it would be silently ignored
            raise DataError(f"--split {args.split} picks the list of a --config's data.{args.split}_list; without "
                            "--config, name the list with --list")
        info = None
        if args.dataset is not None and args.dataset != "custom":
            info = DATASETS.get(args.dataset)
            if info is None:
                raise DataError(f"--dataset {args.dataset!r} is not one of {', '.join(DATASETS)}"
                                f"{nearest(args.dataset, DATASETS)}")
            label_map, names = info.label_map, list(info.class_names)
        dataset = preset_labels(args.dataset or "custom", label_map)
        num_classes = args.num_classes if args.num_classes is not None else (info.num_classes if info else None)
        if num_classes is None:
            raise DataError("--num-classes N is required (or --dataset NAME to use that dataset's classes)")
        ignore_index = args.ignore_index if args.ignore_index is not None else 255
        root = args.root if args.root is not None else Path(".")
        pairs = read_given_list(args.list, root, "--list")
    if not 1 <= num_classes <= 255:  # 8-bit labels: ids 0..254 leave 255 for the ignore index
        raise DataError(f"--num-classes {num_classes} must lie in [1, 255] (labels are 8-bit class ids)")
    if not num_classes <= ignore_index <= 255:  # the rule data.ignore_index follows in a config
        raise DataError(f"--ignore-index {ignore_index} must lie in [num classes, 255] (num classes = {num_classes}); "
                        "255 is the usual choice")
    for note in pairs.notes + notes:
        print(note)
    report = check_pairs(pairs, num_classes, ignore_index, label_map, workers=args.workers, dataset=dataset)
    if report.problems:
        for line in report.problems:
            print(line)
        print(f"{plural(len(report.problems), 'problem')} in {pairs.path} ({plural(report.pairs, 'pair')})")
        return 1
    print(f"{pairs.path}:")
    for line in format_summary(report, num_classes, ignore_index, names, map_name):
        print(line)
    return 0
