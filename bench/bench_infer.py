"""Issue 6, goal (a): BiSeNetV2 inference at 512x1024, batch 1, every backend side by side.

    python bench/bench_infer.py --weights W [--images DIR --calibration DIR --config CFG]

Times all backends round-robin in one process, measures label agreement with fp32 eager on
real images (needs trained weights), then times each backend alone in a fresh process, as it
runs when deployed (`--passes` rounds, the fastest kept), with its peak RSS: eager as a plain
PyTorch run, the baseline; the others with glibc keeping freed memory, as `bisenet predict` and
`eval` run them on a CPU (round-robin runs share one plain process). The goal: a backend with
>= 99% agreement at <= 0.2x the eager time. Where the CPU has no native bf16 the bf16 backends
(amp, compile, int8_compile) are left out unless named in --backends.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bisenet.config import parse_size
from bisenet.deploy.backends import CALIBRATED
from bisenet.deploy.bench import add_alone, format_table, image_normalisation, run_benchmark
from bisenet.runtime import cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
ALL = ["eager", "amp", "fold_bn", "compile", "onnxruntime", "openvino", "int8", "int8_compile", "int8_openvino"]
# These run in bf16 on a CPU: without native bf16 each is ~10x eager and together they take most of an hour.
BF16 = ("amp", "compile", "int8_compile")


def alone_argv(args: argparse.Namespace, backend: str) -> list[str]:
    """`bisenet bench` flags that time one backend by itself, at the round-robin run's settings."""
    argv = ["--size", args.size, "--backend", backend, "--iters", str(args.iters), "--warmup", str(args.warmup),
            "--max-images", str(args.max_images)]
    if args.arch is not None:  # else the weights' (bisenetv2, 19 classes without weights)
        argv += ["--arch", args.arch]
    if args.num_classes is not None:
        argv += ["--num-classes", str(args.num_classes)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    for flag in ("weights", "config", "images"):  # the same input image as the round-robin run
        if getattr(args, flag):
            argv += [f"--{flag}", str(getattr(args, flag))]
    if backend in CALIBRATED and (args.calibration or args.images):
        argv += ["--calibration", str(args.calibration or args.images)]
    return argv + (["--keep-memory"] if backend != "eager" else [])


def verdict(rows: list[dict], key: str, how: str) -> str:
    """Goal (a) judged on one timing column: the fastest backend with >= 99% agreement."""
    good = [r for r in rows if r.get("agreement", 0) >= 0.99 and r["backend"] != "eager" and r.get(key)]
    if not good:
        return f"goal (a), {how}: no backend with >= 99% agreement was timed"
    best = min(good, key=lambda r: r[key])
    met = "MET" if best[key] <= 0.2 else "NOT MET"
    return (f"goal (a), {how}: {best['backend']} at {best[key]:.3f}x eager, agreement {best['agreement']:.4f}: "
            f"{met} (target <= 0.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="trained weights (agreement is only meaningful with these)")
    parser.add_argument("--images", default=str(REPO / "examples/dubai/val/images"), help="agreement images")
    parser.add_argument("--calibration", default=str(REPO / "examples/dubai/train/images"), help="int8 calibration images")
    parser.add_argument("--config", default=None, help="mean/std of the images (default: the weights' stored config, "
                        "else their dataset preset, else ImageNet's)")
    parser.add_argument("--arch", default=None, help="default: the weights' arch, else bisenetv2")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the weights' count, else 19")
    parser.add_argument("--size", default="512x1024")
    default = ALL if cpu_has_native_bf16() else [b for b in ALL if b not in BF16]
    parser.add_argument("--backends", nargs="+", default=default)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--max-images", type=int, default=12, help="agreement and calibration images per folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--passes", type=int, default=2, help="rounds of alone runs (0 skips them)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mean, std = image_normalisation(args.config, args.weights)
    rows = run_benchmark(arch=args.arch, num_classes=args.num_classes, size=parse_size(args.size), batch_size=1,
                         backends=args.backends, weights=args.weights, images=args.images if args.weights else None,
                         calibration=args.calibration, mean=mean, std=std, warmup=args.warmup, iters=args.iters,
                         max_images=args.max_images, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.passes:
        add_alone(rows, lambda name: alone_argv(args, name), args.passes, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(rows))
    if "eager" not in args.backends:
        print("\ngoal (a) not judged: it needs eager in --backends")
    elif not args.weights:
        print("\ngoal (a) not judged: pass --weights of a trained model to measure agreement")
    else:
        print("\n" + verdict(rows, "time_vs_eager", "round-robin in one process"))
        if args.passes:
            print(verdict(rows, "alone_time_vs_eager", "each backend alone in a fresh process"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
