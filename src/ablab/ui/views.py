"""What the dashboard's JSON endpoints return: plain dicts and lists read from a ReadOnlyLedger.

The same readers as the CLI and the report (ablab.analysis.runs.list_runs and provenance_facts,
ablab.analysis.verdicts.status and analyze), handed the open read-only ledger so that nothing here
can write. Each function answers one page's question; ablab.ui.server turns the answers into JSON.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

from ablab import config as config_mod
from ablab.analysis.runs import list_runs, provenance_facts
from ablab.analysis.samples import side_by_side
from ablab.analysis.verdicts import BASELINE_ARM, analyze, status
from ablab.store.reader import ReadOnlyLedger

CURVE_METRICS = ("train_loss", "val_loss")  # the study page's per-arm curves


def runs(lab: Path, ledger: ReadOnlyLedger, status_: str | None = None, name: str | None = None,
         tag: str | None = None, where: Sequence[str] = (), sort: str | None = None,
         columns: Sequence[str] = (), limit: int | None = None) -> dict[str, Any]:
    """The runs table: list_runs' rows (filter, sort, the config columns asked for) and its columns."""
    table = list_runs(lab, status=status_, name=name or None, tag=tag or None, where=where, sort=sort or None,
                      limit=limit, config_columns=columns, ledger=ledger)
    return {"columns": table.columns, "rows": table.rows, "config_keys": sorted(config_mod.flat_keys())}


def run(ledger: ReadOnlyLedger, ref: str) -> dict[str, Any]:
    """One run's page, less its metric rows (those come through metrics_since)."""
    found = ledger.run(ref)
    return {"id": found.id, "name": found.name, "status": found.status, "seed": found.seed,
            "created_at": found.created_at, "finished_at": found.finished_at, "tags": found.tags,
            "config": found.config, "result": found.result, "provenance": provenance_facts(found),
            "events": ledger.events(found.id), "notes": ledger.notes(found.id),
            "studies": [{"study": s, "arm": a, "seed": n} for s, a, n in ledger.study_links(found.id)]}


def metrics_since(ledger: ReadOnlyLedger, ref: str, since: int) -> dict[str, Any]:
    """A run's metric rows after step `since`, with its status now (a page stops polling a run that
    is no longer running) and its events (spikes and divergence appear as they happen)."""
    run_id = ledger.resolve(ref)
    return {"id": run_id, "status": ledger.runs(ids=[run_id])[0].status, "rows": ledger.metrics_since(run_id, since),
            "events": ledger.events(run_id)}


def samples(ledger: ReadOnlyLedger, ref: str) -> dict[str, Any]:
    """A run's continuations of its prompt suite (eval.prompts), every step's, oldest first."""
    run_id = ledger.resolve(ref)
    return {"id": run_id, "rows": ledger.samples(run_id)}


def studies(ledger: ReadOnlyLedger) -> list[dict[str, Any]]:
    """Every study: name, baseline, question, and how many of its arm x seed cells have finished."""
    found = []
    for record in ledger.studies():
        spec, links = record["spec"], ledger.study_runs(record["name"])
        states = {r.id: r.status for r in ledger.runs(ids=list(links.values()))} if links else {}
        cells = len(spec.get("arms", {})) * len(spec.get("seeds", []))
        done = sum(1 for run_id in links.values() if states.get(run_id) == "finished")
        found.append({"name": record["name"], "baseline": record["baseline"], "kind": spec.get("kind", "study"),
                      "question": spec.get("question"), "cells": cells, "finished": min(done, cells),
                      "concluded": bool(record["data"].get("conclusion"))})
    return found


def study(lab: Path, ledger: ReadOnlyLedger, name: str) -> dict[str, Any]:
    """A study's page: the arms x seeds grid with each cell's run and live status, the plan's diff
    (each arm's changes against the baseline's values), per-arm curves with seed bands, and, once
    every cell has finished, each arm's verdict; and the prompt suite's continuations of the baseline
    and each arm side by side at the last step they share (None without eval.prompts)."""
    record, cells = status(lab, name, ledger)
    spec = record["spec"]
    grid = [{"arm": arm, "seed": seed, "run": r.id if r else None, "status": r.status if r else "not started"}
            for (arm, seed), r in cells.items()]
    complete = all(r is not None and r.status == "finished" for r in cells.values())
    verdicts: dict[str, Any] = {}
    if spec.get("kind") != "ladder":
        _, arms, floor = analyze(lab, name, ledger)
        verdicts = {a.arm: {"values": a.values, "summary": _plain(a.summary), "comparison": _plain(a.comparison),
                            "verdict": _plain(a.verdict) if complete else None} for a in arms}
    curves = arm_curves(ledger, {arm: [c.id for (a, _), c in cells.items() if a == arm and c is not None]
                                 for arm in spec["arms"]})
    table = side_by_side(lab, spec, cells, ledger)
    texts = table and {"seed": table.seed, "step": table.step, "arms": table.arms,
                       "rows": [{"prompt": p, "mode": m, "texts": t} for p, m, t in table.rows]}
    return {"name": record["name"], "baseline": record["baseline"], "spec": spec, "grid": grid,
            "complete": complete, "arms": verdicts, "diff": plan_diff(ledger, record["baseline"], spec["arms"]),
            "curves": curves, "samples": texts, "conclusion": record["data"].get("conclusion")}


def plan_diff(ledger: ReadOnlyLedger, baseline_ref: str, arms: dict[str, dict]) -> list[dict[str, Any]]:
    """(arm, key, the baseline's value, the arm's value) for every change an arm makes."""
    base = next((b["config"] for b in ledger.baselines() if b["ref"] == baseline_ref), {})
    return [{"arm": arm, "key": key, "baseline": _dotted(base, key), "arm_value": value}
            for arm, changes in arms.items() if arm != BASELINE_ARM for key, value in (changes or {}).items()]


def arm_curves(ledger: ReadOnlyLedger, runs_by_arm: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Per arm and metric: the steps any seed logged it at, and the mean, lowest and highest value
    over the seeds that logged it there (the band a seed-to-seed spread draws)."""
    rows = ledger.metrics_of([run_id for ids in runs_by_arm.values() for run_id in ids])
    curves: dict[str, dict[str, Any]] = {}
    for arm, ids in runs_by_arm.items():
        curves[arm] = {}
        for metric in CURVE_METRICS:
            by_step: dict[int, list[float]] = {}
            for run_id in ids:
                for row in rows.get(run_id, []):
                    value = row.get(metric)
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        by_step.setdefault(row["step"], []).append(float(value))
            steps = sorted(by_step)
            curves[arm][metric] = {"step": steps, "mean": [sum(by_step[s]) / len(by_step[s]) for s in steps],
                                   "low": [min(by_step[s]) for s in steps], "high": [max(by_step[s]) for s in steps],
                                   "seeds": [len(by_step[s]) for s in steps]}
    return curves


def baselines(ledger: ReadOnlyLedger) -> list[dict[str, Any]]:
    """Every dated baseline with its lineage: the one it was promoted from, the studies that
    justified it, the ones promoted from it, and the studies run against it."""
    found = ledger.baselines()
    against = {}
    for record in ledger.studies():
        against.setdefault(record["baseline"], []).append(record["name"])
    return [{"ref": b["ref"], "seeds": b["seeds"], "current": bool(b.get("current")), "parent": b.get("parent"),
             "justified_by": b.get("justified_by") or [], "noise_floor": b.get("noise_floor"),
             "children": [c["ref"] for c in found if c.get("parent") == b["ref"]],
             "studies": against.get(b["ref"], [])} for b in found]


def _dotted(config: dict, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
