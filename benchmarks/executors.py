"""Wall-clock of one study of 8 short runs (4 arms x 2 seeds) on each executor, on this machine.

Each executor trains the same study in a fresh lab, start-up included (worker processes, a local Ray
instance), with what it does by default on this machine:
- inline: one run after another in this process, with torch's default threads (every core);
- local:  one worker process per core, one thread each;
- ray:    a local Ray instance with one CPU per run, so as many runs at once as cores.
It prints the wall-clock, the speed-up over inline measured in the same invocation, and checks that
every executor reached the same final losses (same seeds, so the same computation). Where an
optional engine is missing it says so and goes on.

Run: .venv/bin/python benchmarks/executors.py [--steps 150] [--executors inline,local,ray]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

from ablab import config as config_mod
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study.runner import make_plan, run_study

MODEL = ("model.d_model=96", "model.n_layers=3", "model.n_heads=4", "model.d_ff=256", "data.seq_len=128",
         "data.batch_size=16", "eval.tokens=8192", "eval.every=50", "train.log_every=10")
STUDY = """[meta]
name = "bench"
category = "architecture"
date = "2026-11-21"
[objective]
question = "How fast do the executors train 8 short runs?"
[hypothesis]
mechanism = "parallel workers use the cores a single small run leaves idle"
prediction = "local and ray finish sooner than inline"
falsification = "they do not"
metric = "val_loss"
direction = "decrease"
min_effect = 0.01
[design]
baseline = "bench@2026-11-21"
axis = "steps"
budget = {steps}
seeds = [0, 1]
variables = {{ "model.d_ff" = [192, 320, 384] }}
"""
ENGINE_PACKAGE = {"ray": "ray"}


def make_lab(root: Path, steps: int) -> Path:
    cfg = config_mod.load(None, [*MODEL, f"train.max_steps={steps}"])
    baselines.create(root, baselines.Baseline("bench", "2026-11-21", cfg, [0, 1]))
    (root / "studies").mkdir(exist_ok=True)
    (root / "studies" / "bench.toml").write_text(STUDY.format(steps=steps))
    return root


def timed_study(executor: str, steps: int) -> tuple[float, dict]:
    """(seconds from dispatch to the last result, {cell: final val loss}) in a fresh lab."""
    with tempfile.TemporaryDirectory() as folder:
        lab = make_lab(Path(folder), steps)
        plan = make_plan(lab, lab / "studies" / "bench.toml", probe=False)
        started = time.perf_counter()
        state = run_study(lab, plan, say=lambda line: None, executor=executor)
        seconds = time.perf_counter() - started
        if state != "finished":
            raise SystemExit(f"{executor}: the study ended {state}")
        with Ledger(lab) as ledger:
            losses = {cell: ledger.run(run).final["val_loss"] for cell, run in ledger.study_runs("bench").items()}
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--executors", default="inline,local,ray")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"8 runs of {args.steps} steps ({' '.join(MODEL)}) on {cores} cores")
    times, losses = {}, {}
    for name in args.executors.split(","):
        if name in ENGINE_PACKAGE and importlib.util.find_spec(ENGINE_PACKAGE[name]) is None:
            print(f"{name:>7}: skipped, install the extra with pip install 'ablab[{name}]'")
            continue
        times[name], losses[name] = timed_study(name, args.steps)
    reference = times.get("inline")
    print(f"{'executor':>8} {'wall s':>8} {'runs/min':>9} {'vs inline':>10}")
    for name, seconds in times.items():
        ratio = f"{reference / seconds:.2f}x" if reference else "-"
        print(f"{name:>8} {seconds:8.1f} {8 * 60 / seconds:9.1f} {ratio:>10}")
    first = next(iter(losses.values()))
    worst = max(abs(run[cell] - first[cell]) for run in losses.values() for cell in first)
    print(f"largest difference in a final val loss between executors: {worst:.2e} (same seeds, same runs)")


if __name__ == "__main__":
    main()
