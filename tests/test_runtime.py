"""keep_freed_memory: a freed large tensor's pages are reused, not faulted in again; the CPU feature probes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Fills a 64 MiB tensor, frees it, and counts the minor page faults of filling a second one.
PROBE = """
import json, resource, sys, torch
from bisenet.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults_of_second_fill():
    torch.ones(16 * 2**20).mul_(2)  # allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20).mul_(2)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
# Small allocations in between can split a freed block, so the heap takes a few rounds to
# settle; the fewest faults of the later rounds is what a steady loop (a training run) sees.
rounds = [faults_of_second_fill() for _ in range(6)]
print(json.dumps({"kept": kept, "again": keep_freed_memory() if kept else None, "faults": min(rounds[2:])}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory tunes glibc's malloc; this C library is not glibc")
def test_kept_memory_is_reused_without_page_faults() -> None:
    plain, kept = _probe("plain"), _probe("keep")
    pages = 64 * 2**20 // 4096
    assert plain["faults"] > pages // 2, plain  # glibc's default: the 64 MiB block is unmapped on free
    assert kept["kept"] and kept["again"], kept
    assert kept["faults"] < pages // 20, kept  # reused from the heap


def _cpuinfo_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((l for l in f if l.startswith("flags")), None)
    except OSError:
        return None
    return set(line.split(":", 1)[1].split()) if line else None


@pytest.mark.skipif(platform.machine() != "x86_64" or _cpuinfo_flags() is None,
                    reason="the probes are checked against /proc/cpuinfo's x86 flags")
def test_cpu_feature_probes_match_the_kernels_flags() -> None:
    from bisenet.runtime import cpu_has_native_bf16, cpu_has_vnni

    flags = _cpuinfo_flags()
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"}), sorted(flags)
    assert cpu_has_vnni() == bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}), sorted(flags)
