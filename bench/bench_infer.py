"""Issue 6, goal (a): BiSeNetV2 inference at 512x1024, batch 1, every backend side by side.

    python bench/bench_infer.py --weights W [--images DIR --calibration DIR --config CFG]

Times all backends round-robin in one process, measures label agreement with fp32 eager on
real images (needs trained weights), then runs each backend alone in a fresh process for a
clean peak RSS. The goal: a backend with >= 99% agreement at <= 0.2x the eager time.
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
from bisenet.deploy.backends import CALIBRATED
from bisenet.deploy.bench import format_table, image_normalisation, run_benchmark

REPO = Path(__file__).resolve().parents[1]
ALL = ["eager", "amp", "fold_bn", "compile", "onnxruntime", "openvino", "int8", "int8_compile", "int8_openvino"]


def isolated_peak_rss(args: argparse.Namespace, backend: str) -> float | None:
    """Peak RSS of `bisenet bench` for one backend alone in a fresh process (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "bisenet", "bench", "--size", args.size, "--backend", backend, "--iters", "3",
               "--warmup", "1", "--json", str(out), "--arch", args.arch, "--num-classes", str(args.num_classes)]
        for flag in ("weights", "config"):
            if getattr(args, flag):
                cmd += [f"--{flag}", str(getattr(args, flag))]
        if backend in CALIBRATED:
            cmd += ["--calibration", str(args.calibration or args.images)] if (args.calibration or args.images) else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{backend}: isolated run failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())[0].get("peak_rss_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="trained weights (agreement is only meaningful with these)")
    parser.add_argument("--images", default=str(REPO / "examples/dubai/val/images"), help="agreement images")
    parser.add_argument("--calibration", default=str(REPO / "examples/dubai/train/images"), help="int8 calibration images")
    parser.add_argument("--config", default=str(REPO / "configs/bisenetv2_dubai.yaml"), help="mean/std of the images")
    parser.add_argument("--arch", default="bisenetv2")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--backends", nargs="+", default=ALL)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--max-images", type=int, default=12, help="agreement and calibration images per folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-rss", action="store_true", help="skip the per-backend fresh-process RSS runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mean, std = image_normalisation(args.config, args.weights)
    rows = run_benchmark(arch=args.arch, num_classes=args.num_classes, size=parse_size(args.size), batch_size=1,
                         backends=args.backends, weights=args.weights, images=args.images if args.weights else None,
                         calibration=args.calibration, mean=mean, std=std, warmup=args.warmup, iters=args.iters,
                         max_images=args.max_images, log=lambda m: print(m, file=sys.stderr, flush=True))
    if not args.no_rss:
        for row in rows:
            row["isolated_peak_rss_mb"] = isolated_peak_rss(args, row["backend"])
    print(format_table(rows))
    if not args.no_rss:
        print("\npeak RSS, each backend alone in a fresh process (MiB): "
              + ", ".join(f"{r['backend']} {r['isolated_peak_rss_mb']:.0f}" for r in rows if r["isolated_peak_rss_mb"]))
    good = [r for r in rows if r.get("agreement", 0) >= 0.99 and r["backend"] != "eager"]
    if "eager" in args.backends and good:
        best = min(good, key=lambda r: r["median_ms"])
        verdict = "MET" if best["time_vs_eager"] <= 0.2 else "NOT MET"
        print(f"\ngoal (a): best backend with >= 99% agreement: {best['backend']} at {best['median_ms']:.1f} ms = "
              f"{best['time_vs_eager']:.3f}x eager, agreement {best['agreement']:.4f}: {verdict} (target <= 0.2x)")
    elif not args.weights:
        print("\ngoal (a) not judged: pass --weights of a trained model to measure agreement")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
