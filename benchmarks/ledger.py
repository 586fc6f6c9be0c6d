"""The ledger's numbers from DESIGN.md, measured on this machine: run by hand, prints a report.

1. insert    N runs (default 10,000) with P metric points each (default 100) through the Ledger write
             API, the way training writes: one record_run, one log_metrics transaction per logged
             step, one finish_run. Rows are full size (a real config, provenance and result).
2. listing   Ledger.runs over those runs: all, filtered by a config value (model.d_model=384), by a
             stored status (finished) and by a live status (interrupted); then ablab.analysis.runs.list_runs
             (what `ablab runs` calls) and the `ablab runs` command itself less the start-up time of
             `ablab --help`, where they exist. Target: under 0.5 s each.
3. overhead  The same training (same config, seed and steps) timed as a real Training.run with the
             run record, ledger, metric rows and checkpoints at the config's default intervals, and
             as a bare loop of the same train_step calls plus the same final evaluation. Rounds
             alternate the order so machine noise hits both alike; the ratio of the medians is the
             tracking overhead. Target: under 2%. Run set-up (provenance, directory, first ledger
             row) is timed separately: it is paid once per run, not per step.

Run: .venv/bin/python benchmarks/ledger.py [--runs 10000] [--points 100] [--steps 550] [--rounds 3]
     [--skip-insert] [--skip-overhead] [overrides for the overhead config, e.g. data.batch_size=8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablab import config as config_mod
from ablab.store.ledger import Ledger, Run
from ablab.store.provenance import collect
from ablab.store.record import content_key, now_iso

D_MODELS = (128, 256, 384, 512)
TARGET_LIST_S, TARGET_OVERHEAD = 0.5, 0.02
SMALL_STEPS = ("model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.d_ff=128", "data.seq_len=64",
               "data.batch_size=16", "eval.tokens=4096")  # tests/conftest.py's TINY at default intervals


# -- 1. insert --------------------------------------------------------------------------------------
def fake_run(i: int, provenance: dict) -> Run:
    d_model = D_MODELS[i % len(D_MODELS)]
    cfg = config_mod.load("quickstart", [f"model.d_model={d_model}", f"seed={i}"])
    chash = config_mod.config_hash(cfg)
    result = {"run_id": f"{i:08x}", "status": "running", "created_at": now_iso(), "config_hash": chash, "seed": i,
              "params": 1_100_000, "flops_per_token": 6.6e6, "data_fingerprint": "f" * 64, "steps": 0}
    return Run(id=f"{i:08x}", name=f"bench-{i}", status="running", created_at=result["created_at"], finished_at=None,
               config_hash=chash, seed=i, data_fingerprint="f" * 64, code_version=provenance["code_version"],
               content_key=content_key(chash, i, "f" * 64, provenance["code_version"]),
               config=config_mod.to_dict(cfg), provenance=provenance, result=result)


def metric_row(step: int) -> dict:
    row = {"step": step * 10, "tokens": step * 40960, "elapsed": step * 2.3, "train_loss": 4.0 / (1 + step),
           "grad_norm": 0.5, "lr_muon": 0.02, "lr_adamw": 0.006, "tokens_per_s": 17734.0, "mfu": 0.348,
           "peak_memory_mb": 790.0}
    return row | ({"val_loss": 4.1 / (1 + step), "val_ppl": 5.0, "val_bpb": 2.2} if step % 11 == 0 else {})


def insert(lab: Path, n_runs: int, points: int) -> float:
    provenance, _ = collect(lab)
    started = time.perf_counter()
    with Ledger(lab) as ledger:
        for i in range(n_runs):
            run = fake_run(i, provenance)
            ledger.record_run(run)
            for step in range(points):
                ledger.log_metrics(run.id, [metric_row(step)])
            status = "interrupted" if i % 20 == 7 else "diverged" if i % 20 == 13 else "finished"
            final = {"val_loss": 1.5 + (i % 97) / 100, "train_loss": 1.4, "tokens_per_s": 17734.0}
            ledger.finish_run(run.id, status, run.result | {"status": status, "steps": points * 10, "final": final,
                                                            "best": {"val_loss": 1.5, "step": 500}}, now_iso())
            if (i + 1) % max(1, n_runs // 10) == 0:
                print(f"  {i + 1:>6} runs, {time.perf_counter() - started:6.1f} s", flush=True)
    return time.perf_counter() - started


# -- 2. listing -------------------------------------------------------------------------------------
def best_of(fn, repeat: int = 5) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = len(fn())
        times.append(time.perf_counter() - started)
    return min(times), count


def listing(lab: Path) -> list[tuple[str, float, int]]:
    def query(method: str, **kw):
        def fn():
            with Ledger(lab) as ledger:  # a fresh connection each time, as a command has
                return getattr(ledger, method)(**kw)
        return fn

    filters = ({}, {"where": {"model.d_model": 384}}, {"status": "finished"}, {"status": "interrupted"},
               {"status": "finished", "where": {"model.d_model": 384}})
    # runs() decodes whole rows (config, provenance, result); summaries(), where it exists, is what
    # `ablab runs` lists from.
    methods = [m for m in ("runs", "summaries") if hasattr(Ledger, m)]
    found = [(f"Ledger.{m}({', '.join(f'{k}={v!r}' for k, v in kw.items())})", *best_of(query(m, **kw)))
             for m in methods for kw in filters]
    try:
        from ablab.analysis.runs import list_runs, render
    except ImportError:
        return found + [("ablab.analysis.runs.list_runs (not written yet)", float("nan"), 0)]
    found.append(("list_runs() rendered as json", *best_of(lambda: json.loads(render(list_runs(lab), "json")))))
    found.append(("list_runs(where=model.d_model=384)", *best_of(lambda: list_runs(lab, where=["model.d_model=384"]).rows)))
    return found + cli_listing(lab)


def cli_listing(lab: Path) -> list[tuple[str, float, int]]:
    """`ablab runs --format json` as a user runs it, less the interpreter and import start-up."""
    ablab = [sys.executable, "-m", "ablab"]
    if subprocess.run([*ablab, "runs", "--help"], capture_output=True).returncode != 0:
        return [("`ablab runs` (no such command yet)", float("nan"), 0)]

    def timed(args: list[str]) -> float:
        started = time.perf_counter()
        out = subprocess.run([*ablab, *args], cwd=lab, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return time.perf_counter() - started

    startup = min(timed(["--help"]) for _ in range(3))
    rows = []
    for args in (["runs", "--format", "json"], ["runs", "--format", "json", "--where", "model.d_model=384"]):
        total = min(timed(args) for _ in range(3))
        rows.append((f"`ablab {' '.join(args)}` less start-up ({startup:.2f} s)", total - startup, -1))
    return rows


# -- 3. tracking overhead ---------------------------------------------------------------------------
TRACKING_CALLS = ("log_metrics", "log_line", "log_event", "heartbeat", "update_result", "write_result", "result",
                  "metrics", "events")  # RunRecord methods: the run directory and the ledger


def training_times(cfg, lab: Path) -> tuple[float, float, float]:
    """(set-up seconds, run seconds, seconds inside tracking calls) of one real tracked run."""
    from ablab.store.record import RunRecord
    from ablab.train.launch import identify
    from ablab.train.loop import Training

    training = Training(cfg, lab=lab)
    started = time.perf_counter()
    record = RunRecord.create(lab, cfg, identify(training.data))
    training.attach(record, resume=False)
    setup = time.perf_counter() - started
    clock = {"seconds": 0.0, "depth": 0}
    for owner, names in ((record, TRACKING_CALLS), (training, ("save_checkpoint", "_train_row"))):
        for name in names:
            setattr(owner, name, _timed(getattr(owner, name), clock))
    started = time.perf_counter()
    outcome = training.run()
    assert outcome.status == "finished", outcome.status
    return setup, time.perf_counter() - started, clock["seconds"]


def _timed(fn, clock: dict):
    """`fn`, adding its wall time to clock["seconds"]; calls nested in a timed call count once."""
    def wrapper(*args, **kwargs):
        clock["depth"] += 1
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock["depth"] -= 1
            if clock["depth"] == 0:
                clock["seconds"] += time.perf_counter() - started
    return wrapper


def bare_time(cfg) -> float:
    """The same steps with nothing recorded: train_step, the loop counters its schedule reads, and
    the evaluations the tracked run does (at step 0 when it evaluates more than once, when due, and at the end)."""
    from ablab.train.loop import Training

    training = Training(cfg)
    started = time.perf_counter()
    loop = training.loop
    if cfg.eval.every or cfg.eval.points > 1:
        training.evaluate()
    while training.stop_reason() is None:
        training.train_step()
        loop.step += 1
        loop.tokens_seen += cfg.tokens_per_step
        if training.eval_due() and training.stop_reason() is None:
            training.evaluate()
    training.evaluate()
    return time.perf_counter() - started


def overhead(steps: int, rounds: int, overrides: list[str]) -> None:
    cfg = config_mod.load("quickstart", [f"train.max_steps={steps}", *overrides])
    t = cfg.train
    print(f"\n3. tracking overhead: quickstart {' '.join(overrides)}, {steps} steps, log_every {t.log_every}, "
          f"checkpoint_every {t.checkpoint_every}, eval.every {cfg.eval.every} "
          f"(points {cfg.eval.points}), {rounds} rounds")
    tracked, bare, setups, inside = [], [], [], []
    bare_time(config_mod.load("quickstart", ["train.max_steps=20", *overrides]))  # warm-up: allocator, caches
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for arm in (("tracked", "bare") if r % 2 == 0 else ("bare", "tracked")):
                if arm == "tracked":
                    setup, seconds, tracking = training_times(cfg, Path(tmp))
                    tracked.append(seconds)
                    setups.append(setup)
                    inside.append(tracking / (seconds - tracking))
                else:
                    bare.append(bare_time(cfg))
            print(f"  round {r + 1}: tracked {tracked[-1]:.2f} s (of which tracking calls {100 * inside[-1]:.2f}%), "
                  f"bare {bare[-1]:.2f} s: {100 * (tracked[-1] / bare[-1] - 1):+.2f}%", flush=True)
    ratio = statistics.median(tracked) / statistics.median(bare) - 1
    calls, setup = statistics.median(inside), statistics.median(setups)
    verdict = lambda x: "OK" if x < TARGET_OVERHEAD else "OVER TARGET"  # noqa: E731
    print(f"  end to end: median tracked {statistics.median(tracked):.2f} s vs bare {statistics.median(bare):.2f} s "
          f"= {100 * ratio:+.2f}% (machine noise included) {verdict(ratio)}")
    print(f"  time inside tracking calls (ledger, files, metric rows, checkpoints) / the rest of the run: "
          f"{100 * calls:.2f}% (target < {100 * TARGET_OVERHEAD:.0f}%) {verdict(calls)}")
    print(f"  once per run: set-up (provenance, run directory, ledger row) {setup:.3f} s = "
          f"{100 * setup / statistics.median(bare):.2f}% of this run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--steps", type=int, default=550, help="training steps per overhead arm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-insert", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("overrides", nargs="*", default=list(SMALL_STEPS),
                        help="config overrides for the overhead measurement (default: the test suite's tiny "
                             "model, whose short steps make tracking weigh the most)")
    args = parser.parse_args()
    print(f"ablab ledger benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if not args.skip_insert:
        with tempfile.TemporaryDirectory() as tmp:
            lab = Path(tmp)
            print(f"\n1. insert {args.runs:,} runs x {args.points} metric points, one transaction per write")
            seconds = insert(lab, args.runs, args.points)
            writes = args.runs * (args.points + 2)
            size = sum(p.stat().st_size for p in (lab / ".ablab").glob("ledger.sqlite*"))
            print(f"  {seconds:.1f} s: {writes / seconds:,.0f} writes/s, {1e6 * seconds / writes:.0f} us per write; "
                  f"ledger {size / 2**20:.0f} MB")
            print(f"\n2. listing {args.runs:,} runs (best of 5; target < {TARGET_LIST_S} s)")
            for label, seconds, count in listing(lab):
                verdict = "OK" if seconds < TARGET_LIST_S else "SLOW" if seconds == seconds else ""
                rows = f"{count:>6} runs" if count >= 0 else "          "
                print(f"  {label:<72} {seconds:7.3f} s {rows} {verdict}")
    if not args.skip_overhead:
        overhead(args.steps, args.rounds, args.overrides)


if __name__ == "__main__":
    main()
