"""The largest micro-batch that fits a memory budget, found by measuring real training steps.

`largest_batch(cfg, vocab_size, budget_mb)` grows the micro-batch (1, 2, 4, ...) while one training
step (forward, backward, optimizer step) fits the budget, then bisects between the last size that
fitted and the first that did not. What "fits" means:
- on CUDA, torch.cuda.max_memory_allocated over the step is at most the budget, and an
  out-of-memory error is caught and counts as not fitting;
- on a CPU, the weights plus the rise of the process's resident set size during the step (freed
  memory is returned to the OS and the peak reset before each size: ablab.train.profile), and at
  least the step's counted tensors (weights, gradients, optimizer state, saved activations).
A size fits when that is at most the budget less MARGIN of it: on a CPU 15% (a fresh training
process allocates some memory once, thread pools and kernels' buffers, that a warm probe does
not see again: 10% more was measured at 100 MB), on CUDA 5% (the allocator's fragmentation).
The answer is cached per (the config without its batch size, the device model) in the lab's
`.ablab/autobatch.json`, so a study's arms and a resumed run find it again without probing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ablab import config as config_mod
from ablab.config import Config
from ablab.data.cache import write_atomic
from ablab.errors import UserError
from ablab.train import hardware
from ablab.train.profile import ProfileRow, _measure

MAX_BATCH = 4096
MARGIN = {"cpu": 0.15, "cuda": 0.05}


@dataclass(frozen=True)
class BatchChoice:
    batch_size: int
    measured_mb: float  # what the chosen size used, as `means` says
    budget_mb: float
    means: str
    probed: list[tuple[int, float | None]]  # (size, MB or None for out of memory), in probing order


def largest_batch(cfg: Config, vocab_size: int, budget_mb: float, limit: int = MAX_BATCH) -> BatchChoice:
    """The largest micro-batch (at most `limit`) whose training step fits `budget_mb`; UserError when
    not even one sequence fits."""
    device = hardware.pick_device(cfg.train.device)
    dtype = hardware.autocast_dtype(device, cfg.train.precision)
    probed: list[tuple[int, float | None]] = []

    def used(batch: int) -> float | None:
        row = _step(cfg, vocab_size, batch, device, dtype)
        mb = None if row.activations_mb is None else _used_mb(row, device)
        probed.append((batch, mb))
        return mb

    usable = budget_mb * (1 - MARGIN.get(device.type, 0.15))

    def fits(batch: int) -> bool:
        mb = used(batch)
        return mb is not None and mb <= usable

    if not fits(1):
        need = probed[0][1]
        raise UserError(
            f"Not even one sequence of data.seq_len={cfg.data.seq_len} fits train.memory_budget_mb={budget_mb:,.0f} "
            f"({'out of memory' if need is None else f'one needs {need:,.0f} MB'}); raise train.memory_budget_mb, "
            "or shrink the model or data.seq_len.")
    good, bad = 1, None
    while bad is None and good < limit:
        trial = min(good * 2, limit)
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    measured = next(mb for size, mb in reversed(probed) if size == good)
    means = ("torch.cuda.max_memory_allocated of one step" if device.type == "cuda" else
             "weights + the rise of RSS during one step (at least the step's counted tensors)")
    return BatchChoice(good, measured, budget_mb, means, probed)


def cached_batch(lab: Path, cfg: Config, vocab_size: int, budget_mb: float) -> BatchChoice:
    """largest_batch, remembered in the lab per (config without batch size, device model, budget)."""
    device = hardware.pick_device(cfg.train.device)
    key = _key(cfg, vocab_size, budget_mb, device)
    path = lab / ".ablab" / "autobatch.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), dict):
        entry = known[key]
        return BatchChoice(int(entry["batch_size"]), float(entry["measured_mb"]), budget_mb, str(entry["means"]), [])
    choice = largest_batch(cfg, vocab_size, budget_mb)
    known = known if isinstance(known, dict) else {}
    known[key] = {"batch_size": choice.batch_size, "measured_mb": choice.measured_mb, "means": choice.means,
                  "device": _device_model(device)}
    write_atomic(path, json.dumps(known, indent=1, sort_keys=True).encode())
    return choice


def _step(cfg: Config, vocab_size: int, batch: int, device: torch.device, dtype) -> ProfileRow:
    hardware.reset_peak_memory(device)
    return _measure(cfg, vocab_size, batch, 1, device, dtype, peak_flops=1.0)


def _used_mb(row: ProfileRow, device: torch.device) -> float:
    if device.type == "cuda":
        return float(row.peak_mb or 0.0)
    parts = row.weights_mb + row.grads_mb + row.optimizer_mb + (row.activations_mb or 0.0)
    return max(row.weights_mb + float(row.peak_mb or 0.0), parts)


def _device_model(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"


def _key(cfg: Config, vocab_size: int, budget_mb: float, device: torch.device) -> str:
    shape = config_mod.replace(cfg, {"data.batch_size": 1, "seed": 0, "name": ""})
    inputs = [config_mod.config_hash(shape), vocab_size, round(budget_mb, 3), _device_model(device)]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]
