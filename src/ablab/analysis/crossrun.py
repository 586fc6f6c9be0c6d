"""Analyses across runs that read the ledger and return tables: benchmark and loss correlations.

    table = correlations(lab, study="arch-scaling", method="spearman")
    table.names, table.r, table.p     # val_loss and each task's accuracy, pairwise
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablab.analysis import stats
from ablab.analysis.scaling import efficiency_gain, fit_power_law, gain_trend, tokens_to_fraction
from ablab.analysis.scaling_data import load_law, run_compute
from ablab.analysis.verdicts import BASELINE_ARM, status
from ablab.errors import UserError
from ablab.store.ledger import Ledger


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
        latest[(e["run_id"], e["task"])] = (e["step"], e["metrics"][e.get("metric", "acc")])
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


@dataclass
class ArmGain:
    arm: str
    n_params: float
    gain: object  # scaling.EfficiencyGain


def arm_gains(lab: Path, study: str | None = None, run_id: str | None = None, law_name: str | None = None,
              metric: str = "val_loss") -> tuple[list[ArmGain], object | None, object]:
    """(each arm's compute-efficiency gain over the baseline's law, the trend of the gain across
    sizes when the arms span three or more, the law). C_observed is the arm's training compute under
    the law's convention; C_predicted the compute at which the law reaches the arm's loss."""
    if (study is None) == (run_id is None):
        raise UserError("Name a study or a run (--run ID) to measure the compute-efficiency gain of.")
    if study is not None:
        record, cells = status(lab, study)
        groups = {arm: [r for (a, _), r in cells.items() if a == arm and r is not None and r.status == "finished"]
                  for arm in record["spec"]["arms"] if arm != BASELINE_ARM}
        baseline = record["baseline"]
    else:
        with Ledger(lab) as ledger:
            run = ledger.run(run_id)
        groups, baseline = {run.id: [run] if run.status == "finished" else []}, None
    law = load_law(lab, law_name, baseline) if (law_name or baseline) else load_law(lab, law_name)
    gains = []
    for arm, runs in groups.items():
        losses = [r.result["final"][metric] for r in runs if r.result.get("final", {}).get(metric) is not None]
        if not losses:
            continue
        key = "params" if law.embeddings else "non_embedding_params"
        n = float(np.mean([r.result[key] for r in runs]))
        compute = float(np.mean([run_compute(r, r.result["tokens_seen"], r.result[key], law.convention) for r in runs]))
        gains.append(ArmGain(arm, n, efficiency_gain(law, compute, losses)))
    sizes = sorted({g.n_params for g in gains})
    trend = None
    finite = [g for g in gains if math.isfinite(g.gain.gain)]
    if len(sizes) >= 3 and len(finite) >= 3:
        trend = gain_trend([g.n_params for g in finite], [g.gain.gain for g in finite],
                           [(g.gain.ci_low, g.gain.ci_high) for g in finite])
    return gains, trend, law


@dataclass
class Dynamics:
    run_id: str
    tokens: list[float]
    val_loss: list[float]
    fit: object | None  # scaling.PowerLawFit of val_loss against tokens
    fit_note: str  # why there is no fit, when there is none
    fractions: dict[float, float | None]  # share of the final improvement -> tokens that reached it
    benchmarks: dict[str, list[tuple[int, int, float]]]  # task -> (step, tokens, acc) over training


def dynamics(lab: Path, run_id: str) -> Dynamics:
    """Diminishing returns in one run: val loss against tokens with a power-law fit, the tokens at
    which 90/95/99% of the run's improvement was reached, and benchmark scores over training."""
    with Ledger(lab) as ledger:
        run = ledger.run(run_id)
        every_row = ledger.metrics(run.id)
        evals = ledger.evals([run.id])
    rows = [r for r in every_row if r.get("val_loss") is not None]
    tokens_at = {r["step"]: r.get("tokens", 0) for r in every_row}
    tokens, losses = [float(r["tokens"]) for r in rows], [float(r["val_loss"]) for r in rows]
    if len(rows) < 3:
        raise UserError(f"Run {run.id} has {len(rows)} validation points; dynamics need several, so train "
                        "with eval.points of 10 or more (eval.every=0).")
    fit, note = None, ""
    positive = [(t, v) for t, v in zip(tokens, losses) if t > 0]
    try:
        fit = fit_power_law([t for t, _ in positive], [v for _, v in positive], name="tokens", n_boot=100)
    except UserError as err:
        note = str(err)
    curves: dict[str, list[tuple[int, int, float]]] = {}
    for e in evals:
        curves.setdefault(e["task"], []).append((e["step"], tokens_at.get(e["step"], 0),
                                             e["metrics"][e.get("metric", "acc")]))
    return Dynamics(run.id, tokens, losses, fit, note, tokens_to_fraction(tokens, losses), curves)

