"""Issue 6, goals (b) and (c): one BiSeNetV2 training step, batch 4 at 512x512, per precision.

    python bench/bench_train.py [--precisions fp32_plain fp32 bf16 bf16_compile]

bf16 is in the default settings only where the CPU has native bf16 (AVX-512 BF16 or AMX).

A step is forward in train mode (main + 4 aux heads), OHEM loss on every head, backward and
SGD step. Settings are timed round-robin; each is then timed alone in a fresh process, with
its peak RSS. fp32_plain is the textbook step (the model upsamples every head's logits to
full size, cross-entropy on those, torch's nn.Dropout, aux heads that upsample before their
conv: what the reference computes), the baseline; fp32 and bf16 are `bisenet train`'s step, whose
loss upsamples the low-resolution logits one image at a time, whose dropout draws a cheaper mask
and whose aux heads convolve before upsampling (bench/bench_train_parts.py times each part). Alone, fp32_plain runs as a plain
PyTorch process and the others with glibc keeping freed memory, as `bisenet train` runs on a CPU
(the round-robin run is one plain process). The goal: the fastest at <= 0.4x the fp32_plain step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bisenet.config import parse_size
from bisenet.deploy.bench import add_alone, format_table, run_benchmark
from bisenet.runtime import cpu_has_native_bf16


def alone_argv(args: argparse.Namespace, precision: str) -> list[str]:
    """`bisenet bench --mode train` flags that time one precision by itself, at the round-robin run's settings."""
    argv = ["--mode", "train", "--size", args.size, "--batch-size", str(args.batch_size), "--num-classes",
            str(args.num_classes), "--arch", args.arch, "--backend", precision, "--iters", str(args.iters),
            "--warmup", str(args.warmup)]
    argv += ["--keep-memory"] if precision != "fp32_plain" else []
    return argv + (["--threads", str(args.threads)] if args.threads else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="bisenetv2")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--batch-size", type=int, default=4)
    # Without native bf16 a bf16 step is 8-12x slower than fp32 and would dominate the run.
    default = ["fp32_plain", "fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    parser.add_argument("--precisions", nargs="+", default=default)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--passes", type=int, default=1, help="rounds of alone runs (0 skips them)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_benchmark(arch=args.arch, num_classes=args.num_classes, size=parse_size(args.size),
                         batch_size=args.batch_size, mode="train", backends=args.precisions, warmup=args.warmup,
                         iters=args.iters, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.passes:
        add_alone(rows, lambda name: alone_argv(args, name), args.passes, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(rows))
    ratio = next((k for k in rows[0] if k.startswith("time_vs_")), None)
    base = ratio.removeprefix("time_vs_") if ratio else None
    fast = [r for r in rows if r["backend"] != base]
    if base in ("fp32_plain", "fp32") and fast:
        print()
        for key, how in ((ratio, "round-robin in one process"), (f"alone_{ratio}", "each alone in a fresh process")):
            timed = [r for r in fast if r.get(key)]
            if timed:
                best = min(timed, key=lambda r: r[key])
                met = "MET" if best[key] <= 0.4 else "NOT MET"
                print(f"goal (b), {how}: {best['backend']} at {best[key]:.3f}x {base}: {met} (target <= 0.4x)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
