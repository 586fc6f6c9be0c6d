"""A study's benchmark scores, read from the store: per arm and task, accuracy over seeds and its
difference from the baseline arm, paired by seed.

    rows = benchmark_table(lab, record["spec"], cells)   # cells from ablab.analysis.verdicts.status
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ablab.analysis import stats
from ablab.analysis.verdicts import BASELINE_ARM
from ablab.evals.specfile import resolve_tasks, task_names
from ablab.store.ledger import Ledger


@dataclass
class BenchmarkRow:
    arm: str
    task: str
    values: list[float]  # acc per seed (NaN where not scored)
    summary: stats.Summary | None
    comparison: stats.Paired | None  # arm - baseline, paired by seed


def benchmark_table(lab: Path, spec: dict, cells: dict) -> list[BenchmarkRow]:
    """Per arm and task: accuracy over seeds (the newest evaluation at the run's last step), and
    its paired difference from the baseline arm."""
    names = task_names(spec.get("benchmarks", []))
    if not names:
        return []
    tasks = [s.name for s in resolve_tasks(names)]
    limit = spec.get("benchmark_limit", 0)
    run_ids = [r.id for r in cells.values() if r is not None]
    with Ledger(lab) as ledger:
        stored = ledger.evals(run_ids) if run_ids else []
    latest: dict[tuple[str, str], tuple[int, float]] = {}
    for e in stored:  # ordered by step, then time: later rows replace earlier ones
        if e["example_limit"] == limit and e["num_fewshot"] == 0:
            latest[(e["run_id"], e["task"])] = (e["step"], e["metrics"][e.get("metric", "acc")])
    def acc(run, task: str) -> float:
        return latest.get((run.id, task), (0, math.nan))[1] if run is not None and run.status == "finished" else math.nan
    rows = []
    for task in tasks:
        base = [acc(cells[(BASELINE_ARM, s)], task) for s in spec["seeds"]]
        for arm in spec["arms"]:
            values = [acc(cells[(arm, s)], task) for s in spec["seeds"]]
            present = [v for v in values if not math.isnan(v)]
            pairs = [(a, b) for a, b in zip(values, base) if not (math.isnan(a) or math.isnan(b))]
            comparison = (stats.paired([a for a, _ in pairs], [b for _, b in pairs])
                          if arm != BASELINE_ARM and len(pairs) >= 2 else None)
            rows.append(BenchmarkRow(arm, task, values, stats.summarize(present) if present else None, comparison))
    return rows
