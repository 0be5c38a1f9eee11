"""Issue 6, goals (b) and (c): one BiSeNetV2 training step, batch 4 at 512x512, per precision.

    python bench/bench_train.py [--precisions fp32_plain fp32 bf16 bf16_compile]

A step is forward in train mode (main + 4 aux heads), OHEM loss on every head, backward and
SGD step. Settings are timed round-robin; each is then run alone in a fresh process for a
clean peak RSS. fp32_plain is the textbook step (the model upsamples every head's logits to
full size, cross-entropy on those), the baseline; fp32 and bf16 are `bisenet train`'s step, whose
loss upsamples the low-resolution logits one image at a time. The goal: the fastest at <= 0.4x
the fp32_plain step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bisenet.config import parse_size
from bisenet.deploy.bench import format_table, run_benchmark


def isolated_peak_rss(args: argparse.Namespace, precision: str) -> float | None:
    """Peak RSS of a training step for one precision alone in a fresh process (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "bisenet", "bench", "--mode", "train", "--size", args.size, "--batch-size",
               str(args.batch_size), "--num-classes", str(args.num_classes), "--arch", args.arch,
               "--backend", precision, "--iters", "2", "--warmup", "1", "--json", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{precision}: isolated run failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())[0].get("peak_rss_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="bisenetv2")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["fp32_plain", "fp32", "bf16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-rss", action="store_true", help="skip the per-setting fresh-process RSS runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_benchmark(arch=args.arch, num_classes=args.num_classes, size=parse_size(args.size),
                         batch_size=args.batch_size, mode="train", backends=args.precisions, warmup=args.warmup,
                         iters=args.iters, log=lambda m: print(m, file=sys.stderr, flush=True))
    if not args.no_rss:
        for row in rows:
            row["isolated_peak_rss_mb"] = isolated_peak_rss(args, row["backend"])
    print(format_table(rows))
    if not args.no_rss:
        print("\npeak RSS, each setting alone in a fresh process (MiB): "
              + ", ".join(f"{r['backend']} {r['isolated_peak_rss_mb']:.0f}" for r in rows if r["isolated_peak_rss_mb"]))
    ratio = next((k for k in rows[0] if k.startswith("time_vs_")), None)
    base = ratio.removeprefix("time_vs_") if ratio else None
    fast = [r for r in rows if r["backend"] != base]
    if base in ("fp32_plain", "fp32") and fast:
        best = min(fast, key=lambda r: r["median_ms"])
        verdict = "MET" if best[ratio] <= 0.4 else "NOT MET"
        print(f"\ngoal (b): {best['backend']} step {best['median_ms']:.0f} ms = {best[ratio]:.3f}x {base}: {verdict} (target <= 0.4x)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
