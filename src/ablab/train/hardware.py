"""The machine a run trains on: device choice, measured matmul peak, peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import platform
import resource
import socket
import sys
import time

import torch

from ablab.data.cache import cache_dir, write_atomic
from ablab.errors import UserError


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA GPU is visible; set train.device=auto or cpu.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 (no autocast) on CPU unless bf16 is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of unmapping them.

    A CPU training step allocates and frees the same large activation buffers every step; by default
    glibc returns them to the OS and the next step pays a page fault per page to get them back.
    Measured on the small benchmark model: 0.37 s -> 0.31 s per step. Returns False where this is
    not glibc (macOS, musl), which is harmless.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


@functools.cache
def measured_peak_flops(device_type: str, dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """This machine's matmul FLOP/s in `dtype` (the MFU denominator when train.peak_flops is 0): the
    best of several timed square matmuls, or the best this machine ever measured, whichever is higher,
    since a peak measured while other work loads the machine reads low and inflates MFU (129% was
    recorded so). Cached per process; under a second on 2 CPU cores. 2048 rather than 1024: the
    smaller size measured anywhere from 240 to 370 GFLOP/s here."""
    device = torch.device(device_type)
    if device.type == "cuda":
        size = 8192
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(8):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return remember_peak_flops(device, dtype, 2 * size**3 / best)


def remember_peak_flops(device: torch.device, dtype: torch.dtype, flops: float) -> float:
    """The higher of `flops` and the best peak remembered for this machine, device, dtype and thread
    count (in the cache's peak_flops.json, so one quiet moment serves every later run); remembers it."""
    path = cache_dir() / "peak_flops.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: measure afresh, and rewrite it
        known = {}
    known = known if isinstance(known, dict) else {}
    key = _machine_key(device, dtype)
    remembered = known.get(key)
    if isinstance(remembered, (int, float)) and math.isfinite(remembered) and remembered >= flops:
        return float(remembered)
    known[key] = flops
    with contextlib.suppress(OSError):  # a read-only cache costs only the memory of this peak
        write_atomic(path, json.dumps(known, indent=1, sort_keys=True).encode())
    return flops


def _machine_key(device: torch.device, dtype: torch.dtype) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"{socket.gethostname()}|{device.type}|{name}|{dtype}|threads={threads}|torch={torch.__version__}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated, or this process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def describe(device: torch.device) -> dict:
    info = {"device": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
