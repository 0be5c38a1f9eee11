"""`quickstart()`: train, evaluate and predict on the bundled Dubai example in a few minutes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bisenet.config import load_config
from bisenet.errors import BisenetError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ROOT = REPO_ROOT / "examples" / "dubai"
EXAMPLE_CONFIG = REPO_ROOT / "configs" / "bisenetv2_dubai.yaml"
CAMVID_WEIGHTS = REPO_ROOT / "weights" / "bisenetv2_camvid.safetensors"

# Tuned for a 2-core CPU: about 4 minutes of training. The config holds the recipe;
# these only pin what the five-minute budget needs.
QUICKSTART_OVERRIDES = {
    "train.device": "cpu",
    "train.eval_interval": 0,  # one evaluation at the end, below
    "train.checkpoint_interval": 100,
}


def quickstart(out_dir: str | Path = "runs/quickstart", max_iters: int | None = None) -> dict:
    """Train BiSeNetV2 on the bundled example, evaluate it and colour the val images.

    Leaves in `out_dir`: train/ (checkpoints, logs, curves.png), metrics.json (+ plots),
    predictions/ (colour masks and overlays); returns the metrics dict.
    """
    from bisenet.data import build_dataset
    from bisenet.engine.train import train
    from bisenet.evaluation import evaluate_model, format_table, write_report
    from bisenet.predict import Segmenter, predict_paths

    if not EXAMPLE_ROOT.is_dir() or not EXAMPLE_CONFIG.is_file():
        raise BisenetError(
            f"the bundled example is not at {EXAMPLE_ROOT}: run quickstart from a clone of the repository "
            "installed with `pip install -e .`"
        )
    out = Path(out_dir)
    overrides = {**QUICKSTART_OVERRIDES, "data.root": str(EXAMPLE_ROOT)}
    if max_iters is not None:
        overrides["train.max_iters"] = max_iters
    cfg = load_config(EXAMPLE_CONFIG, overrides)
    start = time.perf_counter()
    result = train(cfg, out / "train")
    train_seconds = time.perf_counter() - start

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
        lines.append(f"  road scenes: bisenet predict --weights {CAMVID_WEIGHTS.relative_to(REPO_ROOT)} "
                     "YOUR_STREET_PHOTO.png --out runs/camvid_pred   (CamVid weights: non-commercial licence)")
    print("\n".join(lines))
    (out / "summary.json").write_text(json.dumps({
        "mIoU": metrics["mIoU"], "iterations": result.iteration, "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total, 1), "checkpoint": str(out / "train" / "last.pt"),
    }, indent=2))
    return metrics
