"""`quickstart()`: train, evaluate and predict on the bundled Dubai example in a few minutes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path

from bisenet.config import load_config
from bisenet.errors import BisenetError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ROOT = REPO_ROOT / "examples" / "dubai"
EXAMPLE_CONFIG = REPO_ROOT / "configs" / "bisenetv2_dubai.yaml"
CAMVID_WEIGHTS = REPO_ROOT / "weights" / "bisenetv2_camvid.safetensors"

# The config holds the recipe (450 iterations, ~4.5 min of training on a fast 2-core CPU);
# these only pin what the time budget needs.
QUICKSTART_OVERRIDES = {
    "train.device": "cpu",
    "train.eval_interval": 0,  # one evaluation at the end, below
    "train.checkpoint_interval": 100,
}
PROBE_ITERS = 6  # timed to fit the schedule to this machine
MIN_ITERS = 100  # below this the example does not learn its classes; the budget is then exceeded
FINISH_SECONDS = 25  # start-up of the real run, evaluation, predictions and plots
# The probe's few steps are fed from the loader's prefetch queue; a long run's steps also share
# the 2 cores with the data workers. On 2026-12-01 the probe gave 1.07 s per iteration and the
# run 1.33 s (5.6 instead of 5 minutes), so only this share of the probe's rate is planned on.
PROBE_RATE_SHARE = 0.78


def quickstart(out_dir: str | Path = "runs/quickstart", max_iters: int | None = None, minutes: float = 5.0) -> dict:
    """Train BiSeNetV2 on the bundled example, evaluate it and colour the val images.

    Unless `max_iters` is given, a few timed iterations first fit the schedule into `minutes`
    of wall time (at most the config's 450 iterations). Leaves in `out_dir`: train/
    (checkpoints, logs, curves.png), metrics.json (+ plots), predictions/ (colour masks and
    overlays); returns the metrics dict.
    """
    from bisenet.data import build_dataset
    from bisenet.engine.train import train
    from bisenet.evaluation import evaluate_model, format_table, write_report
    from bisenet.predict import Segmenter
    from bisenet.predict_files import predict_paths

    if not EXAMPLE_ROOT.is_dir() or not EXAMPLE_CONFIG.is_file():
        raise BisenetError(
            f"the bundled example is not at {EXAMPLE_ROOT}: run quickstart from a clone of the repository "
            "installed with `pip install -e .`"
        )
    if minutes <= 0:
        raise BisenetError(f"--minutes {minutes:g}: must be positive (the wall-time budget, e.g. 5)")
    if max_iters is not None and max_iters < 1:
        raise BisenetError(f"--max-iters {max_iters}: must be at least 1 (or leave it out to fit --minutes)")
    out = Path(out_dir)
    overrides = {**QUICKSTART_OVERRIDES, "data.root": str(EXAMPLE_ROOT)}
    start = time.perf_counter()
    if max_iters is None:
        max_iters, expected = fit_iterations(overrides, out / "probe", minutes * 60)
        if expected is None:
            print(f"quickstart: the timing run was interrupted; training the recipe's {max_iters} iterations")
        elif max_iters == MIN_ITERS and expected > minutes:
            print(f"quickstart: this machine is too slow for the {minutes:g}-minute budget; training the minimum "
                  f"of {MIN_ITERS} iterations (~{expected:.0f} min at the timed rate; --max-iters sets the count)")
        else:
            print(f"quickstart: {max_iters} iterations fit the {minutes:g}-minute budget on this machine "
                  f"(~{expected:.1f} min of training at the timed rate)")
    overrides["train.max_iters"] = max_iters
    cfg = load_config(EXAMPLE_CONFIG, overrides)
    shutil.rmtree(out / "train", ignore_errors=True)  # a rerun replaces the last quickstart run (train refuses to mix)
    train_start = time.perf_counter()
    result = train(cfg, out / "train")
    train_seconds = time.perf_counter() - train_start

    segmenter = Segmenter.from_checkpoint(out / "train" / "last.pt", device="cpu")
    val_set = build_dataset(cfg, "val")
    metrics = evaluate_model(segmenter.model, val_set, "cpu", mode="ss", class_names=cfg.data.class_names)
    metrics.update(iterations=result.iteration, train_seconds=round(train_seconds, 1))
    print(format_table(metrics))
    reports = write_report(metrics, out / "metrics.json")

    predictions = out / "predictions"
    predict_paths(segmenter, [p for p, _ in val_set.samples], predictions, alpha=0.5, progress=False)
    total = time.perf_counter() - start

    lines = [
        "",
        f"quickstart finished in {total / 60:.1f} min: val mIoU {metrics['mIoU'] * 100:.1f} "
        f"after {result.iteration} iterations ({train_seconds / 60:.1f} min of training)",
        f"  checkpoint:   {out / 'train' / 'last.pt'}",
        f"  metrics:      {out / 'metrics.json'}" + (f" (plots: {', '.join(p.name for p in reports[1:])})" if len(reports) > 1 else ""),
        f"  curves:       {out / 'train' / 'curves.png'}",
        f"  predictions:  {predictions}/ (*_color.png, *_overlay.png, *_label.png)",
        f"  next: bisenet predict --weights {out / 'train' / 'last.pt'} YOUR_IMAGE.jpg --out {out / 'mine'}",
    ]
    if CAMVID_WEIGHTS.is_file():
        # Paths as they work from here: relative under the cwd (the repository root), else absolute.
        weights, config = (os.path.relpath(p) if p.is_relative_to(Path.cwd()) else str(p)
                           for p in (CAMVID_WEIGHTS, REPO_ROOT / "configs" / "bisenetv2_camvid.yaml"))
        lines.append(f"  road scenes: bisenet predict --weights {weights} --config {config} "
                     "YOUR_STREET_PHOTO.png --out runs/camvid_pred   (CamVid weights: non-commercial licence)")
    print("\n".join(lines))
    (out / "summary.json").write_text(json.dumps({
        "mIoU": metrics["mIoU"], "iterations": result.iteration, "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total, 1), "checkpoint": str(out / "train" / "last.pt"),
    }, indent=2))
    return metrics


def fit_iterations(overrides: dict, probe_dir: Path, budget_seconds: float) -> tuple[int, float | None]:
    """Iterations of the example's recipe that fit `budget_seconds`, timed by a short real run.

    Returns them with the minutes they are planned to take (None if the timing run was stopped).
    """
    from bisenet.engine.train import train

    start = time.perf_counter()
    probe = load_config(EXAMPLE_CONFIG, {**overrides, "train.max_iters": PROBE_ITERS,
                                         "train.checkpoint_interval": PROBE_ITERS})
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines would read as the real run's
        timed = train(probe, probe_dir)
    shutil.rmtree(probe_dir, ignore_errors=True)
    remaining = budget_seconds - (time.perf_counter() - start) - FINISH_SECONDS
    planned = load_config(EXAMPLE_CONFIG, overrides).train.max_iters
    if timed.seconds_per_iter is None:  # interrupted: keep the recipe
        return planned, None
    seconds_per_iter = timed.seconds_per_iter / PROBE_RATE_SHARE
    iterations = max(MIN_ITERS, min(planned, int(remaining / seconds_per_iter)))
    return iterations, iterations * seconds_per_iter / 60
