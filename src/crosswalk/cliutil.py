"""What every command module shares: argparse ``type=`` checks (a bad value is a one-line usage error),
writing a result as JSON, and the process's malloc settings."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
from pathlib import Path


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def write_json(obj: dict, path: str | Path | None) -> None:
    """Write ``obj`` as indented JSON (folders made as needed) and say where; nothing when ``path`` is None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    print(f"wrote {path}")


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of handing every large block back to the kernel.

    glibc serves each allocation over 32 MB (a CPU training step's activations) with a fresh ``mmap`` and
    unmaps it when freed, so every step faults in and zeroes its memory again: measured here, a nano step at
    batch 32 took 150-270 thousand minor page faults and 2.2-2.7 s; from the heap, with freed memory kept,
    6-9 thousand and 2.14-2.30 s, the same steps interleaved; ``bench train`` went from 12.2-12.6 to
    14.4-15.0 images/s (two runs of each, alternated). The price is that the process keeps its peak memory.
    Skipped when the environment sets glibc's own ``MALLOC_MMAP_MAX_`` or ``MALLOC_TRIM_THRESHOLD_`` (either
    also turns off glibc's sliding mmap threshold: ``bench train`` with ``MALLOC_MMAP_MAX_=65536``, the default
    value, ran at 7.4-8.6 images/s), and off glibc. Returns whether the settings were applied."""
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        glibc = ""
    if not glibc.startswith("glibc") or {"MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False
