"""The cost of train.diagnostics = true at the default evaluation intervals, on this machine.

The same config (the quickstart by default: 550 steps, eval.points = 10, so ten diagnosed steps) is
trained as a real Training.run, once with every diagnostic on and once off, in interleaved rounds
whose order alternates, so that machine noise hits both alike. Reported:
  end to end   median wall time of the run (evaluations included) on / off - 1
  inside       time spent in the diagnostic calls themselves (reading gradients, the weight copy and
               update ratios, the extra forward pass) / the rest of the run with diagnostics on: the
               same cost without the noise of two separate runs on a shared machine
Target: under 3%.

Run: .venv/bin/python benchmarks/diagnostics.py [--rounds 3] [--config quickstart] [overrides ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ablab import config as config_mod
from ablab.config_checks import DIAGNOSTICS
from ablab.store.record import RunRecord
from ablab.train.launch import identify
from ablab.train.loop import Training

TARGET = 0.03
DIAGNOSTIC_CALLS = ("read_gradients", "read_update", "row")


def run_seconds(cfg: config_mod.Config, lab: Path) -> tuple[float, float]:
    """(wall seconds of one real run, seconds inside the diagnostic calls)."""
    training = Training(cfg)
    record = RunRecord.create(lab, cfg, identify(training.data))
    training.attach(record, resume=False)
    inside = {"seconds": 0.0}
    if training.diagnostics is not None:
        for name in DIAGNOSTIC_CALLS:
            setattr(training.diagnostics, name, _timed(getattr(training.diagnostics, name), inside))
    started = time.perf_counter()
    outcome = training.run()
    assert outcome.status == "finished", outcome.status
    return time.perf_counter() - started, inside["seconds"]


def _timed(fn, clock: dict):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock["seconds"] += time.perf_counter() - started
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("overrides", nargs="*", help="config overrides for both arms, e.g. train.max_steps=200")
    args = parser.parse_args()
    base = config_mod.load(args.config, args.overrides)
    on = config_mod.load(args.config, [*args.overrides, "train.diagnostics=true"])
    evaluations = config_mod.eval_points(base, config_mod.budget_steps(base) or 0)
    print(f"ablab diagnostics overhead on {os.cpu_count()} cores, torch {torch.__version__}, "
          f"Python {sys.version.split()[0]}")
    print(f"config {args.config} {' '.join(args.overrides)}: {base.train.max_steps} steps, eval.every "
          f"{base.eval.every} (points {base.eval.points}: {evaluations} evaluations), {args.rounds} rounds, "
          f"diagnostics {', '.join(DIAGNOSTICS)}")
    times: dict[str, list[float]] = {"on": [], "off": []}
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        run_seconds(config_mod.load(args.config, [*args.overrides, "train.max_steps=20", "train.diagnostics=true"]),
                    Path(tmp))  # warm-up: data, allocator, caches
        for r in range(args.rounds):
            for arm in (("on", "off") if r % 2 == 0 else ("off", "on")):
                seconds, inside = run_seconds(on if arm == "on" else base, Path(tmp))
                times[arm].append(seconds)
                if arm == "on":
                    shares.append(inside / (seconds - inside))
            print(f"  round {r + 1}: on {times['on'][-1]:.2f} s (of which diagnostics {100 * shares[-1]:.2f}%), "
                  f"off {times['off'][-1]:.2f} s: {100 * (times['on'][-1] / times['off'][-1] - 1):+.2f}%", flush=True)
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    inside = statistics.median(shares)
    verdict = lambda x: "OK" if x < TARGET else "OVER TARGET"  # noqa: E731
    print(f"end to end: median on {statistics.median(times['on']):.2f} s / off {statistics.median(times['off']):.2f} s "
          f"= {ratio:.4f} ({100 * (ratio - 1):+.2f}%, machine noise included) {verdict(ratio - 1)}")
    print(f"inside the diagnostic calls / the rest of the run: {100 * inside:.2f}% "
          f"(target < {100 * TARGET:.0f}%) {verdict(inside)}")


if __name__ == "__main__":
    main()
