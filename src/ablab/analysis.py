"""Analyses across runs that read the ledger and return tables: benchmark and loss correlations.

    table = correlations(lab, study="arch-scaling", method="spearman")
    table.names, table.r, table.p     # val_loss and each task's accuracy, pairwise
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablab import stats
from ablab.errors import UserError
from ablab.ledger import Ledger


@dataclass
class Correlations:
    names: list[str]  # "val_loss", then tasks
    r: np.ndarray
    p: np.ndarray
    method: str
    runs: int

    def rows(self) -> list[dict]:
        return [{"": a, **{b: self.r[i, j] for j, b in enumerate(self.names)}} for i, a in enumerate(self.names)]


def benchmark_columns(lab: Path, run_ids: list[str] | None = None, metric: str = "val_loss") -> dict[str, list[float]]:
    """One column per task (accuracy at each run's newest evaluated step) plus the runs' final
    `metric`, one row per finished run that has at least one benchmark result; NaN where missing."""
    with Ledger(lab) as ledger:
        if run_ids is None:
            runs = ledger.runs(status="finished")
        else:  # an empty selection (a tag no run has) selects nothing, not everything
            runs = ledger.runs(ids=run_ids, status="finished") if run_ids else []
        evals = ledger.evals([r.id for r in runs]) if runs else []
    latest: dict[tuple[str, str], tuple[int, float]] = {}
    for e in evals:  # ordered by step then time, so the newest evaluation at the last step wins
        latest[(e["run_id"], e["task"])] = (e["step"], e["metrics"]["acc"])
    tasks = sorted({task for _, task in latest})
    scored = [r for r in runs if any((r.id, t) in latest for t in tasks)]
    columns = {metric: [float(r.result.get("final", {}).get(metric, math.nan) or math.nan) for r in scored]}
    for task in tasks:
        columns[task] = [latest.get((r.id, task), (0, math.nan))[1] for r in scored]
    return columns


def correlations(lab: Path, study: str | None = None, tag: str | None = None, method: str = "spearman",
                 metric: str = "val_loss") -> Correlations:
    """Pairwise correlations (Pearson or Spearman) of the runs' final metric and benchmark accuracies:
    task x task and metric x task. Pairs use the runs where both are present."""
    if method not in ("pearson", "spearman"):
        raise UserError(f"--method must be pearson or spearman, not {method!r}.")
    run_ids = None
    with Ledger(lab) as ledger:
        if study is not None:
            run_ids = list(ledger.study_runs(study).values())
            if not run_ids:
                raise UserError(f"Study '{study}' has no runs in this lab; `ablab study status {study}` shows it.")
        elif tag is not None:
            run_ids = [r.id for r in ledger.runs(tag=tag)]
    columns = benchmark_columns(lab, run_ids, metric)
    n_runs = len(columns[metric])
    if n_runs < 3 or len(columns) < 2:
        raise UserError(f"Correlations need at least 3 runs with benchmark results (found {n_runs}); "
                        "score runs with `ablab eval RUN --tasks ...` first.")
    names, r, p = stats.correlation_matrix(columns, method)
    return Correlations(names, r, p, method, n_runs)
