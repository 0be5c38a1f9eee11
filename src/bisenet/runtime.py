"""Process-wide settings for fast CPU runs, and what the CPU can do fast."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import torch

# mallopt(3) parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NEVER_TRIM = 2**31 - 1  # the largest int mallopt takes: the heap is trimmed only when 2 GiB at its top are free

_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Returns True once the setting is in place (also on later calls), False where the C
    library is not glibc. By default glibc serves every large block (activations, gradients,
    full-size logits) with mmap and unmaps it on free, so each training step page-faults the
    same gigabyte or two back in. On the 2-core development CPU that was 20% of an fp32 training
    step, 40% of a textbook fp32 one, up to 20% of a bf16 one (depending on the process's earlier
    allocations, which move glibc's own thresholds) and 20% of an eager forward. With this,
    large blocks come from the heap, which is trimmed only when 2 GiB at its top are free: the
    process keeps its peak memory (which it reaches every step anyway) instead of returning it
    between steps. It is process-wide and cannot be undone, which is why train, evaluate and
    Segmenter call it only for CPU runs, and the benchmark only when asked.
    """
    global _kept
    if _kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # Heap first: with mmap off and the default trim threshold, the freed top of the heap would
    # be returned (and faulted back) instead.
    _kept = bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)) and bool(libc.mallopt(_M_MMAP_MAX, 0))
    return _kept


def _cpu_capabilities() -> dict:
    # torch.cpu.get_capabilities is private (torch >= 2.5); without it, claim nothing.
    get = getattr(torch.cpu, "get_capabilities", None)
    try:
        return dict(get()) if get else {}
    except Exception:  # noqa: BLE001 - a capability probe must never stop a run
        return {}


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX-BF16).

    Elsewhere oneDNN has no bf16 kernels and PyTorch falls back to slow reference loops:
    a 3x3 conv under bf16 autocast took 12x its fp32 time on an AVX2-only EPYC.
    """
    caps = _cpu_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def cpu_has_vnni() -> bool:
    """True where the CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX-INT8).

    Without one, x86 int8 kernels multiply u8 x s8 pairs into int16 with saturation
    (VPMADDUBSW), which onnxruntime advises countering with 7-bit weights (reduce_range).
    """
    caps = _cpu_capabilities()
    return bool(caps.get("avx512_vnni") or caps.get("avx_vnni") or caps.get("amx_int8"))
