"""`bisenet bench --mode train`: a full training step (forward, OHEM + aux loss, backward, optimizer) per precision."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bisenet.deploy.bench import _finish, _memory, _reset_memory, _sync, _time_round_robin
from bisenet.errors import BisenetError, nearest
from bisenet.models.layers import use_textbook_blocks
from bisenet.runtime import keep_freed_memory

# fp32_plain is the textbook step (full-size logits from the model, cross-entropy on them, torch's
# nn.Dropout, aux heads that upsample before their conv), the baseline; the others are `bisenet
# train`'s step: the loss upsamples low-resolution logits itself, dropout draws a cheaper mask on
# the CPU, and the aux heads' conv runs before the upsampling (bisenet.models.layers).
TRAIN_PRECISIONS = ("fp32_plain", "fp32", "bf16", "fp16", "bf16_compile")


def bench_train(model: nn.Module, size: tuple[int, int], batch_size: int, device: torch.device,
                precisions: Sequence[str] | None, warmup: int, iters: int, keep_memory: bool,
                log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One row per precision: the step's median/p90 time, its GFLOPs and the memory it peaked at."""
    from bisenet.config import TrainConfig
    from bisenet.engine.optim import build_optimizer
    from bisenet.losses import build_loss
    from bisenet.runtime import cpu_has_native_bf16

    # Without native bf16 a CPU bf16 step is several times slower than fp32 and would dominate the run
    # (as bench/bench_train.py leaves it out); asked for by name, it runs with a warning.
    slow_bf16 = device.type == "cpu" and not cpu_has_native_bf16()
    default = ["fp32_plain", "fp32"] + ([] if slow_bf16 else ["bf16"]) + (["fp16"] if device.type == "cuda" else [])
    names = list(precisions or default)
    for name in names:
        if name not in TRAIN_PRECISIONS:
            raise BisenetError(f"unknown training precision {name!r}{nearest(name, TRAIN_PRECISIONS)}; valid: {', '.join(TRAIN_PRECISIONS)}")
        if name == "fp16" and device.type != "cuda":
            raise BisenetError("fp16 training needs --device cuda (device='cuda' in Python); on CPU use bf16")
    if slow_bf16 and any(name.startswith("bf16") for name in names):
        from bisenet.engine.monitor import warn

        warn("bf16 training on this CPU (no AVX-512 BF16 or AMX) runs several times slower than fp32; "
             "fp32 is the faster choice here")
    cfg = TrainConfig()  # the reference recipe: OHEM on the main and every aux head, SGD groups
    loss_fn = build_loss(cfg, 255, len(model.aux_heads), check_values=False)  # as bisenet train builds it
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, *size, generator=generator).to(device)
    y = torch.randint(0, model.num_classes, (batch_size, *size), generator=generator).to(device)
    gflops = _train_flops(use_textbook_blocks(copy.deepcopy(model)).train(), x) / 1e9
    steps, rows = {}, {}
    for name in names:
        _reset_memory(device)
        log(f"building {name} training step ...")
        start = time.perf_counter()
        steps[name] = _train_step(copy.deepcopy(model).train(), loss_fn, cfg, name, device, x, y, build_optimizer)
        steps[name]()
        _sync(device)
        kept = keep_memory and keep_freed_memory()
        rows[name] = {"backend": name, "mode": "train", "device": str(device), "size": f"{size[0]}x{size[1]}",
                      "batch_size": batch_size, "threads": torch.get_num_threads(), "keep_memory": kept,
                      "build_s": round(time.perf_counter() - start, 2), **_memory(device, "build_")}
        _reset_memory(device)
        for _ in range(max(1, warmup)):
            steps[name]()
        rows[name].update(_memory(device))
    log(f"timing {len(names)} training setting(s) round-robin, {iters} iterations ...")
    times = _time_round_robin(steps, iters, device)
    baseline = next((name for name in ("fp32_plain", "fp32") if name in names), names[0])
    return _finish(rows, times, batch_size, gflops, baseline)


def _train_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of a training step: the train-mode forward (all heads) x 3 (backward is about 2x forward).

    Counted on the textbook blocks, so every precision's GFLOP/s is against the same work.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return 3 * int(counter.get_total_flops())


def _train_step(model, loss_fn, cfg, precision, device, x, y, build_optimizer) -> Callable[[], float]:
    """One closure: forward in train mode, OHEM + aux loss, backward, optimizer.step."""
    channels_last = not precision.startswith("fp32")
    upsample = precision == "fp32_plain"
    if upsample:  # the textbook step: torch's dropout, aux heads upsample before their conv
        use_textbook_blocks(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    dtype = {"bf16": torch.bfloat16, "bf16_compile": torch.bfloat16, "fp16": torch.float16}.get(precision)
    forward = torch.compile(model) if precision.endswith("compile") else model
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = forward(x, upsample=upsample)
        total, _ = loss_fn(outputs, y)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)  # frees the gradients between steps
        return float(total.detach())

    return step
