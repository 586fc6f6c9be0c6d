"""`ablab runs` (and `runs rm`), `show`, `diff`, `compare`, `note` and `tag`: parse, call the library, print.
Imported by cli only, whose top-level app takes these commands in as its own."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ablab.cli.common import LabOpt, console, lab_dir

runs_app = typer.Typer(rich_markup_mode="markdown")


# `ablab runs` lists; `ablab runs rm` removes: a group whose callback lists when no subcommand follows,
# so every listing option works as it did when `runs` was a plain command.
runs_group = typer.Typer(rich_markup_mode="markdown", subcommand_metavar="[COMMAND [ARGS]...]")
runs_app.add_typer(runs_group, name="runs")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document (keys as listed above) and nothing else.")


@runs_group.callback(invoke_without_command=True)
def runs_(ctx: typer.Context,
          status: Optional[str] = typer.Option(None, help="running, finished, diverged, interrupted or failed."),
          name: Optional[str] = typer.Option(None, help="Glob on the run name, e.g. 'wide*'."),
          tag: Optional[str] = typer.Option(None, help="Only runs with this tag."),
          where: Optional[List[str]] = typer.Option(None, help="A config value, e.g. model.d_model=384; repeatable."),
          columns: Optional[str] = typer.Option(None, "--columns", help="Config keys to add as columns, "
                                                "comma-separated, e.g. model.d_model,optim.lr (`ablab config keys`)."),
          sort: Optional[str] = typer.Option(None, help="A column or final metric, e.g. val_loss; -val_loss descends."),
          desc: bool = typer.Option(False, "--desc", help="Sort descending."),
          limit: Optional[int] = typer.Option(None, help="At most this many rows (without --sort: the newest)."),
          fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
          lab: Optional[Path] = LabOpt) -> None:
    """List runs: id, name, status, created, steps, tokens, final and best val loss, tokens/s, params, tags,
    then any `--columns`. `ablab runs rm RUN` removes runs.

    Example: `ablab runs --where model.d_model=384 --columns optim.lr --sort val_loss --limit 10`
    """
    if ctx.invoked_subcommand is not None:
        return
    from ablab.analysis import runs as runs_mod

    extra = [key.strip() for key in (columns or "").split(",") if key.strip()]
    table = runs_mod.list_runs(lab_dir(lab), status, name, tag, where or [], sort, desc, limit, extra)
    if fmt == "table" and not table.rows:
        console.print("no runs match" if status or name or tag or where else "no runs in this lab yet")
    elif fmt == "table":
        _print_table(table)
    else:
        typer.echo(runs_mod.render(table, fmt))


@runs_group.command("rm")
def runs_rm(run_ids: List[str] = typer.Argument(..., metavar="RUN...", help="Run ids (unique prefixes are enough)."),
            force: bool = typer.Option(False, "--force", help="Also remove runs a study or a baseline is built on."),
            yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking for confirmation."),
            lab: Optional[Path] = LabOpt) -> None:
    """Remove runs: their ledger rows (run, metrics, events, notes, tags, benchmark results) and directories.

    Every run is checked first, and nothing is removed if one is refused: a run still training, or one
    that a study or a baseline is built on (unless `--force`). Other runs' rows are never touched.

    Example: `ablab runs rm 3f2a 9c1d --yes`
    """
    from ablab.store.remove import plan_removal, remove_runs

    removals = plan_removal(lab_dir(lab), run_ids, force)
    for r in removals:
        also = f"; belongs to {', '.join(r.links)}" if r.links else ""
        console.print(f"{r.run_id} {r.name} ({r.status}){also}", markup=False, highlight=False)
    what = "this run and its directory" if len(removals) == 1 else f"these {len(removals)} runs and their directories"
    if not yes and not typer.confirm(f"Remove {what}?"):
        console.print("nothing removed")
        raise typer.Exit(1)
    for r in remove_runs(lab_dir(lab), removals):
        console.print(f"removed {r.run_id} ({sum(r.rows.values())} ledger rows and its directory)")


@runs_app.command()
def show(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
         json_out: bool = JsonOpt, lab: Optional[Path] = LabOpt) -> None:
    """Everything about one run: config, provenance, final and best metrics, events, notes, tags.

    With `--json`: one object with keys run (id, name, status, created, finished, stop_reason, steps,
    tokens, train_seconds, params, seed, tags), config (the run's config, one object per section),
    provenance, metrics (final_<metric>, best_val_loss, best_at_step), and the lists benchmarks,
    events, notes and tag_history (time, action add or remove, tag).

    Example: `ablab show 3f2a`
    """
    from ablab.analysis import runs as runs_mod

    sections = runs_mod.show(lab_dir(lab), run_id)
    if json_out:
        typer.echo(runs_mod.to_json(runs_mod.as_document(sections)))
    else:
        _print_sections(sections)


@runs_app.command()
def diff(run_a: str = typer.Argument(..., help="Run id a."), run_b: str = typer.Argument(..., help="Run id b."),
         json_out: bool = JsonOpt, lab: Optional[Path] = LabOpt) -> None:
    """What differs between two runs: config keys, provenance, and final metrics (a, b, b-a).

    With `--json`: one object with the lists runs (run, id, name), config (key, a, b), provenance
    (key, a, b) and metrics (metric, a, b, b-a).

    Example: `ablab diff 3f2a 9c1d`
    """
    from ablab.analysis import runs as runs_mod

    sections = runs_mod.diff(lab_dir(lab), run_a, run_b)
    if json_out:
        typer.echo(runs_mod.to_json(runs_mod.as_document(sections)))
    else:
        _print_sections(sections)


@runs_app.command()
def compare(run_ids: List[str] = typer.Argument(..., help="Run ids."),
            out: Path = typer.Option(Path("compare.png"), "--out", "-o", help="PNG to write."),
            x: Optional[str] = typer.Option(None, "--x", help="steps, tokens or time (default: a panel of each)."),
            lab: Optional[Path] = LabOpt) -> None:
    """Plot the runs' train and val loss curves side by side to a PNG, and print their final metrics.

    Example: `ablab compare 3f2a 9c1d --x tokens --out reports/wide-vs-base.png`
    """
    from ablab.analysis import runs as runs_mod
    from ablab.lab import check_output_path
    from ablab.report.plots import plot_curves

    check_output_path(out)
    curves, table = runs_mod.compare(lab_dir(lab), run_ids)
    plot_curves(curves, out, x)
    _print_table(table)
    console.print(f"wrote {out}", markup=False, highlight=False)


@runs_app.command()
def note(run_id: str = typer.Argument(..., help="Run id."), text: str = typer.Argument(..., help="The note."),
         lab: Optional[Path] = LabOpt) -> None:
    """Attach a dated note to a run (shown by `ablab show`).

    Example: `ablab note 3f2a "loss spike at step 300 came from a bad batch"`
    """
    from ablab.analysis import runs as runs_mod

    console.print(f"noted on {runs_mod.add_note(lab_dir(lab), run_id, text)}")


@runs_app.command()
def tag(run_id: str = typer.Argument(..., help="Run id."),
        tag_name: Optional[str] = typer.Argument(None, metavar="[TAG]", help="One word, e.g. baseline."),
        remove: Optional[str] = typer.Option(None, "--remove", metavar="TAG", help="Take this tag off the run."),
        lab: Optional[Path] = LabOpt) -> None:
    """Tag a run, or take a tag off with `--remove TAG`; `ablab runs --tag TAG` lists the runs with it.
    Both are kept with their time in the run's tag history (`ablab show`): a removal never erases it.

    Example: `ablab tag 3f2a baseline`
    """
    from ablab.analysis import runs as runs_mod
    from ablab.errors import UserError

    if (tag_name is None) == (remove is None):
        raise UserError("Give a tag to add (`ablab tag RUN TAG`) or one to remove (`ablab tag RUN --remove TAG`), "
                        "not both or neither.")
    if remove is not None:
        console.print(f"untagged {runs_mod.remove_tag(lab_dir(lab), run_id, remove)} {remove}", markup=False)
    else:
        console.print(f"tagged {runs_mod.add_tag(lab_dir(lab), run_id, tag_name)} {tag_name}", markup=False)


def _print_table(table) -> None:
    """A runs.Table as a rich table; numeric columns right-aligned, cells never read as markup.
    A table wider than the terminal is printed whole (the terminal wraps it), never cut to ellipses."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table as RichTable
    from rich.text import Text

    from ablab.analysis.runs import cell

    view = RichTable(show_edge=False, box=box.SIMPLE_HEAD)
    for key in table.columns:
        numeric = any(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool) for row in table.rows)
        view.add_column(key, justify="right" if numeric else "left", no_wrap=key == "id")
    for row in table.rows:
        view.add_row(*(Text(cell(key, row.get(key))) for key in table.columns))
    natural = Measurement.get(console, console.options.update_width(10_000), view).maximum
    (console if natural <= console.width else Console(width=natural)).print(view)


def _print_sections(sections) -> None:
    """Titled runs.Tables as aligned plain lines; the last column never wraps, so long values
    (fingerprints, commands) stay whole and greppable."""
    from rich.markup import escape

    from ablab.analysis.runs import cell

    for title, table in sections.items():
        console.print(f"[bold]{escape(title)}[/bold]")
        rows = [[cell(key, row.get(key)) for key in table.columns] for row in table.rows]
        if not rows:
            console.print("  (none)")
            continue
        if table.columns[:2] != ["key", "value"]:
            rows.insert(0, list(table.columns))
        widths = [max(len(r[i]) for r in rows) for i in range(len(table.columns) - 1)]
        for r in rows:
            line = "  ".join([""] + [v.ljust(w) for v, w in zip(r, widths)] + [r[-1]])
            console.print(line, markup=False, highlight=False, soft_wrap=True)
