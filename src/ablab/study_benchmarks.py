"""A study's benchmarks (design.benchmarks): every finished run of every arm scored on the named
tasks, and each arm's scores over seeds set against the baseline arm's, paired by seed.

Results live in the ledger with the run (ablab.evals.runner), so a study run again scores only the
runs that lack a result for a task's current version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ablab import stats
from ablab.evals.runner import evaluate_specs, resolve_tasks, task_names
from ablab.ledger import Ledger
from ablab.study import BASELINE_ARM


def score_run(lab: Path, benchmarks: list[str], limit: int, run_id: str) -> list[str]:
    """Evaluate the run on the tasks it has no stored result for (at these settings); the tasks scored."""
    specs = resolve_tasks(task_names(benchmarks))
    with Ledger(lab) as ledger:
        done = {(e["task"], e["task_version"]) for e in ledger.evals([run_id])
                if e["example_limit"] == limit and e["num_fewshot"] == 0 and e["seed"] == 0}
    missing = [spec for spec in specs if (spec.name, spec.version) not in done]
    if missing:
        evaluate_specs(lab, run_id, missing, limit=limit or None)
    return [spec.name for spec in missing]


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
            latest[(e["run_id"], e["task"])] = (e["step"], e["metrics"]["acc"])
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


def markdown(rows: list[BenchmarkRow]) -> list[str]:
    """The sheet's benchmark table: accuracy mean ± std over seeds, and the paired difference."""
    if not rows:
        return []
    lines = ["| task | config | acc (mean ± std) | seeds | diff vs baseline (95% CI) | p |", "|---|---|---|---|---|---|"]
    for r in rows:
        s, c = r.summary, r.comparison
        acc = f"{s.mean:.4f} ± {s.std:.4f}" if s and s.n > 1 else (f"{s.mean:.4f}" if s else "-")
        diff = f"{c.mean_diff:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]" if c else "-"
        lines.append(f"| {r.task} | {r.arm} | {acc} | {s.n if s else 0} | {diff} | {f'{c.p:.3g}' if c else '-'} |")
    return lines
