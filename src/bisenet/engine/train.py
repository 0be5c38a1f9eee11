"""`train(cfg)`: the whole training loop, from data to `optimizer.step()`, in one function.

Runs unchanged on CPU, one GPU, or many under torchrun (DDP). Every source of randomness
is a pure function of (seed, iteration, rank), so a run resumed from `last.pt` ends with
the same weights as one that was never interrupted (bit for bit on CPU; CUDA kernels add
their own last-bit noise).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bisenet.config import Config, load_config, save_config
from bisenet.data import build_dataset, validate_split
from bisenet.data.dataset import (ignore_stop_signals, loader_batches, make_loader, too_many_workers_note,
                                  with_absolute_data_paths)
from bisenet.data.device_augment import DeviceBatches
from bisenet.engine.resume import (ResumePoint, checkpoint_state, load_finetune_weights, read_finetune_weights,
                                  read_resume_checkpoint, restore_checkpoint, resume_differences, resume_source,
                                  start_arguments)
from bisenet.engine.distributed import DistInfo, all_reduce_max, all_reduce_sum, barrier, cleanup, init_distributed
from bisenet.engine.monitor import RunMonitor
from bisenet.engine.optim import build_optimizer, build_scheduler
from bisenet.engine.precision import amp_dtype_for, amp_name, channels_last_name, use_channels_last
from bisenet.engine.sampler import IterationSampler
from bisenet.engine.start import (check_train_arguments, data_notes, default_work_dir, earlier_run_files,  # default_work_dir: the CLI's
                                 open_monitor, refuse_replacing_earlier_run, stored_run_note, sync_bn_note,
                                 training_data_signature, warmup_note)
from bisenet.engine.stop import StopRequest
from bisenet.checkpoint import atomic_save
from bisenet.errors import BisenetError
from bisenet.losses import build_loss
from bisenet.models import build_model
from bisenet.runtime import keep_freed_memory

SAMPLE_CHECKED = 8  # pairs per split read in full before training starts


class TrainingError(BisenetError):
    """Training cannot go on (a non-finite loss, for instance)."""


@dataclass(frozen=True)
class TrainResult:
    """Where a run ended and what it left behind."""

    work_dir: Path
    iteration: int
    best_miou: float | None
    last_miou: float | None
    stopped_by: str | None  # "SIGTERM" / "SIGINT" when interrupted, else None
    # Median wall time of one iteration (loading its batch to its log line; evaluations and
    # checkpoints not counted), the first, with its start-up costs, left out; None when fewer
    # than two iterations ran.
    seconds_per_iter: float | None = None


def train(cfg: Config | str | Path | dict, work_dir: str | Path | None = None, resume: str | Path | bool | None = None,
          finetune_from: str | Path | None = None) -> TrainResult:
    """Train `cfg` into `work_dir`; returns where the run ended (a refused start leaves no work dir behind).

    cfg: a Config, or a YAML path or dict that `load_config` reads.
    work_dir: the run's folder: config.yaml, last.pt, best.pt, train.log, metrics.jsonl, tensorboard/;
        None: runs/<config file name> (as `bisenet train`), for a cfg given as a YAML path; the run's own
        folder for a run's stored config.yaml.
    resume: continue a run, its optimizer state and schedule included. "auto" (or True; the CLI's bare
        --resume) resumes work_dir/last.pt if there is one and otherwise starts a new run; a path resumes
        that checkpoint; None (or False) starts a new run, refused if work_dir already holds last.pt (or
        an earlier run's best.pt, metrics or TensorBoard events).
    finetune_from: weights to start a new schedule from (weights only; a classifier with another class
        count, and aux heads the file lacks, start fresh). With resume="auto" only until work_dir has a
        last.pt (a requeued fine-tune resumes); with a resume path it is refused.
    """
    check_train_arguments(cfg, work_dir)
    if work_dir is None:
        work_dir = default_work_dir(cfg)
        note = stored_run_note(cfg)
        if note and os.environ.get("RANK", "0") == "0":
            print(note, flush=True)
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    cfg = with_absolute_data_paths(cfg)  # the run's stored config then works from any directory
    resume, finetune_from = start_arguments(resume, finetune_from)
    dist_info = init_distributed(cfg.train.device)
    device = dist_info.device
    try:
        # The run reseeds torch's RNG at every step: the caller's random state comes back afterwards.
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
                contextlib.ExitStack() as on_exit:  # closes the run's logs and frees its work dir, also on failure
            return _train(cfg, Path(work_dir), dist_info, resume, finetune_from, on_exit)
    finally:
        cleanup()


def _train(cfg: Config, work_dir: Path, dist_info: DistInfo, resume: str | Path | None, finetune_from: str | Path | None,
           on_exit: contextlib.ExitStack) -> TrainResult:
    tc, device = cfg.train, dist_info.device
    resume_path, nothing_to_resume = resume_source(work_dir, resume, dist_info)
    if resume_path is None:  # a new run would replace what an earlier one left (people delete last.pt to save disk)
        found = earlier_run_files(work_dir)
        if dist_info.world_size > 1 and all_reduce_max(torch.tensor([float(bool(found))], device=device)).item():
            found = found or [f"files another process sees ({work_dir} is not shared storage?)"]  # all refuse alike
        refuse_replacing_earlier_run(work_dir, found)
    amp_dtype = amp_dtype_for(tc.amp, device)

    # Data: check the lists before anything heavy, so a broken file fails in seconds; a few
    # labels read in full catch a wrong class count or label encoding before the work dir exists.
    validate_split(cfg, "train", sample=SAMPLE_CHECKED)
    evaluating = tc.eval_interval > 0
    if evaluating and cfg.data.val_list != cfg.data.train_list:  # the same list: checked (and its notes said) above
        validate_split(cfg, "val", sample=SAMPLE_CHECKED)
    train_set = build_dataset(cfg, "train")
    train_data = training_data_signature(train_set, cfg.data.root)  # in checkpoints: a resume notices an edited list
    val_set = build_dataset(cfg, "val") if evaluating else None
    finetune_state = read_finetune_weights(finetune_from, cfg.model.arch) if finetune_from and not resume_path else None
    resume_ckpt = read_resume_checkpoint(resume_path, cfg, device) if resume_path else None

    model, memory_format, channels_last = _build_model(cfg, dist_info, amp_dtype)
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = build_loss(tc, cfg.data.ignore_index, num_aux=len(model.aux_heads), check_values=False)  # the dataset did

    start, finetune_messages = ResumePoint(), []
    if resume_ckpt is not None:
        start = restore_checkpoint(resume_ckpt, model, optimizer, scheduler, scaler)
        del resume_ckpt
    elif finetune_state is not None:
        finetune_messages = load_finetune_weights(model, finetune_state, finetune_from)
    eval_missed = resume_path is not None and start.missed_evaluation(tc)
    has_work = eval_missed or start.iteration < tc.max_iters  # else a finished run: nothing runs, nothing changes
    # Only now the work dir and its logs: a start refused above leaves nothing behind.
    monitor = on_exit.enter_context(open_monitor(work_dir, tc, dist_info, fresh=not resume_path,
                                                 resume_iter=start.iteration, eval_again=eval_missed))
    if nothing_to_resume:
        monitor.print(f"--resume: {work_dir} holds no last.pt yet; starting a new run")
    if finetune_state is not None:
        monitor.print(f"fine-tuning from {finetune_from}: its weights, a new schedule")
    if resume_path:
        monitor.print(f"resumed from {resume_path} at iteration {start.iteration}{monitor.replayed_note()}")
        if has_work:
            for message in resume_differences(start, cfg, dist_info.world_size, train_data):
                monitor.warn(message)
    for message in finetune_messages:
        monitor.warn(message)  # in train.log too: it explains the first iterations' losses
    for note in (warmup_note(tc) if has_work else None, sync_bn_note(cfg, dist_info.distributed, device.type),
                 *(data_notes(cfg, train_set, dist_info.world_size) if has_work else [])):
        if note:
            monitor.warn(note)  # in train.log too: they explain the run's curves
    if eval_missed:  # last.pt is written before an evaluation: one that failed or was cut short runs now
        monitor.print(f"iteration {start.iteration} has no finished evaluation: running it now")
    elif start.iteration >= tc.max_iters:
        monitor.print(f"nothing to do: the run is already at iteration {start.iteration} of {tc.max_iters}")
    if dist_info.is_main and has_work:  # config.yaml: the config the run goes on with
        save_config(cfg, work_dir / "config.yaml")
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist_info.distributed else model
    loader = _train_loader(train_set, cfg, dist_info, start.iteration, monitor)
    images_per_step = tc.batch_size * dist_info.world_size
    monitor.print(
        f"training {cfg.model.arch} on {len(train_set)} images ({cfg.data.dataset}), {cfg.num_classes} classes | "
        f"device {device} x {dist_info.world_size} process(es) | batch size {tc.batch_size} per process = "
        f"{images_per_step} images per step | amp {amp_name(tc.amp, amp_dtype)} | channels_last {channels_last_name(tc.channels_last, channels_last)} | iterations {start.iteration} -> {tc.max_iters}"
    )

    last_miou, best_miou, evaluated_iter, stopped_by = None, start.best_miou, start.evaluated, None
    head_names = ["main", *model.aux_heads]  # the loss parts' order; logged under the model's own module names
    stop = StopRequest()
    iteration = start.iteration
    net.train()
    monitor.start(start.iteration)
    # Per-head loss sums since the last log line and its iteration; a resumed run takes the
    # checkpoint's, so that it logs the same records as a run never stopped.
    sums: dict[str, torch.Tensor] = {name: torch.tensor(per_rank, device=device)
                                      for name, per_rank in start.pending_log.get("sums", {}).items()}
    last_logged = int(start.pending_log.get("last_logged", start.iteration))

    def save(name: str) -> None:
        pending_log = {"sums": _mean_over_ranks(sums, dist_info.world_size), "last_logged": last_logged}
        _save(work_dir / name, dist_info, cfg, model, optimizer, scheduler, scaler, iteration=iteration,
              best_miou=best_miou, pending_log=pending_log, evaluated_iter=evaluated_iter, train_data=train_data)

    def evaluate() -> None:  # val mIoU at `iteration`; best.pt when it is the best so far
        nonlocal last_miou, best_miou, evaluated_iter
        last_miou = _evaluate(model, val_set, device, cfg, monitor, iteration, best_miou)
        evaluated_iter = iteration
        if best_miou is None or last_miou > best_miou:
            best_miou = last_miou
            save("best.pt")
        net.train()
        monitor.start(iteration)
    step_seconds: list[float] = []  # each iteration's own time (data wait to logging), for seconds_per_iter
    with stop.installed():
        try:
            if eval_missed:
                evaluate()
                save("last.pt")  # with the evaluation done: a later resume does not run it again
            batches = on_exit.enter_context(loader_batches(loader))  # its workers end with the run, also on failure
            while iteration < tc.max_iters:
                step_start = time.perf_counter()
                images, labels = next(batches)  # a bad sample raises SampleError, one line even from a worker
                iteration += 1
                # Dropout masks depend only on (seed, iteration, rank): exact resume needs no RNG state.
                torch.manual_seed(tc.seed * 1_000_003 + iteration * 7919 + dist_info.rank)
                images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                labels = labels.to(device, non_blocking=True)

                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    # Logits at each head's own stride: the loss upsamples them one image at a time.
                    outputs = net(images, upsample=False)
                loss, parts = criterion(outputs, labels)

                # One collective for both questions: any rank's loss non-finite, any rank asked to stop.
                nonfinite, stop_asked = all_reduce_max(
                    torch.tensor([float(not torch.isfinite(loss)), float(stop.signal is not None)], device=device)).tolist()
                if nonfinite:
                    raise TrainingError(_nonfinite_message(iteration, loss, dict(zip(head_names, parts)), amp_dtype,
                                                           work_dir / "last.pt"))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                step_lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["lr_scale"]  # the lr this step used
                scaler.step(optimizer)  # optimizer.step(), skipped when fp16 gradients overflowed
                scaler.update()
                scheduler.step()
                if not dist_info.distributed:  # a signal during backward stops after this step, not the next one
                    stop_asked = stop_asked or stop.signal is not None

                for name, value in zip(["loss", *head_names], [loss, *parts]):
                    # Summed as tensors: one all-reduce per log line, not one per step and loss.
                    sums[name] = sums.get(name, 0.0) + value.detach().float()
                if iteration % tc.log_interval == 0 or iteration == tc.max_iters or iteration == 1:
                    span = iteration - last_logged  # the iterations summed in `sums`
                    # The mean over all processes' images, not rank 0's (every rank reaches this line at once).
                    means = all_reduce_sum(torch.stack(list(sums.values()))) / (span * dist_info.world_size)
                    monitor.log_train(iteration, dict(zip(sums, means.tolist())), step_lr, images_per_step)
                    sums, last_logged = {}, iteration
                step_seconds.append(time.perf_counter() - step_start)  # before any evaluation or checkpoint

                finished = iteration == tc.max_iters
                checkpoint_due = iteration % tc.checkpoint_interval == 0 or finished
                evaluating_now = evaluating and (iteration % tc.eval_interval == 0 or finished)
                if evaluating_now:
                    save("last.pt")  # first: an evaluation that fails must not cost the iterations since the last
                    evaluate()
                    # A signal that came during the evaluation stops the run now, not after another step and evaluation.
                    stop_asked = all_reduce_max(torch.tensor([float(stop.signal is not None)], device=device)).item()
                if stop_asked and not finished:  # at the last iteration the run is done: say so, not "stopped"
                    stopped_by = stop.signal or "signal on another rank"
                if checkpoint_due or evaluating_now or stopped_by:  # again after an evaluation: it and its best mIoU
                    save("last.pt")
                if stopped_by:
                    launcher = (f"torchrun --nproc_per_node {dist_info.world_size} -m bisenet" if dist_info.distributed
                                else "bisenet")  # the same processes continue the same data order
                    monitor.print(f"stopped by {stopped_by} at iteration {iteration}; last.pt written. Continue with: "
                                  f"{launcher} train {shlex.quote(str(work_dir / 'config.yaml'))} --work-dir "
                                  f"{shlex.quote(str(work_dir))} --resume")
                    break
        except Exception as exc:  # train.log says why the run ended, and when
            monitor.log_error(iteration, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C
            monitor.log_error(iteration, "interrupted (a second Ctrl-C): stopped at once, without writing last.pt")
            raise
        steady = sorted(step_seconds[1:])  # the first pays start-up costs (workers, allocator, kernels)
        seconds_per_iter = steady[len(steady) // 2] if steady else None
    curves = monitor.close()
    if dist_info.is_main and curves:
        print(f"curves: {curves}")
    return TrainResult(work_dir, iteration, best_miou, last_miou, stopped_by, seconds_per_iter)


def _build_model(cfg: Config, dist_info: DistInfo, amp_dtype: torch.dtype | None
                 ) -> tuple[nn.Module, torch.memory_format, bool]:
    """The network on its device: the same initial weights on every rank, SyncBN and channels_last as configured."""
    device = dist_info.device
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.arch, cfg.num_classes, pretrained=cfg.model.pretrained)
    if cfg.model.sync_bn and dist_info.distributed:
        if device.type == "cuda":  # elsewhere sync_bn_note says so, in train.log too
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = use_channels_last(cfg.train.channels_last, amp_dtype, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: the fastest kernels are chosen once
    else:
        keep_freed_memory()  # no page faults on every step's activations: fp32 steps 20% faster here
    model.to(device=device, memory_format=memory_format)
    return model, memory_format, channels_last


def _train_loader(train_set, cfg: Config, dist_info: DistInfo, start_iter: int, monitor: RunMonitor):
    """Batches of this rank's share of every step from `start_iter` on (the order is a function of the seed)."""
    tc, device = cfg.train, dist_info.device
    sampler = IterationSampler(len(train_set), tc.batch_size, tc.seed, dist_info.rank, dist_info.world_size,
                               start_iter, tc.max_iters)
    if cfg.data.cache == "device":  # the decoded split on the device, augmented there: no workers
        if device.type == "cpu":
            monitor.warn("data.cache: device on a CPU augments 2.7x slower than the OpenCV loader; use data.cache: memory")
        return DeviceBatches(train_set, sampler, tc.batch_size, device)
    note = too_many_workers_note(tc.workers, "train.workers")
    if note:
        monitor.warn(note)
    return make_loader(
        train_set, batch_size=tc.batch_size, sampler=sampler, num_workers=tc.workers,
        pin_memory=device.type == "cuda", drop_last=False,
        # A private generator: creating the loader must not consume the global RNG.
        generator=torch.Generator().manual_seed(tc.seed),
        persistent_workers=False, prefetch_factor=4 if tc.workers > 0 else None,
        worker_init_fn=ignore_stop_signals,
    )


def _mean_over_ranks(sums: dict[str, torch.Tensor], world_size: int) -> dict[str, float]:
    """Each loss sum's mean over the ranks: what every rank of a resumed run (of any process count) starts from."""
    if not sums:
        return {}
    return dict(zip(sums, (all_reduce_sum(torch.stack(list(sums.values()))) / world_size).tolist()))


def _save(path: Path, dist_info: DistInfo, cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, *, iteration: int,
          best_miou: float | None, pending_log: dict, evaluated_iter: int | None, train_data: dict | None) -> None:
    """Rank 0 writes the checkpoint atomically; every rank waits until it is on disk.

    `pending_log` holds the loss sums (the mean over ranks) of the iterations since the last log line;
    `evaluated_iter` the iteration of the last evaluation that finished (a resume redoes one due but missed);
    `train_data` the training pairs' size and fingerprint (a resume warns when the list changed).
    """
    if dist_info.is_main:
        state = checkpoint_state(cfg, model, optimizer, scheduler, scaler, iteration, best_miou, dist_info.world_size)
        atomic_save({**state, "pending_log": pending_log, "evaluated": evaluated_iter, "train_data": train_data}, path)
    barrier()


def _evaluate(model: nn.Module, val_set, device: torch.device, cfg: Config, monitor: RunMonitor,
              iteration: int, best_miou: float | None) -> float:
    """Single-scale val mIoU (each rank scores a shard); rank 0 logs the table and a few masks."""
    from bisenet.evaluation import evaluate_model
    from bisenet.evaluation.inference import make_protocol

    model.eval()
    if dist.is_initialized():
        # Without SyncBN each rank's running statistics drift between DDP's broadcasts; score
        # rank 0's model (the one saved) on every shard.
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    result = evaluate_model(model, val_set, device, protocol=make_protocol("ss", scale=cfg.eval.scale),
                            class_names=cfg.data.class_names, workers=cfg.train.workers,
                            distributed=dist.is_initialized())
    if monitor.enabled:
        monitor.log_eval(iteration, result, max(result["mIoU"], best_miou or 0.0))
        _log_sample_masks(model, val_set, device, cfg, monitor, iteration)
    return float(result["mIoU"])


def _log_sample_masks(model: nn.Module, val_set, device: torch.device, cfg: Config, monitor: RunMonitor,
                      iteration: int, count: int = 3) -> None:
    if monitor.writer is None:
        return
    from bisenet.data.catalog import palette_for
    from bisenet.data.colour import colorize
    from bisenet.evaluation import predict_labels

    palette = palette_for(cfg.data.palette, cfg.num_classes)  # custom datasets may set none
    images, masks = [], []
    mean = torch.tensor(cfg.data.mean).view(3, 1, 1)
    std = torch.tensor(cfg.data.std).view(3, 1, 1)
    for index in range(min(count, len(val_set))):
        image, _ = val_set[index]
        with torch.inference_mode():
            label = predict_labels(model, image.unsqueeze(0).to(device))[0].cpu().numpy()
        photo = ((image * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        images.append(photo)
        masks.append(colorize(label, palette))
    monitor.log_masks(iteration, images, masks)


def _nonfinite_message(iteration: int, loss: torch.Tensor, parts: dict[str, torch.Tensor],
                       amp_dtype: torch.dtype | None, last: Path) -> str:
    heads = ", ".join(f"{name}={float(part.detach()):.4g}" for name, part in parts.items())
    hint = "lower train.lr (or raise train.warmup_iters)"
    if amp_dtype == torch.float16:  # also when 'auto' chose fp16
        hint += ", try --amp bf16 or none (fp16 overflow)"
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    return (f"loss became {float(loss.detach())} at iteration {iteration} ({heads}); {kept}. Try: {hint}, and check "
            "the labels with `bisenet data check`")
