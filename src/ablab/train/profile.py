"""Memory and speed of one architecture at several micro-batch sizes: what `ablab profile` prints.

For each batch size, a few real training steps (forward, backward, optimizer step; the config's
model, optimizer and precision) on random token ids, and:
- weights, gradients and optimizer state: the bytes of those tensors, exact on any device;
- activations: the bytes autograd saves for the backward pass in one micro-batch's forward
  (counted by a saved-tensors hook, each storage once), exact on any device;
- peak: on CUDA, torch.cuda.max_memory_allocated over the steps (what the allocator held at most);
  on a CPU, the rise of this process's resident set size during the steps over what it held before
  them (Linux resets the peak, /proc/self/clear_refs; it includes the allocator's slack);
- step time (median of the timed steps), tokens/s and MFU against the measured matmul peak.
A batch size that runs out of CUDA memory gives a row marked "out of memory" instead of an error.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ablab.config import Config
from ablab.model.gpt import GPT
from ablab.model.optim import build_optimizer
from ablab.train import hardware

MB = 2**20


@dataclass
class ProfileRow:
    batch_size: int
    seq_len: int
    params: int
    weights_mb: float
    grads_mb: float
    optimizer_mb: float
    activations_mb: float | None  # None: out of memory
    peak_mb: float | None
    step_s: float | None
    tokens_per_s: float | None
    mfu: float | None
    device: str
    peak_means: str  # what peak_mb measures on this device

    def as_dict(self) -> dict:
        return asdict(self)


def profile(cfg: Config, vocab_size: int, batch_sizes: list[int], steps: int = 3) -> list[ProfileRow]:
    """One ProfileRow per batch size, measured in this process on cfg.train.device."""
    device = hardware.pick_device(cfg.train.device)
    dtype = hardware.autocast_dtype(device, cfg.train.precision)
    peak_flops = cfg.train.peak_flops or hardware.measured_peak_flops(device.type, dtype or torch.float32)
    rows = []
    for batch_size in sorted(batch_sizes, reverse=True):
        rows.append(_measure(cfg, vocab_size, batch_size, steps, device, dtype, peak_flops))
    return sorted(rows, key=lambda row: row.batch_size)


def _measure(cfg: Config, vocab_size: int, batch_size: int, steps: int, device: torch.device,
             dtype: torch.dtype | None, peak_flops: float) -> ProfileRow:
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model, vocab_size, cfg.data.seq_len).to(device)
    optimizer = build_optimizer(model, cfg.optim, device.type)
    seq_len = cfg.data.seq_len
    x = torch.randint(0, vocab_size, (batch_size, seq_len), device=device)
    y = torch.randint(0, vocab_size, (batch_size, seq_len), device=device)
    means = ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
             "rise of the process's RSS during the steps over before them (allocator slack included)")
    weights = _bytes(model.parameters())
    hardware.reset_peak_memory(device)
    rss_before = _reset_cpu_peak() if device.type == "cpu" else None
    times, saved = [], 0
    try:
        for step in range(steps + 1):  # the first step builds optimizer state and warms up; not timed
            start = time.perf_counter()
            with _autocast(device, dtype), _SavedBytes() as counter:
                loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)  # keep the gradients: their bytes are measured below
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step:
                times.append(time.perf_counter() - start)
            saved = max(saved, counter.total)
    except torch.cuda.OutOfMemoryError:
        return ProfileRow(batch_size, seq_len, model.n_params(), weights / MB, 0.0, 0.0, None, None, None, None,
                          None, str(device), means)
    step_s = statistics.median(times)
    tokens_per_s = batch_size * seq_len / step_s
    peak = hardware.peak_memory_mb(device) if rss_before is None else _cpu_peak_rise(rss_before)
    grads = _bytes(p.grad for p in model.parameters() if p.grad is not None)
    state = _bytes(t for s in _optimizer_states(optimizer) for t in s.values() if torch.is_tensor(t))
    return ProfileRow(batch_size, seq_len, model.n_params(), weights / MB, grads / MB, state / MB, saved / MB, peak,
                      step_s, tokens_per_s, model.flops_per_token() * tokens_per_s / peak_flops, str(device), means)


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_cpu_peak() -> float:
    """Return freed memory to the OS (so an earlier, larger batch's pages do not hide this one's) and
    reset this process's peak RSS to its current RSS (Linux: /proc/self/clear_refs, "5"), so the
    steps' own peak is read; the current RSS in MB (where the peak can't be reset: the peak so far,
    and then only memory above it counts)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        current = _status_mb("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return hardware.peak_memory_mb(torch.device("cpu"))


def _cpu_peak_rise(before: float) -> float:
    peak = _status_mb("VmHWM")
    return max((peak if peak is not None else hardware.peak_memory_mb(torch.device("cpu"))) - before, 0.0)


def _optimizer_states(optimizer) -> list[dict]:
    return [state for inner in optimizer.optimizers.values() for state in inner.state.values()]


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    import contextlib

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class _SavedBytes:
    """Counts the bytes autograd saves for backward while active, each storage once (a weight
    saved by several ops, or a view of a saved tensor, is counted once)."""

    def __init__(self):
        self.total, self.seen = 0, set()

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if isinstance(tensor, torch.nn.Parameter) or tensor.requires_grad and tensor.is_leaf:
            return tensor  # a weight: counted as weights, not activations
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self.seen:
            self.seen.add(key)
            self.total += storage.nbytes()
        return tensor
