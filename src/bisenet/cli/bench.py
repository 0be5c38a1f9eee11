"""`bisenet bench`: latency, throughput, memory and label agreement per backend."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `bisenet bench`."""
    parser.add_argument("--mode", choices=("infer", "train"), default="infer",
                        help="infer: one forward per backend; train: forward + OHEM/aux loss + backward + SGD step")
    parser.add_argument("--arch", default=None,
                        help="architecture when no --weights (default bisenetv2); with --weights, read from the file")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes when no --weights (default 19); with --weights, read from the file")
    parser.add_argument("--size", default=None,
                        help="input HxW, multiples of 32 (default: infer 512x1024, train 512x512, as bench/*.py time them)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (default: infer 1, train 4; a training step needs at least 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA when present; default cpu)")
    parser.add_argument("--backend", nargs="+", default=None, metavar="NAME",
                        help="infer: eager amp fold_bn compile compile_graphs (CUDA) onnxruntime openvino int8 int8_compile int8_openvino (default: eager amp fold_bn onnxruntime); "
                             "train: fp32_plain (textbook step, the baseline) fp32 bf16 fp16 bf16_compile "
                             "(default: fp32_plain fp32, plus bf16 on CUDA or a CPU with native bf16, plus fp16 on CUDA)")
    parser.add_argument("--weights", default=None, help="trained weights: needed for a meaningful label agreement")
    parser.add_argument("--images", default=None, help="folder of images: timing input, agreement and int8 calibration")
    parser.add_argument("--calibration", default=None, help="folder of images for int8 calibration (default: --images)")
    parser.add_argument("--config", default=None,
                        help="YAML config whose data.mean/std normalise the images (--weights of another model.arch are refused)")
    parser.add_argument("--max-images", type=int, default=8, help="images read from each folder, 0 for all (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls (steps) per backend first (default 3)")
    parser.add_argument("--iters", type=int, default=10, help="timed calls (steps) per backend (default 10)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime CPU threads, at least 1 (default: torch's)")
    parser.add_argument("--keep-memory", action="store_true",
                        help="glibc keeps freed memory, as train/eval/predict set it on the CPU (process-wide; "
                             "off by default so that the baselines time plain PyTorch)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the rows as a JSON list")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    import torch

    from bisenet.cli.evaluate import unused_calibration
    from bisenet.config import load_config, parse_size
    from bisenet.deploy.bench import DEFAULT_INFER, format_table, image_normalisation, run_benchmark
    from bisenet.errors import BisenetError, check_writable, write_text_atomic

    size = parse_size(args.size, "--size") if args.size else None  # None: the mode's default (run_benchmark)
    if size is not None:
        from bisenet.models.layers import check_multiple_of_32

        check_multiple_of_32(*size, flag="--size")
    if args.json:  # before the run, so a path that takes no file does not cost its (minutes of) results
        check_writable(args.json, "--json", "bench.json")
    if args.threads is not None:
        if args.threads < 1:
            raise BisenetError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    config = load_config(args.config) if args.config else None  # read once: mean/std, and the arch --weights must have
    if args.json:  # a checkpoint, config, list or image replaced by the table would be lost for good
        _refuse_input_json(args, config)
    mean, std = image_normalisation(config, args.weights)
    # Training precisions never calibrate; without --backend the warning names the two always timed.
    calibration = unused_calibration(args.calibration, args.backend or (DEFAULT_INFER if args.mode == "infer" else
                                                                         ["fp32_plain", "fp32"]))
    rows = run_benchmark(
        arch=args.arch, num_classes=args.num_classes, size=size, batch_size=args.batch_size, device=args.device,
        backends=args.backend, mode=args.mode, weights=args.weights, images=args.images, calibration=calibration,
        mean=mean, std=std, warmup=args.warmup, iters=args.iters, max_images=args.max_images,
        log=lambda message: print(message, file=sys.stderr, flush=True), keep_memory=args.keep_memory,
        config_arch=config.model.arch if config is not None else None,
        config_classes=config.num_classes if config is not None else None, config_name=f"--config {args.config}",
    )
    print(format_table(rows))
    if args.json:  # atomically: a folder created there meanwhile or a full disk leaves no half-written file
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n", "--json", "bench.json")
    return 0



def _refuse_input_json(args: argparse.Namespace, config: object) -> None:
    """A one-line error when --json is --weights, --config, one of the config's lists or a file of --images/--calibration."""
    import os
    from pathlib import Path

    from bisenet.data.layouts import IMAGE_EXTS
    from bisenet.errors import BisenetError, check_replaceable, first_clash

    inputs: list[tuple[str, object]] = [("--weights file", args.weights), ("--config file", args.config)]
    data = getattr(config, "data", None)
    if data is not None:  # not read by bench, but a list file is as much a user's work as the config
        from bisenet.data.lists import resolve_list_path

        root = Path(data.root).expanduser()
        inputs += [(f"config's data.{split}_list", resolve_list_path(name, root)) for split, name in
                   (("train", data.train_list), ("val", data.val_list), ("test", data.test_list)) if name]
    out = Path(args.json).expanduser()
    for flag in ("--images", "--calibration"):
        folder = getattr(args, flag[2:])
        if folder is None:
            continue
        folder = Path(folder).expanduser()
        inputs.append((f"{flag} file", folder))
        # bench reads the images directly inside: only an existing image there can be lost (not an earlier JSON)
        if (out.suffix.lower() in IMAGE_EXTS and out.is_file() and folder.is_dir()
                and os.path.samefile(out.parent, folder)):
            inputs.append((f"{flag} file", out))
    clash = first_clash([out], inputs)
    if clash is not None:
        _, kind, source = clash
        raise BisenetError(f"--json {args.json} would overwrite the {kind} {source}; pass a new file, "
                           "e.g. --json bench.json")
    # Any other file there (weights of another run, an ONNX graph, a config) is only replaced by a new table.
    check_replaceable(args.json, "--json", "an earlier bench table", _is_bench_table, "_bench.json")


def _is_bench_table(old: object) -> bool:
    """True for what `bench --json` writes: a list of rows, each with a "backend"."""
    return isinstance(old, list) and all(isinstance(row, dict) and "backend" in row for row in old)
