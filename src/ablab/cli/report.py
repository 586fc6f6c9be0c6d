"""`ablab report`: parse, call ablab.report.html, print the paths. Imported by cli only, whose top-level
app takes this command in as its own (`app.add_typer(report_app)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ablab.cli.common import LabOpt, console, lab_dir

report_app = typer.Typer(rich_markup_mode="markdown")


@report_app.command("report")
def report(out: Optional[Path] = typer.Option(None, "--out", "-o",
                                              help="Folder for index.html (default: the lab's reports/)."),
           plots: bool = typer.Option(True, help="Draw each study's loss curves (--no-plots is faster)."),
           lab: Optional[Path] = LabOpt) -> None:
    """Write the lab report: reports/index.html (one self-contained page: baselines, studies with
    verdicts, every run, benchmarks) and reports/research_report.md for the repository.

    Example: `ablab report`
    """
    from ablab.lab import check_output_path
    from ablab.report.html import build_report, gather, write_research_report

    if out is not None:
        check_output_path(out, folder=True)
    folder = lab_dir(lab)
    view = gather(folder, curves=plots)  # read the ledger and draw the figures once, for both forms
    console.print(f"html: {build_report(folder, out, plots=plots, view=view)}")
    console.print(f"markdown: {write_research_report(folder, plots=plots, view=view)}")
