"""The largest micro-batch that fits a memory budget, found by measuring real training steps.

`largest_batch(cfg, vocab_size, budget_mb)` grows the micro-batch (1, 2, 4, ...) while one training
step (forward, backward, optimizer step) fits the budget, then bisects between the last size that
fitted and the first that did not. What "fits" means:
- on CUDA, torch.cuda.max_memory_allocated over the step is at most the budget, and an
  out-of-memory error is caught and counts as not fitting;
- on a CPU, the weights plus the rise of the process's resident set size during the step (freed
  memory is returned to the OS and the peak reset before each size: ablab.train.profile), and at
  least the step's counted tensors (weights, gradients, optimizer state, saved activations).
A size fits when that is at most the budget less MARGIN of it: on a CPU 25% (a fresh training
process allocates some memory once, thread pools and kernels' buffers, that a warm probe does
not see again: 7% to 20% more was measured between 80 and 330 MB), on CUDA 5% (the allocator's
fragmentation).
The answer is cached per (the config without its batch size, the device model) in the lab's
`.ablab/autobatch.json`, so a study's arms find it again without probing.

`resolve(cfg, vocab_size, lab, processes)` turns a config's "auto" into numbers when a run starts
(ablab.train.loop.Training): data.batch_size = "auto" takes the largest micro-batch per process
that fits, times the processes; train.grad_accum = "auto" then takes the fewest micro-batches of
at most that size that make train.global_batch_tokens exactly. The run's auto_batch.json keeps the
choice, so that a resumed run trains on with the same batches on any device. With the global batch
held the choice changes how a step is split, not what it computes (up to the order of the sums);
without it, the global batch is whatever fits, and a plan says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ablab import config as config_mod
from ablab.config import AUTO, Config
from ablab.data.cache import write_atomic
from ablab.errors import UserError
from ablab.train import hardware
from ablab.train.profile import ProfileRow, _measure

MAX_BATCH = 4096
MARGIN = {"cpu": 0.25, "cuda": 0.05}
CUDA_SHARE = 0.9  # train.memory_budget_mb = 0 on CUDA: this share of the device's free memory
BUDGET_STEP_MB = 256  # a default budget is rounded down to this, so that the cache finds it again
CHOICE_FILE = "auto_batch.json"  # in a run's directory: what its "auto" became


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

    usable = budget_mb * (1 - MARGIN.get(device.type, MARGIN["cpu"]))

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


def cached_batch(lab: Path, cfg: Config, vocab_size: int, budget_mb: float, limit: int = MAX_BATCH) -> BatchChoice:
    """largest_batch, remembered in the lab per (config without batch size, device model, budget, limit)."""
    device = hardware.pick_device(cfg.train.device)
    key = _key(cfg, vocab_size, budget_mb, device, limit)
    path = lab / ".ablab" / "autobatch.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), dict):
        entry = known[key]
        return BatchChoice(int(entry["batch_size"]), float(entry["measured_mb"]), budget_mb, str(entry["means"]), [])
    choice = largest_batch(cfg, vocab_size, budget_mb, limit)
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


def _key(cfg: Config, vocab_size: int, budget_mb: float, device: torch.device, limit: int = MAX_BATCH) -> str:
    shape = _probe_config(cfg)
    inputs = [config_mod.config_hash(shape), vocab_size, round(budget_mb, 3), _device_model(device)]
    inputs += [limit] if limit != MAX_BATCH else []  # (keys from before the limit was part of them stay valid)
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]


def _probe_config(cfg: Config) -> Config:
    """`cfg` as one process's probe sees it: one sequence per step, one micro-batch, a fixed budget
    (what is measured depends on none of these, so neither does the cache key)."""
    return config_mod.replace(cfg, {"data.batch_size": 1, "train.grad_accum": 1, "train.global_batch_tokens": 0,
                                    "train.max_steps": 1, "train.max_tokens": 0, "train.max_seconds": 0.0,
                                    "train.nproc": 1, "seed": 0, "name": ""})


def memory_budget(cfg: Config, processes: int = 1) -> tuple[float, str]:
    """One process's memory budget in MB, and where it came from, in words."""
    if cfg.train.memory_budget_mb:
        share = cfg.train.memory_budget_mb / (processes if _on_cpu(cfg) else 1)
        return share, f"train.memory_budget_mb={cfg.train.memory_budget_mb:,.0f}" + (
            f" shared by {processes} processes" if processes > 1 and _on_cpu(cfg) else "")
    device = hardware.pick_device(cfg.train.device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return _rounded(CUDA_SHARE * free / 2**20), f"{CUDA_SHARE:.0%} of the free memory of {_device_model(device)}"
    total = _ram_mb()
    fraction = cfg.train.memory_fraction
    return (_rounded(fraction * total / processes),
            f"train.memory_fraction={fraction:g} of {total:,.0f} MB of RAM"
            + (f" shared by {processes} processes" if processes > 1 else ""))


@dataclass(frozen=True)
class AutoChoice:
    """What a config's "auto" became for one run (written to its auto_batch.json)."""
    batch_size: int  # sequences per micro-batch, all processes together
    grad_accum: int
    largest: int | None  # the largest micro-batch per process that fitted (None: data.batch_size was given)
    budget_mb: float | None  # one process's budget
    budget_from: str
    measured_mb: float | None
    means: str
    device: str

    def sentence(self, cfg: Config) -> str:
        parts = []
        if cfg.data.batch_size == AUTO:
            parts.append(f"data.batch_size=auto chose {self.batch_size} sequences per micro-batch (the largest that "
                         f"fits per process: {self.largest}, {self.measured_mb:,.0f} MB of a {self.budget_mb:,.0f} MB "
                         f"budget, {self.budget_from}, on {self.device}; measured as {self.means})")
        if cfg.train.grad_accum == AUTO:
            parts.append(f"train.grad_accum=auto chose {self.grad_accum} micro-batches to hold "
                         f"train.global_batch_tokens={cfg.train.global_batch_tokens:,}")
        return "; ".join(parts)


def resolve(cfg: Config, vocab_size: int, lab: Path | None, processes: int = 1) -> tuple[Config, AutoChoice | None]:
    """`cfg` with its "auto" batch settings chosen (see the module's docstring); (cfg, None) when it has none."""
    if not cfg.auto_batch:
        return cfg, None
    d, t = cfg.data, cfg.train
    sequences = t.global_batch_tokens // d.seq_len if t.global_batch_tokens else None
    device = hardware.pick_device(cfg.train.device)
    largest = budget = measured = None
    budget_from, means = "", "given"
    if d.batch_size == AUTO:
        limit = min(MAX_BATCH, sequences // processes) if sequences and t.grad_accum == AUTO else MAX_BATCH
        budget, budget_from = memory_budget(cfg, processes)
        probe = _probe_config(cfg)
        found = cached_batch(lab, probe, vocab_size, budget, limit) if lab else largest_batch(probe, vocab_size,
                                                                                             budget, limit)
        largest, measured, means = found.batch_size, found.measured_mb, found.means
        most = largest * processes
    else:
        most = d.batch_size
    if t.grad_accum == AUTO:
        accum = next(n for n in range(1, sequences + 1)
                     if sequences % n == 0 and (sequences // n) % processes == 0 and sequences // n <= most)
        micro = sequences // accum
    else:
        micro, accum = most, t.grad_accum
    choice = AutoChoice(micro, accum, largest, budget, budget_from, measured, means, _device_model(device))
    return config_mod.replace(cfg, {"data.batch_size": micro, "train.grad_accum": accum}), choice


def save_choice(run_dir: Path, choice: AutoChoice) -> None:
    write_atomic(run_dir / CHOICE_FILE, json.dumps(choice.__dict__, indent=1, sort_keys=True).encode())


def recorded(run_dir: Path, cfg: Config) -> tuple[Config, AutoChoice | None]:
    """`cfg` with the choice its run made when it started (a resumed run keeps its batches); (cfg, None)
    when the run has no auto_batch.json."""
    try:
        choice = AutoChoice(**json.loads((run_dir / CHOICE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return cfg, None
    return config_mod.replace(cfg, {"data.batch_size": choice.batch_size, "train.grad_accum": choice.grad_accum}), choice


def _on_cpu(cfg: Config) -> bool:
    return hardware.pick_device(cfg.train.device).type == "cpu"


def _rounded(mb: float) -> float:
    return float(max(BUDGET_STEP_MB, int(mb // BUDGET_STEP_MB) * BUDGET_STEP_MB))


def _ram_mb() -> float:
    """Total RAM, or the cgroup's memory limit when it is lower (a container's share)."""
    import os

    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit) / 2**20) if limit.isdigit() else total
