"""Small, pure helpers for running under torchrun (DDP) or as a single process."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process (torchrun)."""
        return self.world_size > 1


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device for 'auto' (CUDA when present), 'cpu' or 'cuda[:N]', or a one-line error naming the fix."""
    from bisenet.errors import ConfigError

    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {str(device)!r}: not a device name; pass auto, cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):  # every backend, and the trainer, is written for these two
        raise ConfigError(f"device {device}: only cpu and cuda are supported; pass auto, cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: CUDA is not available on this machine; "
                          "pass --device cpu (device='cpu' in Python)")
    return device


def rank_device(name: str | torch.device, local_rank: int = 0) -> torch.device:
    """`resolve_device`, where 'cuda' (or 'auto' on a GPU) under torchrun means this rank's GPU."""
    from bisenet.errors import ConfigError

    device = resolve_device(name)
    if device.type != "cuda":
        return device
    if device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"--device {name}: under torchrun each process takes its own GPU (LOCAL_RANK); "
                          "pass --device cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs")
    if device.index is None:
        # One visible GPU per process (some schedulers) means every rank's GPU is cuda:0.
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        # device_id binds NCCL to this rank's GPU at once (no guessing in barrier()).
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)
    return DistInfo(rank, world_size, local_rank, device)


def is_main_process() -> bool:
    """True on rank 0, or when not distributed."""
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise max over all processes (identity when not distributed)."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over all processes (identity when not distributed)."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group if we joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
