"""Measure "this machine" for the catalog: cores, fp32 matmul peak and memory bandwidth.

The planner's roofline for this machine uses these measured figures instead of datasheet ones (no datasheet
for a shared cloud vCPU tells what a process actually gets).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def matmul_gflops(seconds: float = 0.6, n: int = 1024, threads: int | None = None) -> float:
    """Best fp32 GFLOP/s of an n x n matmul (2 n^3 FLOPs) over ``seconds``: the compute roof."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads or cores())
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best, start = 0.0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    finally:
        torch.set_num_threads(old)
    return best


def memory_gb_per_s(seconds: float = 0.4, megabytes: int = 128) -> float:
    """Best copy bandwidth (bytes read + bytes written) of a buffer far larger than the caches."""
    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = max(best, 2 * src.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def measure_machine(quick: bool = False) -> dict:
    """The ``machine`` block of a profile: what the planner calls ``this_machine``."""
    scale = 0.5 if quick else 1.0
    return {
        "cpu": _cpu_model(),
        "cores": cores(),
        "matmul_fp32_gflops": round(matmul_gflops(0.6 * scale), 1),
        "memory_gb_per_s": round(memory_gb_per_s(0.4 * scale), 2),
        "how": "best fp32 torch.mm 1024^3 over all cores; best numpy copy of 128 MB (read + write bytes)",
    }
