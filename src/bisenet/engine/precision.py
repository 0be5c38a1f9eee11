"""Which precision and memory layout a training run uses: `train.amp` and `train.channels_last` resolved.

'auto' picks what the device runs fast (bf16 only where the CPU or GPU multiplies it natively);
the start line of a run says what each 'auto' chose.
"""

from __future__ import annotations

import torch

from bisenet.engine.monitor import warn
from bisenet.errors import BisenetError
from bisenet.runtime import cpu_has_native_bf16


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `train.amp` asks for on `device` (None: fp32); 'auto' picks what the hardware runs fast."""
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_bf16 else torch.float16  # bf16 needs no loss scaling
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if amp == "none":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise BisenetError("--amp fp16 needs a CUDA device; on CPU use --amp auto (train.amp: auto; or bf16, or none)")
        return torch.float16
    if device.type == "cuda" and not cuda_bf16:
        raise BisenetError("--amp bf16: this GPU does not support bfloat16; use --amp fp16 (train.amp: fp16)")
    if device.type == "cpu" and not cpu_has_native_bf16():
        warn("--amp bf16: this CPU has no bf16 instructions (AVX-512 BF16 or AMX), so bf16 runs several "
             "times slower than fp32 here; use --amp auto or none")
    return torch.bfloat16


def amp_name(amp: str, dtype: torch.dtype | None) -> str:
    """What the start line says `train.amp` chose, e.g. 'auto (bf16)'."""
    name = {None: "none", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return f"auto ({name})" if amp == "auto" else name


def use_channels_last(setting: bool | str, amp_dtype: torch.dtype | None, device: torch.device) -> bool:
    """`train.channels_last` as a yes/no: 'auto' is on under autocast and on CUDA, off for fp32 on a CPU.

    bf16 convs on the CPU and tensor-core kernels on the GPU want channels_last; oneDNN's fp32
    conv backward on AVX2 CPUs ran 10-25% slower in it (docs/deployment.md).
    """
    if setting == "auto":
        return amp_dtype is not None or device.type == "cuda"
    return bool(setting)


def channels_last_name(setting: bool | str, used: bool) -> str:
    """What the start line says `train.channels_last` chose, e.g. 'auto (off)'."""
    name = "on" if used else "off"
    return f"auto ({name})" if setting == "auto" else name
