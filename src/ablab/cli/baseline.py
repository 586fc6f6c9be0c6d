"""`ablab baseline ...`: parse, call the library, print. Imported by cli only."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ablab import config as config_mod
from ablab.cli.common import JsonOpt, LabOpt, bounded, console, lab_dir, seed_list
from ablab.cli.progress import Display, QuietOpt, StudyBars, watching_preparation
from ablab.errors import UserError
from ablab.lab import check_name
from ablab.study import baselines

baseline_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                           help="Dated baselines.\n\nExample: `ablab baseline new main -c config.toml --seeds 0,1,2`")


@baseline_app.command("new")
def baseline_new(name: str = typer.Argument(..., help="Baseline name, e.g. main."),
                 overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides."),
                 config: str = typer.Option(..., "--config", "-c", help="TOML config or preset."),
                 date: str = typer.Option("", help="YYYY-MM-DD (default: today)."),
                 seeds: str = typer.Option("0,1,2", help="Seeds every study on it will use."),
                 sizes: str = typer.Option("", help="A family of sizes, e.g. small,medium: each a [sizes.NAME] "
                                                    "table of ablab.toml or a preset's model dims."),
                 lab: Optional[Path] = LabOpt) -> None:
    """Fix a config on a date as a baseline: writes `baselines/NAME@DATE.toml` and makes it current.
    With `--sizes`, one family of those sizes (NAME@DATE/SIZE each; NAME@DATE is all of them).

    Example: `ablab baseline new main -c quickstart --seeds 0,1,2 --sizes small,medium`
    """
    check_name(name, "Baseline name", "main")
    cfg = config_mod.load(config, list(overrides or []))
    ref_date = baselines.check_date(date) if date else baselines.today()
    baselines.parse_ref(f"{name}@{ref_date}")
    set_keys = baselines.set_keys_of(config, list(overrides or []))
    family = baselines.resolve_sizes(lab_dir(lab), [s.strip() for s in sizes.split(",") if s.strip()])
    created = baselines.Baseline(name, ref_date, cfg, seed_list(seeds), set_keys=set_keys, sizes=family)
    path = baselines.create(lab_dir(lab), created)
    console.print(f"created baseline {name}@{ref_date} at {path} (current for '{name}')")
    for size in created.members() if family else []:
        console.print(f"  {size.ref}: " + ", ".join(f"{k}={v}" for k, v in family[size.size].items()), markup=False)


@baseline_app.command("run")
def baseline_run(ref: str = typer.Argument(..., help="NAME@DATE"), quiet: bool = QuietOpt,
                 lab: Optional[Path] = LabOpt) -> None:
    """Train the baseline at each of its seeds (reusing finished runs) and measure its noise floor;
    a family (NAME@DATE) at each of its sizes.

    Example: `ablab baseline run main@2026-11-21`
    """
    from ablab.api import Lab  # here, not at the top: `ablab --help` imports no torch

    for size in baselines.load(lab_dir(lab), ref).members():
        handle = Lab(lab_dir(lab)).baseline(size.ref)
        with Display(quiet) as display, watching_preparation(display):
            bars = StudyBars(display, f"baseline {handle.ref}", len(handle.seeds), lambda arm, seed: handle.config)
            floor = handle.run(say=console.print, progress_for=bars.progress_for, on_cell=bars.on_cell)
        console.print(f"seed-noise floor of {handle.ref} (std over seeds): " +
                      ", ".join(f"{k} {v:.3g}" for k, v in floor.items() if v == v))


@baseline_app.command("retrain")
def baseline_retrain(name: str = typer.Argument(..., help="Baseline name, e.g. main: its current one is retrained."),
                     date: str = typer.Option("", help="Date of the new baseline (default: today)."),
                     seeds: str = typer.Option("", help="Seeds (default: the current baseline's)."),
                     quiet: bool = QuietOpt, lab: Optional[Path] = LabOpt) -> None:
    """Make NAME@DATE from the current NAME's config on the current code (defaults it did not set
    re-resolved), train its seeds afresh and report drift against the previous date: per metric the
    difference, the noise floor, regression / improvement / no drift, and the commits between.

    Example: `ablab baseline retrain main --date 2026-12-03`
    """
    from ablab.study.retrain import previous_baseline, retrain

    previous = previous_baseline(lab_dir(lab), name)
    count = (len(seed_list(seeds)) if seeds else len(previous.seeds)) * len(previous.members())
    configs = {size.ref.partition("/")[2]: baselines.current_config(size) for size in previous.members()}
    with Display(quiet) as display, watching_preparation(display):
        bars = StudyBars(display, f"retrain {name}", count, lambda ref, seed: configs[ref.partition("/")[2]])
        reports = retrain(lab_dir(lab), name, date or None, seed_list(seeds) if seeds else None, say=console.print,
                          progress_for=bars.progress_for, on_cell=bars.on_cell)
    for report in reports:
        for line in report.lines():
            console.print(line, markup=False, soft_wrap=True)


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
