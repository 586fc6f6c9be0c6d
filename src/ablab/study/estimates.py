"""What a plan says an arm costs: parameters, FLOPs per token, peak memory and seconds per step.

Seconds per step are measured, never assumed. Where the lab holds finished runs of the arm's shape
trained on this host (ablab.config.shape_hash: the same model, batch, optimizer kind, device, precision
and threads; learning rates, schedule, seed and budget may differ), their training seconds over their
steps are the measure. Otherwise a probe trains the arm's config without a record: PROBE_WARMUP steps
that pay for lazy set-up, then real steps timed for PROBE_SECONDS. Either way a Pace is a range
(p10..p90 of the measures), since on a shared machine the same step can take several times as long.
A probe is remembered in the lab (PROBES, per host and shape) for PROBE_KEEP_SECONDS, so that the
`study run` after a `study plan` shows the plan's own measure instead of probing again.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ablab import config as config_mod
from ablab.config import Config
from ablab.data.cache import write_atomic
from ablab.data.tokens import PreparedData
from ablab.model.gpt import GPT
from ablab.store.ledger import Ledger
from ablab.train import hardware
from ablab.train.loop import Training

PROBE_WARMUP = 2  # untimed steps first: the allocator and lazy initialisation make them slow
PROBE_SECONDS = 2.0  # time real steps until this much has passed (the median of 3 steps varied 37x)
PROBE_STEPS = (5, 200)  # the fewest and the most steps a probe times
PROBES = Path(".ablab") / "probes.json"  # in the lab: "host shape" -> a probe's Pace and when it ran
PROBE_KEEP_SECONDS = 6 * 3600  # a probe older than this is measured again (the machine's load changes)


@dataclass(frozen=True)
class Pace:
    """Seconds per optimizer step of one shape: p10, median and p90 of what was measured."""
    low: float
    mid: float
    high: float
    source: str  # what measured it: "probe of 40 steps" or "3 finished runs"
    peak_memory_mb: float | None


def _pace(values: list[float], source: str, peak_memory_mb: float | None) -> Pace:
    ordered = sorted(values)
    cut = len(ordered) // 10  # p10..p90; min..max below ten measures
    return Pace(ordered[cut], statistics.median(ordered), ordered[-1 - cut], source, peak_memory_mb)


def finished_paces(ledger: Ledger) -> dict[str, Pace]:
    """shape hash -> the pace of the lab's finished runs of that shape that trained on this host
    (one read of the ledger, for every arm of a plan)."""
    host, measured = socket.gethostname(), {}
    for run in ledger.runs(status="finished"):
        steps, seconds = run.result.get("steps"), run.result.get("train_seconds")
        if run.host == host and steps and seconds:
            per_step, memory = measured.setdefault(config_mod.shape_hash(run.config), ([], []))
            per_step.append(seconds / steps)
            if run.final.get("peak_memory_mb"):
                memory.append(run.final["peak_memory_mb"])
    return {shape: _pace(per_step, f"{len(per_step)} finished run{'s' * (len(per_step) > 1)}",
                         statistics.median(memory) if memory else None)
            for shape, (per_step, memory) in measured.items()}


def probe(cfg: Config, data: PreparedData, run_steps: int | None) -> Pace:
    """Time `cfg`'s real training steps on this machine, without a record: never more steps than the
    run itself will train (`run_steps`), but at least PROBE_STEPS[0]."""
    training = Training(cfg, data)
    hardware.reset_peak_memory(training.device)
    training.model.train()
    for _ in range(PROBE_WARMUP):
        training.train_step()
    fewest, most = PROBE_STEPS
    most = max(fewest, min(most, run_steps or most))
    times: list[float] = []
    while len(times) < fewest or (sum(times) < PROBE_SECONDS and len(times) < most):
        start = time.perf_counter()
        training.train_step()
        times.append(time.perf_counter() - start)
    return _pace(times, f"probe of {len(times)} steps", hardware.peak_memory_mb(training.device))


def remembered_probe(lab: Path, shape: str) -> Pace | None:
    """The pace a recent probe of `shape` measured on this host, or None (none, too old, unreadable)."""
    try:
        entry = json.loads((lab / PROBES).read_text(encoding="utf-8")).get(f"{socket.gethostname()} {shape}")
        age = time.time() - entry.pop("at")
        return Pace(**entry | {"source": f"{entry['source']}, {age / 60:.0f} min ago"}) \
            if 0 <= age < PROBE_KEEP_SECONDS else None
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def remember_probe(lab: Path, shape: str, pace: Pace) -> None:
    """Keep `pace` for the next plan of this shape on this host (written whole: a kill leaves the old file)."""
    path = lab / PROBES
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    known[f"{socket.gethostname()} {shape}"] = asdict(pace) | {"at": time.time()}
    write_atomic(path, json.dumps(known).encode())


def model_size(cfg: Config, vocab_size: int) -> tuple[int, int]:
    """(parameters, training FLOPs per token) of `cfg`'s model; tied embeddings count once."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = GPT(cfg.model, vocab_size, cfg.data.seq_len)
    return model.n_params(), model.flops_per_token()
