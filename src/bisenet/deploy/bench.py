"""Benchmarks: inference latency per backend, or a full training step per precision.

Backends are timed round-robin (one call of each in turn; at inference an untimed call of the
same backend first), so a slow spell on a shared machine hits every backend alike and the
ratios stay fair. `add_alone` then reruns each
one alone in a fresh process, as it runs when deployed: no other library's threads beside it.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bisenet.errors import BisenetError, nearest
from bisenet.evaluation.inference import labels_from_scores
from bisenet.runtime import keep_freed_memory

if TYPE_CHECKING:
    from bisenet.config import Config

DEFAULT_INFER = ("eager", "amp", "fold_bn", "onnxruntime")
# (size, batch) per mode when not given: the protocol (README "Speed", bench/bench_infer.py and
# bench/bench_train.py); a training step needs at least 2 images (BatchNorm in train mode).
MODE_DEFAULTS = {"infer": ((512, 1024), 1), "train": ((512, 512), 4)}


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since the last reset (VmHWM), else since start."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def image_normalisation(config: str | os.PathLike | Config | None = None, weights: str | os.PathLike | None = None
                        ) -> tuple[list[float] | None, list[float] | None]:
    """Image mean/std from a config (YAML file or Config), else as predict resolves them for `weights` (their
    stored config, else the dataset preset of their class count), else (None, None) = ImageNet."""
    if config:
        from bisenet import load_config

        data = load_config(config).data
        return data.mean, data.std
    if weights:
        from bisenet.checkpoint import infer_arch, read_weights
        from bisenet.predict import label_info

        ckpt = read_weights(weights)
        saved = ckpt.get("config")
        num_classes = ckpt.get("num_classes") or infer_arch(ckpt["model"], weights)[1]
        info = label_info(int(num_classes), None, saved if isinstance(saved, dict) else None, weights)
        return list(info.mean), list(info.std)
    return None, None


_cuda_baseline: dict[torch.device, int] = {}


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        # Earlier backends stay built (and allocated): count only what comes on top of them.
        _cuda_baseline[device] = torch.cuda.memory_allocated(device)
    else:
        reset_peak_rss()


def _memory(device: torch.device, prefix: str = "") -> dict[str, float]:
    if device.type == "cuda":
        added = torch.cuda.max_memory_allocated(device) - _cuda_baseline.get(device, 0)
        return {f"{prefix}peak_cuda_mb": round(added / 2**20, 1)}
    return {f"{prefix}peak_rss_mb": round(peak_rss_mb(), 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_round_robin(calls: dict[str, Callable[[], Any]], iters: int, device: torch.device,
                      settle: int = 0) -> dict[str, list[float]]:
    """Per round, each call in turn: `settle` untimed runs, then one timed run."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iters):
        for name, call in calls.items():
            for _ in range(settle):
                call()
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def _stats(times: list[float], batch: int, gflops: float) -> dict[str, float]:
    times = sorted(times)
    median = statistics.median(times)
    p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
    return {"median_ms": round(median, 2), "p90_ms": round(p90, 2), "fps": round(1000 * batch / median, 2),
            "gflops": round(gflops, 2), "gflops_per_s": round(gflops / (median / 1000), 1)}


def run_benchmark(
    arch: str | None = None,
    num_classes: int | None = None,
    size: tuple[int, int] | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    backends: Sequence[str] | None = None,
    mode: str = "infer",
    weights: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    warmup: int = 3,
    iters: int = 10,
    max_images: int = 8,
    log: Callable[[str], None] | None = None,
    keep_memory: bool = False,
    config_arch: str | None = None,
    config_classes: int | None = None,
    config_name: str = "the config",
) -> list[dict[str, Any]]:
    """Time each backend (infer) or precision (train); one row per backend, see format_table.

    `size` and `batch_size` default to MODE_DEFAULTS[mode]: 512x1024 batch 1 (infer), 512x512 batch 4 (train).
    `device` is cpu, cuda[:N] or auto (CUDA when present).
    `arch` and `num_classes` build a random model (default bisenetv2, 19 classes); with `weights` they are read
    from the file, and refused if given and different.
    `config_arch` and `config_classes` (a config's model.arch and class count) refuse `weights` of another
    arch or class count, as eval, predict and export do; `config_name` is how that error names the config.

    `mean`/`std` normalise --images and --calibration; None: as predict resolves them for `weights`
    (image_normalisation), else ImageNet's.
    `keep_memory` applies `runtime.keep_freed_memory()` once the first backend is built, as
    eval/predict do on the CPU (train before its first step); it is process-wide, so off by
    default: the plain baselines are timed as plain PyTorch runs.
    """
    from bisenet.models.layers import check_multiple_of_32

    if mode not in ("infer", "train"):
        raise BisenetError(f"mode {mode!r}: use infer or train")
    size = size or MODE_DEFAULTS[mode][0]
    batch_size = MODE_DEFAULTS[mode][1] if batch_size is None else batch_size
    check_multiple_of_32(*size)
    if max_images < 0:
        raise BisenetError(f"--max-images {max_images}: pass a count of images per folder, or 0 for all of them "
                           "(max_images= in Python)")
    if batch_size < 1 or iters < 1 or warmup < 0:
        raise BisenetError(f"batch size {batch_size}, iters {iters}, warmup {warmup}: need batch >= 1, iters >= 1, warmup >= 0")
    if mode == "train" and images:  # else silently ignored: training steps run on random batches
        raise BisenetError(f"--images {images}: --mode train times random batches and measures no agreement; "
                           "drop --images (images= in Python), or use --mode infer")
    if mode == "train" and batch_size < 2:  # BatchNorm in train mode: else a ValueError deep inside the first step
        raise BisenetError(f"--batch-size {batch_size}: a training step needs at least 2 images; "
                           "pass --batch-size 2 or more (batch_size= in Python)")
    log = log or (lambda message: None)
    if weights and (mean is None or std is None) and (images or calibration):  # the model's, not ImageNet's
        found_mean, found_std = image_normalisation(weights=weights)
        mean, std = mean if mean is not None else found_mean, std if std is not None else found_std
        log(f"images normalised with mean {mean} std {std} (as predict does for {weights})")
    from bisenet.deploy.backends import BACKENDS, check_available
    from bisenet.engine.distributed import resolve_device

    dev = resolve_device(device)  # 'auto' as train, eval and predict take it
    backends = _unique(backends, log)
    if mode == "infer":
        for name in backends or ():  # all checked before any slow work starts (compile takes minutes)
            if name not in BACKENDS:
                raise BisenetError(f"unknown backend {name!r}{nearest(name, BACKENDS)}; valid: {', '.join(BACKENDS)}")
            check_available(name, dev)
    model = _load(arch, num_classes, weights, dev)
    if weights and (config_arch or config_classes):
        from bisenet.checkpoint import check_arch, check_classes

        if config_arch:
            check_arch(model, config_arch, weights)
        if config_classes:
            check_classes(model, config_classes, weights, config_name)
    if mode == "train":
        from bisenet.deploy.bench_train import bench_train  # here: it builds on this module's timing helpers

        return bench_train(model, size, batch_size, dev, backends, warmup, iters, keep_memory, log)
    return _bench_infer(model, size, batch_size, dev, backends, weights, images, calibration, mean, std,
                        warmup, iters, max_images, keep_memory, log)


def _unique(names: Sequence[str] | None, log: Callable[[str], None]) -> list[str] | None:
    """`names` in order without repeats (a repeat would be built and timed once, under one row), with a note."""
    if names is None:
        return None
    unique = list(dict.fromkeys(names))
    if len(unique) < len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        log(f"{', '.join(repeated)}: given more than once, timed once")
    return unique


def _load(arch: str | None, num_classes: int | None, weights: str | os.PathLike | None,
          device: torch.device) -> nn.Module:
    from bisenet import build_model, load_model
    from bisenet.checkpoint import model_arch
    from bisenet.models import MODELS

    if weights:
        model = load_model(weights, map_location="cpu")
        # The file says what the model is: a contradicting flag would otherwise be ignored silently.
        if arch is not None and arch != model_arch(model):
            raise BisenetError(f"--arch {arch}: {weights} holds {model_arch(model)} weights; drop --arch "
                               "(arch= in Python): bench reads it from --weights")
        if num_classes is not None and num_classes != model.num_classes:
            raise BisenetError(f"--num-classes {num_classes}: {weights} predicts {model.num_classes} classes; "
                               "drop --num-classes (num_classes= in Python): bench reads it from --weights")
        return model.to(device).eval()
    arch = "bisenetv2" if arch is None else arch
    num_classes = 19 if num_classes is None else num_classes
    if arch not in MODELS:
        raise BisenetError(f"unknown arch {arch!r}{nearest(arch, MODELS)}; valid: {', '.join(MODELS)}")
    if num_classes < 1:
        raise BisenetError(f"num_classes {num_classes}: must be a positive integer")
    torch.manual_seed(0)
    return build_model(arch, num_classes).to(device).eval()


def _bench_infer(model, size, batch_size, device, backends, weights, images, calibration, mean, std,
                 warmup, iters, max_images, keep_memory, log) -> list[dict[str, Any]]:
    from bisenet.deploy.backends import CALIBRATED, build_backend
    from bisenet.deploy.images import IMAGENET_MEAN, IMAGENET_STD, read_folder
    from bisenet.info import count_flops

    names = list(backends or DEFAULT_INFER)
    mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    gflops = count_flops(model, size, batch_size) / 1e9
    samples = read_folder(images, size, mean, std, max_images) if images else []
    if samples:
        x = torch.stack([samples[i % len(samples)] for i in range(batch_size)]).to(device)
    else:
        x = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    if calibration:
        calib = read_folder(calibration, size, mean, std, max_images)
    else:
        calib = samples or [x[:1].cpu()]
    measure_agreement = bool(samples and weights)
    if samples and not weights:
        log("agreement skipped: it needs --weights from a trained model (random weights give near-tie labels)")
    elif weights and not samples:
        log("agreement skipped: it needs --images, a folder of images to label with each backend")
    reference = None
    if measure_agreement:
        with torch.inference_mode():
            reference = [labels_from_scores(model(s.unsqueeze(0).to(device))) for s in samples]
    built, rows = {}, {}
    for name in names:
        _reset_memory(device)
        log(f"building {name} ...")
        start = time.perf_counter()
        opts = {"calibration": calib, "limit": max_images} if name in CALIBRATED else {}
        if name in CALIBRATED:
            log(f"{name} calibration: {'random input (speed only)' if not (calibration or samples) else f'{len(calib)} images'}")
        backend = build_backend(name, model, device, **opts)
        backend(x)  # first call: compiles or allocates; counted in build time, not in latency
        _sync(device)
        kept = keep_memory and keep_freed_memory()  # after the build, as predict and eval set it
        row: dict[str, Any] = {"backend": name, "mode": "infer", "device": str(device), "size": f"{size[0]}x{size[1]}",
                               "batch_size": batch_size, "threads": torch.get_num_threads(), "keep_memory": kept,
                               "build_s": round(time.perf_counter() - start, 2), **_memory(device, "build_")}
        # The run peak starts from what the built backend holds: export, calibration and
        # compilation transients are not inference memory.
        _reset_memory(device)
        for _ in range(max(1, warmup)):
            backend(x)
        row.update(_memory(device))
        if getattr(backend, "calibration_agreement", None) is not None:  # int8_openvino's self-check
            row["calibration_agreement"] = round(backend.calibration_agreement, 5)
        built[name], rows[name] = backend, row
    log(f"timing {len(names)} backend(s) round-robin, {iters} iterations ...")
    # One untimed call before each timed one: the previous backend's threads still spin and its
    # data fills the caches, which a deployed backend (alone in its process) never meets.
    times = _time_round_robin({n: (lambda b=b: b(x)) for n, b in built.items()}, iters, device, settle=1)
    if measure_agreement:  # after timing: its batch-1 inputs would make compiled backends recompile first
        for name, backend in built.items():
            rows[name]["agreement"] = round(_agreement(backend, samples, reference, device), 5)
    return _finish(rows, times, batch_size, gflops, names[0] if "eager" not in names else "eager")


def _agreement(backend, samples, reference, device) -> float:
    same = total = 0
    for sample, ref in zip(samples, reference):
        labels = labels_from_scores(backend(sample.unsqueeze(0).to(device)))
        same += int((labels == ref).sum())
        total += ref.numel()
    return same / total


def _finish(rows: dict, times: dict, batch_size: int, gflops: float, baseline: str) -> list[dict[str, Any]]:
    # Other processes on the machine inflate every latency; the load average says how much.
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    for name, row in rows.items():
        row.update(_stats(times[name], batch_size, gflops), load_avg_1m=load)
    base = rows[baseline]["median_ms"]
    for row in rows.values():
        row[f"time_vs_{baseline}"] = round(row["median_ms"] / base, 3)
    return list(rows.values())


def run_alone(argv: Sequence[str], log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """`bisenet bench ARGV` (one backend) in a fresh process; its JSON row, or None (logged) if it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        done = subprocess.run([sys.executable, "-m", "bisenet", "bench", *argv, "--json", out],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]  # its one-line error
            (log or (lambda m: print(m, file=sys.stderr)))(f"alone run failed: bisenet bench {' '.join(argv)}: {last}")
            return None
        with open(out) as f:
            return json.load(f)[0]


def add_alone(rows: list[dict[str, Any]], argv_for: Callable[[str], list[str]], passes: int = 2,
              log: Callable[[str], None] | None = None) -> None:
    """Add alone_median_ms, alone_time_vs_<baseline> and alone_peak_rss_mb: each backend rerun by itself.

    `passes` rounds over all backends, the fastest round kept per backend: on a shared machine
    the fastest run is the least disturbed one, and interleaved rounds share any drift.
    """
    say = log or (lambda m: None)
    best: dict[str, dict[str, Any]] = {}
    for round_ in range(passes):
        for row in rows:
            name = row["backend"]
            say(f"alone, round {round_ + 1}/{passes}: {name} ...")
            got = run_alone(argv_for(name), log)
            if got and (name not in best or got["median_ms"] < best[name]["median_ms"]):
                best[name] = got
    ratio = next((k for k in rows[0] if k.startswith("time_vs_")), None)
    base = best.get(ratio.removeprefix("time_vs_")) if ratio else None
    for row in rows:
        got = best.get(row["backend"])
        if got is None:
            continue
        row["alone_median_ms"], row["alone_peak_rss_mb"] = got["median_ms"], got.get("peak_rss_mb")
        if base:
            row[f"alone_{ratio}"] = round(got["median_ms"] / base["median_ms"], 3)


COLUMNS = (("backend", "backend", "{}"), ("median_ms", "median ms", "{:.1f}"), ("p90_ms", "p90 ms", "{:.1f}"),
           ("fps", "img/s", "{:.2f}"), ("gflops_per_s", "GFLOP/s", "{:.0f}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
           ("peak_cuda_mb", "peak CUDA MB", "{:.0f}"), ("agreement", "agreement", "{:.4f}"), ("build_s", "build s", "{:.1f}"),
           ("alone_median_ms", "alone ms", "{:.1f}"), ("alone_peak_rss_mb", "peak RSS alone MB", "{:.0f}"))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows from run_benchmark as a Markdown table (columns that no row has are left out)."""
    if not rows:
        return "(no rows)"
    ratio = next((k for k in rows[0] if k.startswith("time_vs_")), None)
    cols = [(k, title, fmt) for k, title, fmt in COLUMNS if any(k in r for r in rows)]
    if ratio:
        cols.insert(3, (ratio, f"time / {ratio.removeprefix('time_vs_')}", "{:.3f}"))
        if any(f"alone_{ratio}" in r for r in rows):
            at = next(i for i, c in enumerate(cols) if c[0] == "alone_median_ms") + 1
            cols.insert(at, (f"alone_{ratio}", f"alone / {ratio.removeprefix('time_vs_')}", "{:.3f}"))
    lines = ["| " + " | ".join(title for _, title, _ in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [fmt.format(row[k]) if row.get(k) is not None else "-" for k, _, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0]
    lines.append(f"\n{first['mode']}, {first['device']}, batch {first['batch_size']}, {first['size']}, "
                 f"{first['threads']} threads, {first['gflops']:.1f} GFLOP per {'step' if first['mode'] == 'train' else 'forward'}, "
                 f"load average {first.get('load_avg_1m')} on {os.cpu_count()} CPUs")
    return "\n".join(lines)
