"""A study's evidence, read from the store: every arm x seed cell, the prediction's metric per run,
each arm against the baseline over the same seeds (paired test, noise floor) and its verdict.

    record, cells = status(lab, "lr-up")          # {(arm, seed): Run or None}
    record, arms, floor = analyze(lab, "lr-up")   # ArmResult per arm, with comparison and verdict
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablab.analysis import stats
from ablab.errors import UserError
from ablab.store.ledger import Ledger

BASELINE_ARM = "baseline"  # the arm name a study's spec gives the baseline's own config


def _opened(lab: Path, ledger: Ledger | None):
    """`ledger` itself (left open: its owner closes it), else the lab's ledger opened for this read."""
    return contextlib.nullcontext(ledger) if ledger else Ledger(lab)


def status(lab: Path, name: str, ledger: Ledger | None = None) -> tuple[dict, dict[tuple[str, int], Any]]:
    """(the study's record, {(arm, seed): Run or None}) for every arm and seed of the study; `ledger`:
    one already open (the dashboard's read-only one), else the lab's is opened."""
    with _opened(lab, ledger) as ledger:
        record = ledger.study(name)
        if record is None:
            known = ", ".join(s["name"] for s in ledger.studies()) or "none yet"
            raise UserError(f"No study '{name}' in this lab (known: {known}); start it with `ablab study run FILE`.")
        links = ledger.study_runs(name)
        runs = {r.id: r for r in ledger.runs(ids=list(links.values()))} if links else {}
    spec = record["spec"]
    cells = {(arm, seed): runs.get(links.get((arm, seed))) for arm in spec["arms"] for seed in spec["seeds"]}
    return record, cells


def cell_values(lab: Path, name: str) -> tuple[dict, dict[tuple[str, int], tuple[Any, float]]]:
    """(the study's record, {(arm, seed): (its run or None, the prediction's metric or NaN)})."""
    record, cells = status(lab, name)
    spec = record["spec"]
    with Ledger(lab) as ledger:
        values = {cell: (run, metric_value(run, spec["metric"], spec["read_at"], ledger)) for cell, run in cells.items()}
    return record, values


def metric_value(run, metric: str, read_at: str, ledger: Ledger | None = None) -> float:
    """The prediction's metric of one run (final, best, or at the first logged row at or past
    `tokens:N`); NaN when the run has not finished (or diverged) or never logged it."""
    if run is None or run.status != "finished":
        return math.nan
    if read_at.startswith("tokens:"):
        threshold = int(read_at.split(":", 1)[1].replace("_", ""))
        rows = (ledger.metrics(run.id) if ledger else [])
        value = next((r[metric] for r in rows if r.get("tokens", 0) >= threshold and metric in r), None)
    elif read_at == "best" and metric == "val_loss":
        value = run.result.get("best", {}).get("val_loss")
    else:
        value = run.result.get("final", {}).get(metric)
    return math.nan if value is None else float(value)


@dataclass
class ArmResult:
    arm: str
    changes: dict
    values: list[float]  # the metric per seed (NaN where missing)
    summary: stats.Summary
    comparison: stats.Paired | None = None
    verdict: stats.Verdict | None = None


def analyze(lab: Path, name: str, ledger: Ledger | None = None) -> tuple[dict, list[ArmResult], float]:
    """(study record, per-arm results with paired comparisons and verdicts, baseline noise floor).

    The verdicts are judged together: with several arms their p-values are Holm-adjusted across the
    arms that have a comparison (`stats.arm_verdicts`)."""
    record, cells = status(lab, name, ledger)
    spec = record["spec"]
    if spec.get("kind") == "ladder":
        raise UserError(f"{name} is a scaling ladder, which has no hypothesis to judge; "
                        f"`ablab scaling fit --study {name}` analyses it.")
    metric, read_at, seeds = spec["metric"], spec["read_at"], spec["seeds"]
    with _opened(lab, ledger) as ledger:
        values = {arm: [metric_value(cells[(arm, s)], metric, read_at, ledger) for s in seeds] for arm in spec["arms"]}
    base = values[BASELINE_ARM]
    floor = stats.noise_floor([v for v in base if not math.isnan(v)])
    results = []
    for arm, changes in spec["arms"].items():
        present = [v for v in values[arm] if not math.isnan(v)]
        result = ArmResult(arm, changes, values[arm], stats.summarize(present) if present else None)
        pairs = [(a, b) for a, b in zip(values[arm], base) if not (math.isnan(a) or math.isnan(b))]
        if arm != BASELINE_ARM and len(pairs) >= 2:
            result.comparison = stats.paired([a for a, _ in pairs], [b for _, b in pairs])
        results.append(result)
    compared = {r.arm: r.comparison for r in results if r.comparison is not None}
    judged = stats.arm_verdicts(compared, spec["direction"], spec["min_effect"], floor)
    for r in results:
        r.verdict = judged.get(r.arm)
    return record, results, floor
