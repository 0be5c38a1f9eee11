"""`bisenet train CONFIG`: the main job. Flags override the common config keys."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from bisenet.config import AMP_MODES, load_config, parse_size
from bisenet.config_overrides import Override
from bisenet.errors import ConfigError

# flag -> config key it overrides
FLAG_KEYS = {
    "max_iters": "train.max_iters",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "checkpoint_interval": "train.checkpoint_interval",
    "eval_interval": "train.eval_interval",
    "seed": "train.seed",
    "workers": "train.workers",
    "device": "train.device",
    "amp": "train.amp",
    "data_root": "data.root",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The train command's flags."""
    # Optional to argparse only: run() says why it is missing (a --set or --resume before it took it).
    parser.add_argument("config", nargs="?", help="YAML config, e.g. configs/bisenetv2_dubai.yaml")
    parser.add_argument("--work-dir", help="where checkpoints and logs go (default runs/<config name>; for a run's own config.yaml, that run's folder)")
    parser.add_argument("--max-iters", type=int, help="training iterations (steps), the schedule's length")
    parser.add_argument("--batch-size", type=int, help="images per process per step")
    parser.add_argument("--crop-size", help="training crop HxW, e.g. 512x1024")
    parser.add_argument("--lr", type=float, help="base learning rate (heads get train.head_lr_factor x)")
    parser.add_argument("--checkpoint-interval", type=int, metavar="K", help="write last.pt every K iterations")
    parser.add_argument("--eval-interval", type=int, metavar="E", help="evaluate every E iterations; 0 turns it off")
    parser.add_argument("--seed", type=int, help="fixes initial weights, data order and augmentation")
    parser.add_argument("--workers", type=int, help="data-loading processes per training process")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--amp", choices=AMP_MODES, help="mixed precision; auto: bf16 where the hardware has it, else fp16 (CUDA) or none (CPU)")
    parser.add_argument("--data-root", help="override data.root")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="PATH", help="continue a run: PATH, or bare for WORK_DIR/last.pt (a new run when there is none yet)")
    parser.add_argument("--finetune-from", metavar="WEIGHTS", help="start from these weights (a head with another class count is re-initialised)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="any config key, e.g. train.weight_decay=1e-4 (may be repeated)")


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The config overrides the flags ask for, `--set` last so it wins; each error names the flag it came from."""
    # Strings go in quoted: a path like "run #2", "2024" or "on" must not be read as YAML (a comment, int, bool).
    overrides = [Override(f"{key}={json.dumps(value) if isinstance(value, str) else value}",
                          f"--{flag.replace('_', '-')} {value}") for flag, key in FLAG_KEYS.items()
                 if (value := getattr(args, flag, None)) is not None]
    if getattr(args, "crop_size", None):
        h, w = parse_size(args.crop_size, "--crop-size")
        overrides.append(Override(f"augment.crop_size=[{h}, {w}]", f"--crop-size {args.crop_size}"))
    return overrides + list(args.set)


def check_config_given(args: argparse.Namespace) -> None:
    """Refuse a missing CONFIG in one line, naming the --set or --resume that read it as its own."""
    if args.config is not None:
        return
    # `--set` takes every word after it and `--resume` an optional PATH: a CONFIG after them lands there.
    taken = next((item for item in args.set if "=" not in item), None)
    flag = "--set"
    if taken is None and str(args.resume).lower().endswith((".yaml", ".yml")):
        taken, flag = args.resume, "--resume"
    if taken is None:
        error = ConfigError("no CONFIG given; pass a YAML config first: bisenet train CONFIG [flags], "
                            "e.g. bisenet train configs/bisenetv2_dubai.yaml")
    else:
        how, rest = (("it takes every word after it", "--set ...") if flag == "--set"
                     else ("it takes an optional PATH", "--resume [PATH]"))
        error = ConfigError(f"no CONFIG: {taken!r} was read as part of {flag} ({how}); put the config first: "
                            f"bisenet train {shlex.quote(taken)} {rest}")
    raise error


def run(args: argparse.Namespace) -> int:
    """Train the config the flags describe; the exit code (143/130 when stopped by SIGTERM/Ctrl-C)."""
    from bisenet.engine.start import stored_run_note
    from bisenet.engine.train import default_work_dir, train

    check_config_given(args)
    cfg = load_config(args.config, overrides_from_args(args))
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir(args.config)
    note = None if args.work_dir else stored_run_note(args.config)
    if note and os.environ.get("RANK", "0") == "0":  # a run's own config.yaml: that run's folder, not runs/config
        print(note, flush=True)
    result = train(cfg, work_dir, resume=args.resume, finetune_from=args.finetune_from)
    if result.stopped_by:
        return 143 if result.stopped_by == "SIGTERM" else 130
    best = "n/a" if result.best_miou is None else f"{result.best_miou * 100:.2f}"
    if os.environ.get("RANK", "0") == "0":  # under torchrun: once, like the rest of the run's output
        print(f"done: iteration {result.iteration}, best val mIoU {best}; checkpoints in {work_dir}")
    return 0
