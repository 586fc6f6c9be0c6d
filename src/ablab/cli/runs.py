"""`ablab runs`, `show`, `diff`, `compare`, `note` and `tag`: parse, call ablab.analysis.runs, print.
Imported by cli only, whose top-level app takes these commands in as its own."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ablab.cli.common import LabOpt, console, lab_dir

runs_app = typer.Typer(rich_markup_mode="markdown")


@runs_app.command("runs")
def runs_(status: Optional[str] = typer.Option(None, help="running, finished, diverged, interrupted or failed."),
          name: Optional[str] = typer.Option(None, help="Glob on the run name, e.g. 'wide*'."),
          tag: Optional[str] = typer.Option(None, help="Only runs with this tag."),
          where: Optional[List[str]] = typer.Option(None, help="A config value, e.g. model.d_model=384; repeatable."),
          sort: Optional[str] = typer.Option(None, help="A column or final metric, e.g. val_loss; -val_loss descends."),
          desc: bool = typer.Option(False, "--desc", help="Sort descending."),
          limit: Optional[int] = typer.Option(None, help="At most this many rows (without --sort: the newest)."),
          fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
          lab: Optional[Path] = LabOpt) -> None:
    """List runs: id, name, status, created, steps, tokens, final and best val loss, tokens/s, params, tags.

    Example: `ablab runs --where model.d_model=384 --sort val_loss --limit 10`
    """
    from ablab.analysis import runs as runs_mod

    table = runs_mod.list_runs(lab_dir(lab), status, name, tag, where or [], sort, desc, limit)
    if fmt == "table" and not table.rows:
        console.print("no runs match" if status or name or tag or where else "no runs in this lab yet")
    elif fmt == "table":
        _print_table(table)
    else:
        typer.echo(runs_mod.render(table, fmt))


@runs_app.command()
def show(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
         lab: Optional[Path] = LabOpt) -> None:
    """Everything about one run: config, provenance, final and best metrics, events, notes, tags.

    Example: `ablab show 3f2a`
    """
    from ablab.analysis import runs as runs_mod

    _print_sections(runs_mod.show(lab_dir(lab), run_id))


@runs_app.command()
def diff(run_a: str = typer.Argument(..., help="Run id a."), run_b: str = typer.Argument(..., help="Run id b."),
         lab: Optional[Path] = LabOpt) -> None:
    """What differs between two runs: config keys, provenance, and final metrics (a, b, b-a).

    Example: `ablab diff 3f2a 9c1d`
    """
    from ablab.analysis import runs as runs_mod

    _print_sections(runs_mod.diff(lab_dir(lab), run_a, run_b))


@runs_app.command()
def compare(run_ids: List[str] = typer.Argument(..., help="Run ids."),
            out: Path = typer.Option(Path("compare.png"), "--out", "-o", help="PNG to write."),
            x: Optional[str] = typer.Option(None, "--x", help="steps, tokens or time (default: a panel of each)."),
            lab: Optional[Path] = LabOpt) -> None:
    """Plot the runs' train and val loss curves side by side to a PNG, and print their final metrics.

    Example: `ablab compare 3f2a 9c1d --x tokens --out reports/wide-vs-base.png`
    """
    from ablab.analysis import runs as runs_mod
    from ablab.report.plots import plot_curves

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
def tag(run_id: str = typer.Argument(..., help="Run id."), tag_name: str = typer.Argument(..., metavar="TAG",
        help="One word, e.g. baseline."), lab: Optional[Path] = LabOpt) -> None:
    """Tag a run; `ablab runs --tag TAG` lists the runs with it.

    Example: `ablab tag 3f2a baseline`
    """
    from ablab.analysis import runs as runs_mod

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
