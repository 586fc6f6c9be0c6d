"""`ablab baseline ...` and `ablab study ...`: parse, call the library, print. Imported by cli only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import click
import typer
from rich.table import Table

from ablab import config as config_mod
from ablab.cli.common import (AddressOpt, ExecutorOpt, LabOpt, RetriesOpt, RetryOnOpt, WorkersOpt, bounded, console,
                              lab_dir, make_executor, seed_list)
from ablab.cli.progress import Display, QuietOpt, StudyBars, plan_bars, watching_preparation
from ablab.errors import UserError
from ablab.lab import check_name
from ablab.study import baselines

baseline_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                           help="Dated baselines.\n\nExample: `ablab baseline new main -c config.toml --seeds 0,1,2`")
study_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                        help="Hypothesis-first studies.\n\nExample: `ablab study plan studies/muon-lr.toml`")


@baseline_app.command("new")
def baseline_new(name: str = typer.Argument(..., help="Baseline name, e.g. main."),
                 overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides."),
                 config: str = typer.Option(..., "--config", "-c", help="TOML config or preset."),
                 date: str = typer.Option("", help="YYYY-MM-DD (default: today)."),
                 seeds: str = typer.Option("0,1,2", help="Seeds every study on it will use."),
                 lab: Optional[Path] = LabOpt) -> None:
    """Fix a config on a date as a baseline: writes `baselines/NAME@DATE.toml` and makes it current.

    Example: `ablab baseline new main -c quickstart --seeds 0,1,2`
    """
    check_name(name, "Baseline name", "main")
    cfg = config_mod.load(config, list(overrides or []))
    ref_date = baselines.check_date(date) if date else baselines.today()
    baselines.parse_ref(f"{name}@{ref_date}")
    path = baselines.create(lab_dir(lab), baselines.Baseline(name, ref_date, cfg, seed_list(seeds)))
    console.print(f"created baseline {name}@{ref_date} at {path} (current for '{name}')")


@baseline_app.command("run")
def baseline_run(ref: str = typer.Argument(..., help="NAME@DATE"), quiet: bool = QuietOpt,
                 lab: Optional[Path] = LabOpt) -> None:
    """Train the baseline at each of its seeds (reusing finished runs) and measure its noise floor.

    Example: `ablab baseline run main@2026-11-21`
    """
    from ablab.api import Lab  # here, not at the top: `ablab --help` imports no torch

    handle = Lab(lab_dir(lab)).baseline(ref)
    with Display(quiet) as display, watching_preparation(display):
        bars = StudyBars(display, f"baseline {handle.ref}", len(handle.seeds), lambda arm, seed: handle.config)
        floor = handle.run(say=console.print, progress_for=bars.progress_for, on_cell=bars.on_cell)
    console.print("seed-noise floor (std over seeds): " +
                  ", ".join(f"{k} {v:.3g}" for k, v in floor.items() if v == v))


@baseline_app.command("tiers")
def baseline_tiers(ref: str = typer.Argument(..., help="NAME@DATE"),
                   steps: str = typer.Option("100,1000", help="Untrained and trained step counts (the plan's "
                                                              "100,1000; scale down on a CPU)."),
                   tasks: str = typer.Option("choice,lambada,arithmetic", "--tasks", "-t", help="Tasks or suites."),
                   limit: int = typer.Option(200, callback=bounded(0), help="Examples per task (a seeded subset); "
                                                                             "0 = all."),
                   quiet: bool = QuietOpt, lab: Optional[Path] = LabOpt) -> None:
    """Three-tier baselines: chance, the baseline after a few steps and after more, at each of its
    seeds; then checks consistency over seeds (std < 0.02) and trained > untrained > chance per task.

    Example: `ablab baseline tiers cpu@2026-11-21 --steps 20,100 --tasks choice,lambada --limit 200`
    """
    from ablab.study.tiers import PLAN_STEPS, run_tiers, tier_config

    try:
        pair = tuple(int(s) for s in steps.split(","))
    except ValueError:
        pair = ()
    if len(pair) != 2:
        raise UserError(f"--steps {steps!r} is not two step counts; write e.g. --steps 100,1000.")
    with Display(quiet) as display, watching_preparation(display):
        base = baselines.load(lab_dir(lab), ref)
        bars = StudyBars(display, f"tiers {base.ref}", len(pair) * len(base.seeds),
                         lambda steps, seed: tier_config(base.config, base.ref, steps, seed))
        report = run_tiers(lab_dir(lab), ref, pair, tasks, limit or None, bars.progress_for,
                           say=console.print, on_cell=bars.on_cell)
    low, high = report.steps
    if report.scaled_down:
        console.print(f"tiers at {low} and {high} steps, scaled down from the plan's {PLAN_STEPS[0]} and {PLAN_STEPS[1]}")
    table = Table("task", "chance", f"{low} steps (mean ± std)", f"{high} steps (mean ± std)", "consistent", "monotone")
    for t in report.tasks:
        if t.unmeasurable:
            table.add_row(t.task, "", "not measurable", t.unmeasurable, "", "")
            continue
        table.add_row(t.task, f"{t.chance:.3f}", f"{t.mean(low):.3f} ± {t.std(low):.3f}",
                      f"{t.mean(high):.3f} ± {t.std(high):.3f}", "no" if t.task in report.inconsistent else "yes",
                      "no" if t.task in report.not_monotone else "yes")
    console.print(table)
    console.print(f"consistency over {len(report.seeds)} seeds: {'holds' if report.consistent else 'FAILS'} on most tasks"
                  + (f" (violated by {', '.join(report.inconsistent)})" if report.inconsistent else ""), soft_wrap=True)
    console.print(f"trained > untrained > chance: {'holds' if report.monotone else 'FAILS'} on most tasks"
                  + (f" (violated by {', '.join(report.not_monotone)})" if report.not_monotone else ""), soft_wrap=True)


JsonOpt = typer.Option(False, "--json", help="Print one JSON document (keys as listed above) and nothing else.")


@baseline_app.command("list")
def baseline_list(json_out: bool = JsonOpt, lab: Optional[Path] = LabOpt) -> None:
    """Every dated baseline, with its seeds, lineage and noise floor; * marks the current one.

    With `--json`: a list of objects with keys ref, name, date, current, seeds, parent, justified_by,
    noise_floor (metric -> std over the finished runs of its seeds, from any study or `baseline run`;
    a metric is null below two seeds, the whole of it null before any) and created_at.

    Example: `ablab baseline list`
    """
    if json_out:
        from ablab.analysis.runs import to_json

        keys = ("ref", "name", "date", "current", "seeds", "parent", "justified_by", "noise_floor", "created_at")
        typer.echo(to_json([{key: b.get(key) for key in keys} for b in baselines.listing(lab_dir(lab))]))
        return
    table = Table("", "baseline", "seeds", "promoted from", "justified by", "noise floor val_loss")
    for b in baselines.listing(lab_dir(lab)):
        table.add_row("*" if b.get("current") else "", b["ref"], ",".join(map(str, b["seeds"])), b.get("parent") or "",
                      ", ".join(b.get("justified_by") or []), _floor_text(b))
    console.print(table)


def _floor_text(b: dict) -> str:
    floor = (b.get("noise_floor") or {}).get("val_loss")
    if floor is not None and floor == floor:
        return f"{floor:.3g} ({b['finished_seeds']} seeds)"
    return "not run" if not b["finished_seeds"] else f"needs 2 seeds ({b['finished_seeds']} finished)"


@baseline_app.command("show")
def baseline_show(ref: str = typer.Argument(..., help="NAME@DATE"), json_out: bool = JsonOpt,
                  lab: Optional[Path] = LabOpt) -> None:
    """Print a baseline's file (its seeds, lineage and full config), then its noise floor.

    With `--json`: one object with keys ref, name, date, seeds, parent, justified_by, path, config
    (the full config, one object per section) and noise_floor (as `baseline list` has it).

    Example: `ablab baseline show main@2026-11-21`
    """
    baseline = baselines.load(lab_dir(lab), ref)
    floor = next((b for b in baselines.listing(lab_dir(lab)) if b["ref"] == baseline.ref),
                 {"noise_floor": None, "finished_seeds": 0})
    if json_out:
        from ablab.analysis.runs import to_json

        typer.echo(to_json({"ref": baseline.ref, "name": baseline.name, "date": baseline.date, "seeds": baseline.seeds,
                            "parent": baseline.parent, "justified_by": baseline.justified_by,
                            "path": str(baselines.baseline_path(lab_dir(lab), ref)),
                            "config": config_mod.to_dict(baseline.config), "noise_floor": floor["noise_floor"]}))
        return
    console.print(baselines.baseline_path(lab_dir(lab), ref).read_text(encoding="utf-8"), markup=False)
    console.print(f"# noise floor val_loss: {_floor_text(floor)}", markup=False)


@baseline_app.command("diff")
def baseline_diff(ref_a: str, ref_b: str, lab: Optional[Path] = LabOpt) -> None:
    """The config keys that differ between two baselines.

    Example: `ablab baseline diff main@2026-11-01 main@2026-11-21`
    """
    a, b = baselines.load(lab_dir(lab), ref_a), baselines.load(lab_dir(lab), ref_b)
    changes = config_mod.diff(a.config, b.config)
    for key, old, new in changes:
        console.print(f"{key}: {old!r} -> {new!r}", markup=False)
    if not changes:
        console.print("no config differences")


@baseline_app.command("promote")
def baseline_promote(study: str = typer.Argument(..., help="Study name."),
                     arm: str = typer.Option(..., "--arm", help="The arm to adopt."),
                     date: str = typer.Option("", help="Date of the new baseline (default: today)."),
                     lab: Optional[Path] = LabOpt) -> None:
    """Make the next dated baseline: the study's baseline plus one arm's changes.

    Example: `ablab baseline promote muon-lr --arm "optim.lr=0.04"`
    """
    previous, new = baselines.promote_arm(lab_dir(lab), study, arm, date or None)
    console.print(f"promoted {new.ref}, now the current '{new.name}' baseline", markup=False)
    console.print(f"  parent: {previous.ref}", markup=False)
    for key, old, value in config_mod.diff(previous.config, new.config):
        console.print(f"  {key}: {old!r} -> {value!r}", markup=False)
    console.print(f"  justified by: study {study}, arm {arm}", markup=False)


@study_app.command("new")
def study_new(name: str = typer.Argument(..., help="Study name."),
              baseline: Optional[str] = typer.Option(None, help="The dated baseline it runs against (default: a "
                                                     "main@YYYY-MM-DD, which `study plan` asks you to replace)."),
              question: str = typer.Option("", help="The one question the study answers."),
              variable: Optional[List[str]] = typer.Option(None, help="KEY=V1,V2: a config key and the values its "
                                                           "arms take (repeat for more; default optim.lr=0.04)."),
              lab: Optional[Path] = LabOpt) -> None:
    """Write a commented study template to `studies/NAME.toml`, with its question, its variables and
    a hypothesis skeleton to replace (planning refuses the texts still marked [to write]).

    Example: `ablab study new lr-up --baseline main@2026-11-21 --question "Does lr 0.04 win?" --variable optim.lr=0.04`
    """
    from ablab.study.spec import parse_variable, template_text

    check_name(name, "Study name", "muon-lr")
    variables = dict(parse_variable(item) for item in variable or [])
    if baseline is not None:
        baselines.load(lab_dir(lab), baseline)  # an unknown one is refused now, naming the lab's baselines
    path = lab_dir(lab) / "studies" / f"{name}.toml"
    if path.exists():
        raise UserError(f"{path} already exists; pick another name or edit that file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template_text(name, baselines.today(), baseline or "main@YYYY-MM-DD", path, question, variables),
                    encoding="utf-8")
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
    from ablab.api import Lab

    print_plan(Lab(lab_dir(lab)).study(file).plan(probe=probe))


@study_app.command("run")
def study_run(file: Path = typer.Argument(..., help="Study TOML file."),
              yes: bool = typer.Option(False, "--yes", "-y", help="Run without asking for confirmation."),
              executor: str = ExecutorOpt, workers: Optional[int] = WorkersOpt,
              address: Optional[str] = AddressOpt, retries: int = RetriesOpt, retry_on: str = RetryOnOpt,
              quiet: bool = QuietOpt, lab: Optional[Path] = LabOpt) -> None:
    """Show the plan, confirm, run every arm over every seed (reusing finished runs), write the sheet.

    Example: `ablab study run studies/muon-lr.toml --yes --executor local --workers 2`
    """
    from ablab.api import Lab

    runner = make_executor(executor, workers, retries, retry_on, lab_dir(lab), address)
    study = Lab(lab_dir(lab)).study(file)
    plan = study.plan()
    print_plan(plan)
    if not yes and not typer.confirm("Run this study?"):
        raise typer.Exit(1)
    with Display(quiet) as display, watching_preparation(display):
        bars = plan_bars(display, plan)
        state = study.run(runner, say=console.print, plan=plan, progress_for=bars.progress_for,
                          on_cell=bars.on_cell)
    sheet = study.sheet()
    _print_verdicts(lab_dir(lab), plan.spec.name)
    console.print(f"sheet: {sheet}")
    if state == "interrupted":
        console.print(f"interrupted; run `ablab study run {file}` again to finish only what is missing")
        raise typer.Exit(130)
    if state == "failed":
        console.print(f"some runs failed (their errors are above and in `ablab runs`); "
                      f"run `ablab study run {file}` again to retry them")
        raise typer.Exit(1)


def _print_verdicts(lab: Path, name: str) -> None:
    from ablab.analysis.verdicts import analyze

    _, results, floor = analyze(lab, name)
    for r in results:
        if r.verdict is not None:
            console.print(f"{r.arm}: [bold]{r.verdict.outcome}[/bold] — {r.verdict.reason}")
            if r.verdict.surprise:
                console.print(f"  {r.verdict.surprise}")


@study_app.command("status")
def study_status(name: str = typer.Argument(..., help="Study name."), json_out: bool = JsonOpt,
                 lab: Optional[Path] = LabOpt) -> None:
    """Progress per arm and seed: run id, status and the prediction's metric.

    With `--json`: one object with keys study, kind, baseline, metric, read_at, seeds, cells (a list of
    objects with arm, seed, run_id, status and value: the metric, or null while missing) and verdicts
    (a list of objects with arm, outcome, rule, adjustment (Holm across arms) and surprise; empty for a ladder).

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
    from ablab.analysis.verdicts import analyze

    spec = record["spec"]
    cells = [{"arm": arm, "seed": seed, "run_id": run.id if run else None, "status": run.status if run else "missing",
              "value": value} for (arm, seed), (run, value) in values.items()]
    verdicts = [] if spec.get("kind") == "ladder" else [
        {"arm": r.arm, "outcome": r.verdict.outcome, "rule": r.verdict.rule, "adjustment": r.verdict.adjustment,
         "surprise": r.verdict.surprise or None}
        for r in analyze(lab, record["name"])[1] if r.verdict is not None]
    typer.echo(to_json({"study": record["name"], "kind": spec.get("kind", "study"), "baseline": record["baseline"],
                        "metric": spec.get("metric"), "read_at": spec.get("read_at"), "seeds": spec["seeds"],
                        "cells": cells, "verdicts": verdicts}))


@study_app.command("conclude")
def study_conclude(name: str = typer.Argument(..., help="Study name."),
                   interpretation: str = typer.Option("", help="What actually happened, in your words."),
                   decision: str = typer.Option("", help="What you adopt going forward."),
                   follow_up: str = typer.Option("", "--follow-up", help="What remains unclear."),
                   lab: Optional[Path] = LabOpt) -> None:
    """Write the researcher's part of the sheet (kept when the sheet is regenerated); $EDITOR without options.

    Example: `ablab study conclude muon-lr --decision "adopt lr 0.04"`
    """
    from ablab.api import Lab

    notes = {"interpretation": interpretation, "decision": decision, "follow_up": follow_up}
    if not any(notes.values()):
        notes = _edit_in_editor(name)
    console.print(f"sheet: {Lab(lab_dir(lab)).study(name).conclude(**notes)}")


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
