"""Before a run starts: its arguments, its work dir (and what an earlier run left there), its start-up notes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import yaml

from bisenet.config import Config, TrainConfig
from bisenet.engine.distributed import DistInfo, all_reduce_max
from bisenet.engine.monitor import RunMonitor, read_records
from bisenet.errors import BisenetError, ConfigError

# What a run's work dir holds once it has run (config.yaml is written before the first step).


def check_train_arguments(cfg: object, work_dir: object) -> None:
    """Refuse a cfg or work_dir of the wrong type in one line (Path(5) and friends raise bare TypeErrors)."""
    if not isinstance(cfg, (Config, str, os.PathLike, dict)):
        raise ConfigError(f"cfg={cfg!r}: expected a Config, a YAML path (str or os.PathLike) or a dict, "
                          f"not {type(cfg).__name__}")
    if work_dir is not None and not isinstance(work_dir, (str, os.PathLike)):
        raise ConfigError(f"work_dir={work_dir!r}: expected the run's folder as a str or os.PathLike, "
                          f"not {type(work_dir).__name__}")


def default_work_dir(config: object) -> Path:
    """The run's own folder for a run's stored config.yaml, else runs/<config file name>."""
    if not isinstance(config, (str, os.PathLike)):  # a Config or dict has no file name to go by
        raise ConfigError(f"work_dir=None names the run's folder after the config's YAML file; with a "
                          f"{type(config).__name__} pass work_dir= (e.g. 'runs/my_run')")
    # `bisenet train runs/E/config.yaml --resume` continues runs/E, not a new run in runs/config.
    return stored_run_dir(config) or Path("runs") / Path(config).stem


def stored_run_dir(config: str | os.PathLike) -> Path | None:
    """The run folder when `config` is a run's stored config.yaml next to its last.pt (a run to resume).

    Not for a folder holding best.pt alone: a shared or downloaded run, whose best.pt is fine-tuned from.
    """
    path = Path(config)
    if path.name == "config.yaml" and (path.parent / "last.pt").is_file():
        return path.parent
    return None


def stored_run_note(config: object) -> str | None:
    """The start line saying that the work dir defaulted to the folder of a run's own config.yaml, or None."""
    run_dir = stored_run_dir(config) if isinstance(config, (str, os.PathLike)) else None
    if run_dir is None:
        return None
    return (f"work dir {run_dir}: {config} is that run's stored config (pass --work-dir, work_dir= in Python, "
            "to train into another folder)")


def earlier_run_files(work_dir: Path) -> list[str]:
    """What an earlier run left in `work_dir` that a new run would replace ([] when nothing worth keeping).

    A start that died before or while writing its first checkpoint is replaceable: rerunning it is how such a
    start is retried (a requeued job's bare --resume included).
    """
    if not work_dir.is_dir():
        return []
    found = ["best.pt"] if (work_dir / "best.pt").is_file() else []
    metrics = work_dir / "metrics.jsonl"
    records = read_records(metrics)
    first_checkpoint = _first_checkpoint(work_dir / "config.yaml")
    # A record proves last.pt was written once it lies past the first checkpoint, or is the evaluation there
    # (logged after its save); a train record at that iteration comes before the save, which may have failed.
    if any(r["iteration"] > first_checkpoint or r["iteration"] == first_checkpoint and r.get("type") == "eval"
           for r in records):
        found.append(f"metrics.jsonl ({len(records)} records up to iteration {max(r['iteration'] for r in records)})")
    events = list((work_dir / "tensorboard").glob("events.out.tfevents.*"))
    # Events without metrics.jsonl (opened first by every run): that run's metrics were deleted, not never written.
    if events and (found or not metrics.is_file()):
        found.append(f"TensorBoard events ({work_dir / 'tensorboard'})")
    return found


def _first_checkpoint(config_path: Path) -> float:
    """The iteration of the first last.pt the run stored at `config_path` wrote (1 when it cannot be read)."""
    try:
        train = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}).get("train") or {}
        due = [int(train["checkpoint_interval"]), int(train["max_iters"])]
        if int(train.get("eval_interval") or 0) > 0:  # an evaluation writes last.pt first
            due.append(int(train["eval_interval"]))
        return min(due)
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError):
        return 1  # no config to go by: any record counts as a run worth keeping


def refuse_replacing_earlier_run(work_dir: Path, found: list[str]) -> None:
    """ConfigError naming what an earlier run left in `work_dir` (no last.pt) that a new run would replace."""
    if found:
        raise ConfigError(
            f"{work_dir} holds an earlier run ({', '.join(found)}) but no last.pt: a new run there would replace "
            f"them; choose another --work-dir (work_dir), put that run's last.pt back and pass --resume to continue "
            f"it, or move those files away to start over there")


def training_data_signature(train_set: object, root: str | os.PathLike) -> dict | None:
    """{'size', 'fingerprint'} of the training pairs, for a resume to notice an edited list (None if unknown)."""
    samples = getattr(train_set, "samples", None)
    if samples is None:
        return None
    digest = hashlib.sha1()
    for pair in samples:  # paths relative to data.root: a dataset moved elsewhere is still the same list
        digest.update("\t".join(_relative(path, root) for path in pair).encode("utf-8", "surrogateescape") + b"\n")
    return {"size": len(samples), "fingerprint": digest.hexdigest()[:16]}


def _relative(path: str | os.PathLike, root: str | os.PathLike) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return str(path)


def warmup_note(tc: TrainConfig) -> str | None:
    """The warning for a warm-up as long as the run (the schedule squeezes it into max_iters - 1), or None."""
    if tc.warmup_iters < tc.max_iters:
        return None
    squeezed = tc.max_iters - 1  # optim.lr_factor: min(warmup_iters, max_iters - 1)
    if squeezed < 1:
        return (f"train.warmup_iters {tc.warmup_iters} with train.max_iters {tc.max_iters}: a one-iteration run "
                "has no warm-up; it takes one step at the full lr")
    return (f"train.warmup_iters {tc.warmup_iters} is not below train.max_iters {tc.max_iters}: the warm-up is "
            f"shortened to max_iters - 1 = {squeezed} iteration(s), then one poly step at the full lr ends the run "
            "(no decay to speak of); set train.warmup_iters lower (a few % of max_iters)")


def sync_bn_note(cfg: Config, distributed: bool, device_type: str) -> str | None:
    """The warning for model.sync_bn where it does nothing (DDP on CPU), or None."""
    if cfg.model.sync_bn and distributed and device_type != "cuda":
        return "model.sync_bn needs CUDA; using per-process BatchNorm on CPU"
    return None


def open_monitor(work_dir: Path, tc: TrainConfig, dist_info: DistInfo, **options) -> RunMonitor:
    """Rank 0's RunMonitor (it takes the work dir's lock); every rank learns whether that failed, so the others
    stop with a pointer to rank 0's message instead of a collective's traceback."""
    monitor, failure = None, None
    try:
        monitor = RunMonitor(work_dir, tc.max_iters, enabled=dist_info.is_main, **options)
    except BisenetError as exc:
        failure = exc
    if dist_info.distributed and all_reduce_max(torch.tensor([float(failure is not None)], device=dist_info.device)):
        failure = failure or BisenetError(f"rank 0 could not start the run in {work_dir} (its message says why)")
    if failure is not None:
        if monitor is not None:
            monitor.release()
        raise failure
    return monitor


def data_notes(cfg: Config, train_set: object, world_size: int, sample: int = 8) -> list[str]:
    """Warnings for a crop larger than the images even at the largest scale, and a step larger than the data."""
    from bisenet.data.dataset import spread_indices
    from bisenet.data.decode import image_size

    notes = []
    samples = getattr(train_set, "samples", None) or []
    step = cfg.train.batch_size * world_size
    if samples and step > len(samples):  # the sampler repeats images within each step
        notes.append(f"a step of {step} images (batch size x processes) is larger than the {len(samples)} training "
                     "images: each step repeats some of them")
    sizes = [(h, w) for w, h in (image_size(samples[i][0]) for i in spread_indices(len(samples), sample))
             if w > 0]  # an unreadable one: the data checks name it
    if not sizes:
        return notes
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    (crop_h, crop_w), largest = cfg.augment.crop_size, cfg.augment.scale_range[1]
    if crop_h > height * largest or crop_w > width * largest:
        fit_h, fit_w = max(32, height // 32 * 32), max(32, width // 32 * 32)
        notes.append(f"augment.crop_size {crop_h}x{crop_w} exceeds the training images (at most {height}x{width} in "
                     f"{len(sizes)} read) even at augment.scale_range's largest scale {largest:g}: every crop is "
                     f"partly padding (ignored pixels); e.g. --crop-size {fit_h}x{fit_w}")
    return notes
