"""Resuming and fine-tuning: the checkpoint dict a run continues from, and the checks that it fits.

(`bisenet.checkpoint` reads and writes weight files of any kind; this module is about training runs.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bisenet.checkpoint import infer_arch, read_weights
from bisenet.config import Config, TrainConfig, to_dict
from bisenet.engine.distributed import DistInfo, all_reduce_max
from bisenet.errors import CheckpointError, ConfigError

# Settings the optimizer and schedule state carry: a resumed run keeps the checkpoint's
# values (load_state_dict restores them), so a changed one would be silently ignored.
OPTIMIZER_KEYS = ("optimizer", "lr", "head_lr_factor", "momentum", "weight_decay")


def checkpoint_state(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, iteration: int,
                     best_miou: float | None, world_size: int = 1) -> dict:
    """{model, optimizer, scheduler, scaler, iteration, rng, config, arch, num_classes, best_miou, world_size}."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        # Data order and augmentation are pure functions of (seed, epoch, index), and
        # dropout is re-seeded from (seed, iteration, rank) every step: the seed is the state.
        "rng": {"seed": cfg.train.seed},
        "config": to_dict(cfg),
        "arch": cfg.model.arch,
        "num_classes": cfg.num_classes,
        "best_miou": best_miou,
        "world_size": world_size,  # processes: with the per-process batch size, what one step saw
    }


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues from; the defaults are a new run's."""

    iteration: int = 0
    best_miou: float | None = None
    world_size: int | None = None  # the saved run's process count
    saved_config: dict = field(default_factory=dict)  # the saved run's config, as a dict
    pending_log: dict = field(default_factory=dict)  # its loss sums not yet logged (see train._save)
    evaluated: int | None = None  # the iteration of its last evaluation that finished
    train_data: dict | None = None  # its training pairs' {size, fingerprint} (None: a checkpoint from before that)

    @property
    def saved_train(self) -> dict:
        """The saved run's train section ({} for a new run)."""
        return self.saved_config.get("train") or {}

    def missed_evaluation(self, tc: TrainConfig) -> bool:
        """True when this config evaluates at this iteration and no evaluation there finished (last.pt is written
        before one, so it may have failed or been cut short; or the run evaluated on another schedule)."""
        due = tc.eval_interval > 0 and (self.iteration % tc.eval_interval == 0 or self.iteration == tc.max_iters)
        return due and self.iteration > 0 and self.evaluated != self.iteration


def resume_source(work_dir: Path, resume: str | Path | None, dist_info: DistInfo) -> tuple[Path | None, bool]:
    """(the checkpoint to resume or None, whether 'auto' found none); refuses a new run over an old one."""
    # "auto" resumes the work dir's last.pt if it has one, else starts afresh: a requeued job can always pass it.
    has_last = (work_dir / "last.pt").is_file()
    if dist_info.world_size > 1:  # every rank must decide alike, or some resume while others start afresh
        seen = all_reduce_max(torch.tensor([float(has_last), float(not has_last)], device=dist_info.device))
        if seen.sum() > 1:
            raise ConfigError(f"{work_dir / 'last.pt'}: some processes see it and others do not; put --work-dir on "
                              "storage that every node shares (checkpoints are written by rank 0 only)")
    if resume == "auto":
        return (work_dir / "last.pt", False) if has_last else (None, True)
    if resume is None and has_last:  # before the monitor opens the run's logs
        raise ConfigError(f"{work_dir} already holds a run ({work_dir / 'last.pt'}): pass --resume (resume='auto' in "
                          "Python) to continue it, or choose another --work-dir (work_dir) (a new run would overwrite "
                          "it and mix the two logs)")
    # (a folder or a missing file: read_resume_checkpoint's own messages say what to pass)
    if resume is not None and has_last and Path(resume).is_file() and Path(resume).resolve().parent != work_dir.resolve():
        raise ConfigError(f"--resume {resume} into {work_dir}, which holds another run ({work_dir / 'last.pt'}): "
                          f"continuing {resume} there would overwrite that run and mix the two logs; pass --work-dir "
                          f"{Path(resume).parent} to continue it in place, or a new --work-dir for a copy")
    return (Path(resume) if resume is not None else None), False


def read_resume_checkpoint(path: str | os.PathLike, cfg: Config, device: torch.device | str = "cpu") -> dict:
    """Read a training checkpoint to resume and check it fits `cfg` (before the run's work dir is made)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"--resume {path}: is a folder; pass its checkpoint ({path / 'last.pt'}), "
                              "or resume='auto' with that folder as the work dir")
    if not path.is_file():
        raise CheckpointError(f"--resume: {path} not found; drop --resume (resume=None in Python) to start a new run, "
                              "or pass the checkpoint path")
    ckpt = read_weights(path, map_location=device)
    missing = [k for k in ("optimizer", "scheduler", "iteration") if k not in ckpt]
    if missing:
        raise CheckpointError(f"--resume: {path} holds weights only (no {missing[0]}); use --finetune-from {path} "
                              "(finetune_from= in Python) instead")
    if ckpt.get("arch") != cfg.model.arch or ckpt.get("num_classes") != cfg.num_classes:
        raise CheckpointError(
            f"--resume: {path} is a {ckpt.get('arch')} run with {ckpt.get('num_classes')} classes but the config "
            f"asks for {cfg.model.arch} with {cfg.num_classes}; use the run's own config ({path.parent / 'config.yaml'})"
        )
    _refuse_optimizer_changes(path, ckpt.get("config"), cfg)
    if int(ckpt["iteration"]) > cfg.train.max_iters:
        raise ConfigError(f"--resume {path}: that run is at iteration {ckpt['iteration']}, past train.max_iters "
                          f"{cfg.train.max_iters}; raise --max-iters (train.max_iters) to continue it, or use "
                          "--finetune-from (finetune_from=) to start a new schedule from its weights")
    return ckpt


def restore_checkpoint(ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> ResumePoint:
    """Load what read_resume_checkpoint returned into the live objects; where the run continues from."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    # The lr of the next step, from this config's schedule: the saved one is the old schedule's,
    # which differs when train.max_iters changed (a resumed run at its end would take a 0 lr step).
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["lr"] = group["initial_lr"] * factor(scheduler.last_epoch)
    if ckpt.get("scaler"):  # empty when the run had no fp16 scaler (bf16 or fp32): start a fresh one
        scaler.load_state_dict(ckpt["scaler"])
    iteration = int(ckpt["iteration"])
    return ResumePoint(iteration, ckpt.get("best_miou"), ckpt.get("world_size"),
                       saved_config=ckpt.get("config") or {},
                       pending_log=ckpt.get("pending_log") or {},
                       # checkpoints from before this field count as evaluated: never an evaluation twice
                       evaluated=ckpt.get("evaluated", iteration),
                       train_data=ckpt.get("train_data"))


def resume_differences(start: ResumePoint, cfg: Config, world_size: int, train_data: dict | None = None) -> list[str]:
    """Warnings for a resume whose settings (or training pairs, `train_data`) make it other than an exact
    continuation of the saved run."""
    tc, messages = cfg.train, []
    saved_data, now_data = start.train_data or {}, train_data or {}
    if saved_data.get("size") is not None and now_data.get("size") is not None:  # a list edited between the starts
        if saved_data["size"] != now_data["size"]:
            messages.append(f"--resume: the training list ({cfg.data.train_list}) has {now_data['size']} image/label "
                            f"pairs now, {saved_data['size']} in that run: another data order from here on, so it is "
                            "not an exact continuation")
        elif saved_data.get("fingerprint") != now_data.get("fingerprint"):
            messages.append(f"--resume: the training list ({cfg.data.train_list}) holds other image/label pairs than "
                            f"in that run (the same count, {now_data['size']}): they apply from here on, so it is not "
                            "an exact continuation")
    saved_batch = start.saved_train.get("batch_size", tc.batch_size)
    if start.world_size is not None and start.world_size != world_size:
        messages.append(f"--resume: that run used {start.world_size} process(es), this one {world_size}: "
                        f"{tc.batch_size * world_size} instead of {saved_batch * start.world_size} images per step "
                        "and another data order, so it is not an exact continuation (launch it as before: "
                        f"torchrun --nproc_per_node {start.world_size} -m bisenet train ...)")
    if saved_batch != tc.batch_size:  # the sampler's position is iteration x images per step
        messages.append(f"--resume: train.batch_size was {saved_batch} in that run, {tc.batch_size} now: another "
                        "number of images per step and another data order, so it is not an exact continuation")
    if start.saved_train.get("seed", tc.seed) != tc.seed:
        messages.append(f"--resume: train.seed was {start.saved_train['seed']} in that run, {tc.seed} now: the data "
                        "order, augmentation and dropout follow the new seed from here on, so it is not an exact "
                        "continuation")
    saved_iters = start.saved_train.get("max_iters", tc.max_iters)
    if saved_iters != tc.max_iters:  # extending a run is fine, but say what it costs
        messages.append(f"--resume: train.max_iters was {saved_iters} in that run, {tc.max_iters} now: the warm-up "
                        f"+ poly schedule is {'stretched' if tc.max_iters > saved_iters else 'squeezed'} to the new "
                        "length from here on, so the result differs from a run planned that long from the start")
    changes = changed_settings(start.saved_config, cfg)
    if changes:
        messages.append(f"--resume: settings differ from that run's ({'; '.join(changes)}): they apply from here on, "
                        "so it is not an exact continuation")
    return messages


# Settings that change how a run is watched or where it runs, not what it learns.
BOOKKEEPING_KEYS = {"train.log_interval", "train.checkpoint_interval", "train.eval_interval", "train.workers",
                    "train.device", "train.max_iters", "train.batch_size", "train.seed"}  # (the last three: above)


def changed_settings(saved_config: dict | None, cfg: Config) -> list[str]:
    """'train.loss ohem -> ce' for each train/augment setting that differs from the saved run's."""
    current = to_dict(cfg)
    changes = []
    for section in ("train", "augment"):
        saved = (saved_config or {}).get(section) or {}
        for key, value in current[section].items():
            name = f"{section}.{key}"
            if key in saved and saved[key] != value and name not in BOOKKEEPING_KEYS:
                changes.append(f"{name} {saved[key]} -> {value}")
    return changes


def _refuse_optimizer_changes(path: Path, saved: dict | None, cfg: Config) -> None:
    """CheckpointError when the config changes a setting the optimizer state would override."""
    saved_train = (saved or {}).get("train") or {}
    for key in OPTIMIZER_KEYS:
        old, new = saved_train.get(key), getattr(cfg.train, key)
        if key in saved_train and old != new:
            raise CheckpointError(
                f"--resume: {path} was trained with train.{key} {old} but the config asks for {new}; the optimizer "
                f"state keeps the run's value, so resume with train.{key} {old}, or start a new schedule with "
                f"--finetune-from {path} (finetune_from= in Python)"
            )


def read_finetune_weights(path: str | os.PathLike, arch: str) -> dict[str, torch.Tensor]:
    """The state_dict to fine-tune from, checked to be `arch` (before the run's work dir is made)."""
    try:
        state = read_weights(path)["model"]
        found, _ = infer_arch(state, path)
    except CheckpointError as exc:
        raise CheckpointError(f"--finetune-from {exc}") from None
    if found != arch:
        raise CheckpointError(f"--finetune-from {path}: the weights are a {found} model but the config's model.arch "
                              f"is {arch}; fine-tune from {arch} weights or set model.arch: {found}")
    return state


def load_finetune_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> list[str]:
    """Load weights only; classifier layers whose class count differs, and absent aux heads, start fresh.

    Returns one warning per layer or head left at its initialisation. Any other mismatch is an error.
    """
    expected = model.state_dict()
    num_classes = model.num_classes
    keep, skipped = {}, {}
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(f"--finetune-from {path}: unexpected entry '{key}'; is it a {type(model).__name__} checkpoint?")
        if value.shape == expected[key].shape:
            keep[key] = value
        elif value.dim() >= 1 and expected[key].shape[0] == num_classes and value.shape[1:] == expected[key].shape[1:]:
            skipped.setdefault(key.rsplit(".", 1)[0], (value.shape[0], num_classes))
        else:
            raise CheckpointError(f"--finetune-from {path}: entry '{key}' has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    aux = tuple(getattr(model, "aux_heads", ()))
    # num_batches_tracked only counts steps: converted and older checkpoints lack it (torch's loader allows that too).
    absent = [key for key in expected if key not in state and not key.endswith(".num_batches_tracked")]
    fresh_heads = sorted({key.split(".")[0] for key in absent if key.split(".")[0] in aux})
    partial = [key for key in absent if key.split(".")[0] not in aux]
    if partial:
        more = f" (and {len(partial) - 1} more)" if len(partial) > 1 else ""
        raise CheckpointError(f"--finetune-from {path}: missing entry '{partial[0]}'{more}; a truncated file or "
                              "another arch?")
    model.load_state_dict(keep, strict=False)
    messages = [f"--finetune-from: re-initialised {layer} ({old} -> {new} classes)" for layer, (old, new) in skipped.items()]
    if fresh_heads:  # eval-only exports (.safetensors) carry no aux heads
        messages.append(f"--finetune-from: {path} has no auxiliary heads (an eval-only export?); "
                        f"{', '.join(fresh_heads)} start from random init")
    return messages


def start_arguments(resume: object, finetune_from: object) -> tuple[str | Path | None, str | Path | None]:
    """`resume` as None, 'auto' or a path (True means 'auto'); refuse a bad type, or a resume path with finetune_from."""
    if resume is True:
        resume = "auto"
    elif resume is False or resume == "":
        resume = None
    if resume is not None and not isinstance(resume, (str, os.PathLike)):
        raise ConfigError(f"resume={resume!r}: pass 'auto' (or True), a checkpoint path, or None for a new run")
    if finetune_from is not None and not isinstance(finetune_from, (str, os.PathLike)):
        raise ConfigError(f"finetune_from={finetune_from!r}: pass a weights file path, or None")
    # "auto" with weights is a requeueable fine-tune: it fine-tunes until the run has a last.pt, then resumes it.
    if resume not in (None, "auto") and finetune_from:
        raise ConfigError(f"--resume {resume} and --finetune-from (resume= and finetune_from= in Python) exclude each "
                          "other: resume continues a run with its optimizer state, finetune_from starts a new schedule "
                          "from weights; pass one (or a bare --resume, resume='auto', to resume the fine-tune once it "
                          "has a last.pt)")
    return resume, finetune_from
