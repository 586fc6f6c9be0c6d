"""The report's number from DESIGN.md, measured on this machine: run by hand, prints a report.

For each size N (default 1,000 and 10,000) a temporary lab gets N synthetic finished runs written
through the Ledger write API the way training writes them (record_run, log_metrics with a few
points, finish_run), full-size rows (a real config and provenance), a tag on every tenth run, a
benchmark score for every fifth, a dated baseline with its noise floor, a promoted child, and a
2-arm x 3-seed study over six of the runs. Then it times (best of 3) ablab.report.html.build_report (with the
study's loss-curve plot) and write_research_report. Target: the HTML report for 1,000 runs under 30 s.

Run: .venv/bin/python benchmarks/report.py [--runs 1000 10000] [--points 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ablab import config as config_mod
from ablab.report.html import build_report, write_research_report
from ablab.store.ledger import Ledger, Run
from ablab.store.provenance import collect
from ablab.store.record import content_key, now_iso

D_MODELS = (128, 256, 384, 512)
TARGET_S = 30.0  # DESIGN.md: report for 1,000 runs under 30 s
STUDY_SEEDS = (0, 1, 2)
ARMS = {"baseline": {}, "optim.lr=0.04": {"optim.lr": 0.04}}


def metric_rows(points: int, scale: float) -> list[dict]:
    rows = []
    for p in range(1, points + 1):
        rows.append({"step": p * 100, "tokens": p * 409_600, "elapsed": p * 23.0, "train_loss": scale * 4.0 / p ** 0.3,
                     "grad_norm": 0.5, "tokens_per_s": 17_734.0, "val_loss": scale * 4.1 / p ** 0.3,
                     "val_ppl": 5.0, "val_bpb": 2.2, "mfu": 0.348, "peak_memory_mb": 790.0})
    return rows


def insert_runs(ledger: Ledger, n_runs: int, points: int) -> list[str]:
    """N finished runs (one in 20 diverged), each written as training writes it."""
    provenance, _ = collect(Path.cwd())
    configs = [config_mod.load("quickstart", [f"model.d_model={d}"]) for d in D_MODELS]
    ids = []
    for i in range(n_runs):
        cfg = configs[i % len(configs)]
        config, chash, run_id = config_mod.to_dict(cfg) | {"seed": i}, config_mod.config_hash(cfg), f"{i:08x}"
        start = {"run_id": run_id, "status": "running", "created_at": now_iso(), "config_hash": chash, "seed": i,
                 "params": 1_100_000 * (1 + i % len(configs)), "steps": 0}
        ledger.record_run(Run(id=run_id, name=f"bench-{i % 50}", status="running", created_at=start["created_at"],
                              finished_at=None, config_hash=chash, seed=i, data_fingerprint="f" * 64,
                              code_version=provenance["code_version"],
                              content_key=content_key(chash, i, "f" * 64, provenance["code_version"]),
                              config=config, provenance=provenance, result=start))
        rows = metric_rows(points, 1 + (i % 97) / 200)
        ledger.log_metrics(run_id, rows)
        status = "diverged" if i % 20 == 13 else "finished"
        final = {k: rows[-1][k] for k in ("val_loss", "train_loss", "val_ppl", "val_bpb", "tokens_per_s", "mfu")}
        ledger.finish_run(run_id, status, start | {"status": status, "steps": points * 100, "final": final,
                                                   "tokens_seen": points * 409_600, "train_seconds": points * 23.0,
                                                   "best": {"val_loss": final["val_loss"], "step": points * 100}},
                          now_iso())
        if i % 10 == 0:
            ledger.add_tag(run_id, "sweep")
        ids.append(run_id)
    return ids


def insert_lab_records(ledger: Ledger, ids: list[str]) -> None:
    """A baseline, its promoted child, a study over six of the runs, and benchmark scores."""
    config = config_mod.to_dict(config_mod.load("quickstart"))
    ledger.save_baseline("main", "2026-11-01", config, list(STUDY_SEEDS), {"parent": None, "justified_by": [],
                                                                         "noise_floor": {"val_loss": 0.004}})
    ledger.save_baseline("main", "2026-11-21", config, list(STUDY_SEEDS), {"parent": "main@2026-11-01",
                                                                         "justified_by": ["lr"]})
    ledger.set_current_baseline("main", "2026-11-21")
    ledger.save_study("lr", "main@2026-11-01", {
        "name": "lr", "category": "optimizer", "date": "2026-11-21", "question": "Does lr 0.04 beat 0.02?",
        "mechanism": "bigger steps", "prediction": "val_loss falls by 0.01", "falsification": "it does not",
        "metric": "val_loss", "direction": "decrease", "min_effect": 0.01, "read_at": "final",
        "variables": {"optim.lr": [0.04]}, "axis": "tokens", "budget": 2_048_000, "seeds": list(STUDY_SEEDS),
        "arms": ARMS, "frozen": {}})
    study_ids = iter([i for i in ids if int(i, 16) % 20 != 13])  # finished runs only
    for seed in STUDY_SEEDS:
        for arm in ARMS:
            ledger.link_study_run("lr", arm, seed, next(study_ids))
    ledger.update_study_data("lr", {"conclusion": {"decision": "keep 0.02"}})
    ledger.record_evals([{"run_id": run_id, "step": 500, "task": task, "task_version": 1, "num_fewshot": 0,
                          "example_limit": 0, "seed": 0, "created_at": now_iso(),
                          "data": {"n": 500, "skipped": 0, "metrics": {"acc": 0.3, "acc_stderr": 0.02,
                                                                       "centered": 0.05}}}
                         for run_id in ids[::5] for task in ("choice", "lambada")])


def best_of(fn, repeat: int = 3) -> tuple[float, Path]:
    """The fastest of `repeat` calls: the machine's other work only ever adds time."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        path = fn()
        times.append(time.perf_counter() - started)
    return min(times), path


def measure(n_runs: int, points: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Path(tmp)
        started = time.perf_counter()
        with Ledger(lab) as ledger:
            insert_lab_records(ledger, insert_runs(ledger, n_runs, points))
        print(f"\n{n_runs:,} runs x {points} metric points inserted in {time.perf_counter() - started:.1f} s")
        for label, fn in (("build_report (HTML, with the study's plot)", lambda: build_report(lab)),
                          ("build_report, plots=False", lambda: build_report(lab, plots=False)),
                          ("write_research_report (markdown + figure)", lambda: write_research_report(lab))):
            seconds, path = best_of(fn)
            verdict = ""
            if label.startswith("build_report (HTML"):
                verdict = ("OK" if seconds < TARGET_S else "OVER TARGET") if n_runs <= 1000 else "(no target)"
            print(f"  {label:<46} {seconds:7.2f} s  {path.stat().st_size / 2**20:6.2f} MB  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--points", type=int, default=5, help="metric rows per run")
    args = parser.parse_args()
    print(f"ablab report benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
          f"target: HTML report for 1,000 runs under {TARGET_S:.0f} s")
    for n_runs in args.runs:
        measure(n_runs, args.points)


if __name__ == "__main__":
    main()
