"""`ablab study ...`: parse, call the library, print. Imported by cli only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import click
import typer
from rich.table import Table

from ablab.cli.common import (AddressOpt, ExecutorOpt, JsonOpt, LabOpt, RetriesOpt, RetryOnOpt, WorkersOpt, console,
                              lab_dir, make_executor)
from ablab.cli.progress import Display, QuietOpt, plan_bars, watching_preparation
from ablab.errors import UserError
from ablab.lab import check_name
from ablab.study import baselines

study_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                        help="Hypothesis-first studies.\n\nExample: `ablab study plan studies/muon-lr.toml`")


@study_app.command("new")
def study_new(name: str = typer.Argument(..., help="Study name."),
              baseline: Optional[str] = typer.Option(None, help="The dated baseline it runs against (default: a "
                                                     "main@YYYY-MM-DD, which `study plan` asks you to replace)."),
              question: str = typer.Option("", help="The one question the study answers."),
              variable: Optional[List[str]] = typer.Option(None, help="KEY=V1,V2: a config key and the values its "
                                                           "arms take (repeat for more; default optim.lr=0.04)."),
              idea: Optional[int] = typer.Option(None, "--idea", metavar="ID", help="The backlog idea it tests "
                                                 "(`ablab idea list`): written as meta.motivated_by, linked as tested."),
              lab: Optional[Path] = LabOpt) -> None:
    """Write a commented study template to `studies/NAME.toml`, with its question, its variables and
    a hypothesis skeleton to replace (planning refuses the texts still marked [to write]).

    Example: `ablab study new lr-up --baseline main@2026-11-21 --question "Does lr 0.04 win?" --variable optim.lr=0.04`
    """
    from ablab.study.ideas import start_from_idea
    from ablab.study.spec import parse_variable, template_text

    check_name(name, "Study name", "muon-lr")
    variables = dict(parse_variable(item) for item in variable or [])
    if baseline is not None:
        baselines.load(lab_dir(lab), baseline)  # an unknown one is refused now, naming the lab's baselines
    path = lab_dir(lab) / "studies" / f"{name}.toml"
    if path.exists():
        raise UserError(f"{path} already exists; pick another name or edit that file.")
    motivated_by = start_from_idea(lab_dir(lab), idea, name) if idea is not None else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template_text(name, baselines.today(), baseline or "main@YYYY-MM-DD", path, question, variables,
                                  motivated_by), encoding="utf-8")
    console.print(f"wrote {path}; replace its [to write] texts with your question and hypothesis, then "
                  f"`ablab study plan {path}`", markup=False)


def print_plan(plan) -> None:
    spec = plan.spec
    console.print(f"[bold]{spec.name}[/bold]: {spec.question}")
    console.print(f"prediction: {spec.prediction.metric} ({spec.prediction.read_at}) {spec.prediction.direction}s by "
                  f">= {spec.prediction.min_effect:g}; baseline {spec.baseline}; axis {spec.axis}, budget "
                  f"{spec.budget:,g}; seeds {spec.seeds}")
    table = Table("arm", "changes against the baseline", "steps", "tokens/run", "data tokens", "epochs")
    for row in plan.rows:
        changes = "\n".join(f"{k}: {a!r} -> {b!r}" for k, a, b in row.diff if not k.startswith("train.max_")) or "—"
        epochs = "?" if row.data_tokens is None else f"{row.epochs:,.2f}" if row.epochs is not None else "—"
        table.add_row(row.arm.name, changes, f"{row.steps:,}" if row.steps else "time-bound",
                      f"{row.tokens:,}" if row.tokens else "—",
                      f"{row.data_tokens:,}" if row.data_tokens is not None else "?", epochs)
    console.print(table)
    costs = Table("arm", "params", "FLOPs/run", "reused", "to train", "to resume", "est. min", "peak MB")
    for row in plan.rows:
        costs.add_row(row.arm.name, f"{row.params / 1e6:.2f}M" if row.params else "?",
                      f"{row.flops_per_run:.2e}" if row.flops_per_run else "—",
                      str(row.reused), str(row.to_train), str(row.to_resume), _minutes(row.est_seconds, unit=""),
                      f"{row.pace.peak_memory_mb:.0f}" if row.pace and row.pace.peak_memory_mb else "?")
    console.print(costs)
    frozen = ", ".join(f"{k}={v}" for k, v in plan.frozen.items())
    console.print(f"frozen: {frozen}", markup=False)
    paces = {}  # arms of one shape share one measure: say each once
    for row in plan.rows:
        if row.pace is not None:
            paces.setdefault(row.pace, []).append(row.arm.name)
    for pace, names in paces.items():
        console.print(f"{pace.mid:.3g} s/step (spread {pace.low:.3g}-{pace.high:.3g}) from {pace.source}: "
                      f"{', '.join(names)}", markup=False)
    chosen: dict[str, list[str]] = {}  # arms whose "auto" chose alike: said once
    for row in plan.rows:
        if row.auto:
            chosen.setdefault(row.auto, []).append(row.arm.name)
    for sentence, names in chosen.items():
        console.print(f"auto batch ({', '.join(names)}): {sentence}", markup=False, soft_wrap=True)
    warnings = {}
    for row in plan.rows:
        for warning in row.warnings:
            warnings.setdefault(warning, []).append(row.arm.name)
    for warning, names in warnings.items():
        console.print(f"warning ({', '.join(names)}): {warning}", markup=False, soft_wrap=True)
    counts = [sum(getattr(r, key) for r in plan.rows) for key in ("reused", "to_train", "to_resume")]
    console.print(f"{plan.total_runs} runs: {counts[0]} reused, {counts[1]} to train, {counts[2]} to resume; "
                  f"estimated {_minutes(plan.est_seconds)} of training"
                  + (f" (median {plan.est_seconds[1] / 60:.1f})" if plan.est_seconds else ""), markup=False)


def _minutes(seconds, unit: str = " min") -> str:
    """(low, middle, high) seconds as '3.9-5.0 min'; '?' when not measured."""
    if seconds is None:
        return "?"
    low, high = f"{seconds[0] / 60:.1f}", f"{seconds[2] / 60:.1f}"
    return (f"{low}-{high}" if low != high else high) + unit


@study_app.command("plan")
def study_plan(file: Path = typer.Argument(..., help="Study TOML file."),
               probe: bool = typer.Option(True, help="Time real steps of each shape the lab has no finished runs "
                                                     "of (a few seconds each)."),
               lab: Optional[Path] = LabOpt) -> None:
    """Verify a study before it runs: each arm as a diff, the frozen rest, tokens, steps, time, memory.

    Example: `ablab study plan studies/muon-lr.toml`
    """
    from ablab.study.honesty import plan_warnings
    from ablab.study.sizes import make_plans

    for plan in make_plans(lab_dir(lab), file, probe=probe):  # one per size of a family baseline
        print_plan(plan)
        for warning in plan_warnings(lab_dir(lab), plan):
            console.print(f"warning: {warning}", markup=False, soft_wrap=True)


@study_app.command("run")
def study_run(file: Path = typer.Argument(..., help="Study TOML file."),
              yes: bool = typer.Option(False, "--yes", "-y", help="Run without asking for confirmation."),
              executor: str = ExecutorOpt, workers: Optional[int] = WorkersOpt,
              address: Optional[str] = AddressOpt, retries: int = RetriesOpt, retry_on: str = RetryOnOpt,
              allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Run although the lab's checkout has "
                                               "uncommitted changes (recorded with the study)."),
              quiet: bool = QuietOpt, lab: Optional[Path] = LabOpt) -> None:
    """Show the plan, confirm, run every arm over every seed (reusing finished runs), write the sheet.

    Example: `ablab study run studies/muon-lr.toml --yes --executor local --workers 2`
    """
    from ablab.api import Lab
    from ablab.report.sheets import write_sheet
    from ablab.study import honesty
    from ablab.study.sizes import make_plans

    dirty = honesty.refuse_dirty(lab_dir(lab), allow_dirty)
    runner = make_executor(executor, workers, retries, retry_on, lab_dir(lab), address)
    study = Lab(lab_dir(lab)).study(file)
    plans = make_plans(lab_dir(lab), file)  # one per size of a family baseline
    for plan in plans:
        print_plan(plan)
        for warning in honesty.plan_warnings(lab_dir(lab), plan):
            console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if not yes and not typer.confirm("Run this study?"):
        raise typer.Exit(1)
    states = []
    for plan in plans:
        with Display(quiet) as display, watching_preparation(display):
            bars = plan_bars(display, plan)
            states.append(study.run(runner, say=console.print, plan=plan, progress_for=bars.progress_for,
                                    on_cell=bars.on_cell))
        honesty.record_allowed_dirty(lab_dir(lab), plan.spec.name, dirty)
        if states[-1] == "interrupted":
            break
    for plan in plans[:len(states)]:  # after every size ran: each sheet shows them all
        sheet = write_sheet(lab_dir(lab), plan.spec.name)
        _print_verdicts(lab_dir(lab), plan.spec.name)
        console.print(f"sheet: {sheet}")
    state = next((s for s in ("interrupted", "failed") if s in states), "finished")
    if state == "interrupted":
        console.print(f"interrupted; run `ablab study run {file}` again to finish only what is missing")
        raise typer.Exit(130)
    if state == "failed":
        console.print(f"some runs failed (their errors are above and in `ablab runs`); "
                      f"run `ablab study run {file}` again to retry them")
        raise typer.Exit(1)


def _print_verdicts(lab: Path, name: str) -> None:
    from ablab.analysis.scope import scope_sentences
    from ablab.analysis.verdicts import analyze, status

    record, results, floor = analyze(lab, name)
    scopes = scope_sentences(record["spec"], status(lab, name)[1], results)
    for r in results:
        if r.verdict is not None:
            console.print(f"{r.arm}: [bold]{r.verdict.outcome}[/bold] — {r.verdict.reason}")
            if r.verdict.surprise:
                console.print(f"  {r.verdict.surprise}")
        if r.arm in scopes:
            console.print(f"  scope: {scopes[r.arm]}", markup=False, soft_wrap=True)


@study_app.command("status")
def study_status(name: str = typer.Argument(..., help="Study name."), json_out: bool = JsonOpt,
                 lab: Optional[Path] = LabOpt) -> None:
    """Progress per arm and seed: run id, status and the prediction's metric.

    With `--json`: one object with keys study, kind, baseline, metric, read_at, seeds, cells (a list of
    objects with arm, seed, run_id, status and value: the metric, or null while missing) and verdicts
    (a list of objects with arm, outcome, rule, adjustment (Holm across arms), surprise and scope: the
    verdict with the params, tokens, corpus, axis, seeds and hardware it was tested at; empty for a ladder).

    Example: `ablab study status muon-lr`
    """
    from ablab.analysis.verdicts import cell_values

    record, values = cell_values(lab_dir(lab), name)
    spec = record["spec"]
    if json_out:
        _print_status_json(lab_dir(lab), record, values)
        return
    table = Table("arm", *[f"seed {s}" for s in spec["seeds"]])
    for arm in spec["arms"]:
        row = []
        for seed in spec["seeds"]:
            run, value = values[(arm, seed)]
            row.append("missing" if run is None else f"{run.id} {run.status}" + (f" {value:.4f}" if value == value else ""))
        table.add_row(arm, *row)
    console.print(table)
    if spec.get("kind") != "ladder":  # a ladder has no hypothesis, so no verdicts
        _print_verdicts(lab_dir(lab), name)


def _print_status_json(lab: Path, record: dict, values: dict) -> None:
    from ablab.analysis.runs import to_json
    from ablab.analysis.scope import scope_sentences
    from ablab.analysis.verdicts import analyze

    spec = record["spec"]
    cells = [{"arm": arm, "seed": seed, "run_id": run.id if run else None, "status": run.status if run else "missing",
              "value": value} for (arm, seed), (run, value) in values.items()]
    results = [] if spec.get("kind") == "ladder" else analyze(lab, record["name"])[1]
    scopes = scope_sentences(spec, {cell: run for cell, (run, _) in values.items()}, results) if results else {}
    verdicts = [{"arm": r.arm, "outcome": r.verdict.outcome, "rule": r.verdict.rule, "adjustment": r.verdict.adjustment,
                 "surprise": r.verdict.surprise or None, "scope": scopes.get(r.arm)}
                for r in results if r.verdict is not None]
    typer.echo(to_json({"study": record["name"], "kind": spec.get("kind", "study"), "baseline": record["baseline"],
                        "metric": spec.get("metric"), "read_at": spec.get("read_at"), "seeds": spec["seeds"],
                        "cells": cells, "verdicts": verdicts}))


@study_app.command("conclude")
def study_conclude(name: str = typer.Argument(..., help="Study name."),
                   interpretation: str = typer.Option("", help="What actually happened, in your words."),
                   decision: str = typer.Option("", help="What you adopt going forward."),
                   follow_up: str = typer.Option("", "--follow-up", help="What remains unclear."),
                   override: str = typer.Option("", "--override", help="Why you adopt an arm whose verdict is not "
                                                "supported (refused without it; recorded with the decision)."),
                   lab: Optional[Path] = LabOpt) -> None:
    """Write the researcher's part of the sheet (kept when the sheet is regenerated); $EDITOR without options.
    A decision that starts with "adopt" and names an arm the verdict did not support is refused unless
    `--override "REASON"` says why.

    Example: `ablab study conclude muon-lr --decision "adopt optim.lr=0.04"`
    """
    from ablab.api import Lab

    notes = {"interpretation": interpretation, "decision": decision, "follow_up": follow_up}
    if not any(notes.values()):
        notes = _edit_in_editor(name)
    console.print(f"sheet: {Lab(lab_dir(lab)).study(name).conclude(**notes, override=override)}")


def _edit_in_editor(name: str) -> dict[str, str]:
    if not (os.environ.get("VISUAL") or os.environ.get("EDITOR")):  # else click would fall back to vi
        raise UserError("Set $EDITOR, or pass --interpretation, --decision and --follow-up.")
    sections = ("interpretation", "decision", "follow_up")
    text = click.edit("".join(f"## {s}\n\n" for s in sections), extension=".md", require_save=False) or ""
    parts = {}
    for block in text.split("## ")[1:]:
        head, _, body = block.partition("\n")
        if head.strip() in sections:
            parts[head.strip()] = body.strip()
    return parts
