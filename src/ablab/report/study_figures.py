"""A study's figures, shared by its sheet, the lab log and the HTML report: train and val loss over
steps, tokens and wall-clock as a mean line and band over seeds per arm, the prediction's metric per
seed on a zoomed axis, the final metric against a numeric variable, benchmark bars with error
bars, and one figure per training diagnostic the runs recorded (ablab.report.diagnostic_figures).
PNG (embedded) and SVG (for papers) of each."""

from __future__ import annotations

import math
from pathlib import Path

from ablab.analysis.benchmarks import benchmark_table
from ablab.analysis.verdicts import metric_value
from ablab.errors import UserError
from ablab.report import figures
from ablab.report.diagnostic_figures import diagnostic_figures
from ablab.store.ledger import Ledger


def study_figures(lab: Path, name: str, spec: dict, cells: dict, folder: Path) -> list[Path]:
    """Write the study's figures into `folder`; the PNG paths, in reading order."""
    folder.mkdir(parents=True, exist_ok=True)
    with Ledger(lab) as ledger:
        rows = {run.id: ledger.metrics(run.id) for run in cells.values() if run is not None}
    written = []
    for x, label in (("steps", "steps"), ("tokens", "tokens"), ("elapsed", "time")):
        val, train = ({arm: [figures.series_from_rows(rows[run.id], x=x, metric=metric, label=f"seed {seed}")
                             for (a, seed), run in cells.items() if a == arm and run is not None]
                       for arm in spec["arms"]} for metric in ("val_loss", "train_loss"))
        val = {arm: series for arm, series in val.items() if any(s.x for s in series)}
        if val:
            written += _png(figures.loss_bands(val, folder / f"{name}-loss-{label}", x=x, train=train))
    written += _final_values(lab, spec, cells, folder / f"{name}-{spec.get('metric', 'val_loss')}-by-seed")
    written += _metric_vs_variable(spec, cells, folder / f"{name}-{spec.get('metric', 'val_loss')}-vs-variable")
    written += _benchmarks(lab, spec, cells, folder / f"{name}-benchmarks")
    written += diagnostic_figures(rows, cells, list(spec["arms"]), folder, name)  # runs with train.diagnostics
    return written


def _png(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.suffix == ".png"]


def _final_values(lab: Path, spec: dict, cells: dict, out: Path) -> list[Path]:
    """The prediction's metric per seed and arm, the numbers the verdict compares, on a zoomed axis."""
    metric, read_at = spec.get("metric", "val_loss"), spec.get("read_at", "final")
    with Ledger(lab) as ledger:
        values = {arm: {seed: metric_value(run, metric, read_at, ledger)
                        for (a, seed), run in cells.items() if a == arm} for arm in spec["arms"]}
    if not any(math.isfinite(v) for seeds in values.values() for v in seeds.values()):
        return []
    return _png(figures.final_values(values, out, metric=metric))


def _metric_vs_variable(spec: dict, cells: dict, out: Path) -> list[Path]:
    """With one numeric variable (a learning-rate sweep, a width sweep), its final metric per value."""
    variables = spec.get("variables") or {}
    if len(variables) != 1:
        return []
    (variable, _), = variables.items()
    metric = spec.get("metric", "val_loss")
    values: dict[float, list[float]] = {}
    for (arm, _), run in cells.items():
        if run is None or run.status != "finished":
            continue
        value = (spec["arms"][arm] or {}).get(variable, _baseline_value(run, variable))
        final = run.result.get("final", {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and final is not None:
            values.setdefault(float(value), []).append(float(final))
    if len(values) < 2:
        return []
    return _png(figures.metric_vs_variable(values, out, variable=variable, metric=metric))


def _baseline_value(run, variable: str):
    section, _, key = variable.partition(".")
    return run.config.get(section, {}).get(key) if key else run.config.get(section)


def _benchmarks(lab: Path, spec: dict, cells: dict, out: Path) -> list[Path]:
    if not spec.get("benchmarks"):
        return []
    scores: dict[str, dict[str, tuple[float, float]]] = {}
    for row in benchmark_table(lab, spec, cells):
        if row.summary is not None:
            sem = row.summary.sem if not math.isnan(row.summary.sem) else 0.0
            scores.setdefault(row.task, {})[row.arm] = (row.summary.mean, sem)
    if not scores:
        return []
    try:
        return _png(figures.benchmark_bars(scores, out))
    except UserError:
        return []

