"""`ablab correlate`, `ablab scaling …` and `ablab ladder`: analyses across runs. Parse, call, print."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ablab.cli_common import LabOpt, console, lab_dir

analysis_app = typer.Typer()


@analysis_app.command("correlate")
def correlate(study: Optional[str] = typer.Option(None, help="Only this study's runs."),
              tag: Optional[str] = typer.Option(None, help="Only runs with this tag."),
              method: str = typer.Option("spearman", help="spearman or pearson."),
              metric: str = typer.Option("val_loss", help="The runs' final metric set beside the tasks."),
              out: Optional[Path] = typer.Option(None, "--out", "-o", help="Heatmap to write (PNG and SVG)."),
              lab: Optional[Path] = LabOpt) -> None:
    """Correlations of benchmark accuracies with each other and with val loss, over the runs scored
    with `ablab eval` (or eval.tasks, or a study's benchmarks): a matrix, and a heatmap with --out.

    Example: `ablab correlate --study arch-scaling --method spearman --out reports/task-corr.png`
    """
    from ablab.analysis import correlations

    table = correlations(lab_dir(lab), study, tag, method, metric)
    width = max(len(n) for n in table.names) + 2
    console.print(f"{method} correlations over {table.runs} runs (pairwise complete)")
    console.print("".ljust(width) + "".join(n[:9].rjust(10) for n in table.names), markup=False, soft_wrap=True)
    for i, name in enumerate(table.names):
        cells = "".join(("" if math.isnan(v) else f"{v:+.3f}").rjust(10) for v in table.r[i])
        console.print(name.ljust(width) + cells, markup=False, soft_wrap=True)
    if out is not None:
        from ablab.figures import correlation_heatmap

        for path in correlation_heatmap(table.r.tolist(), table.names, out, title=f"correlation ({method})"):
            console.print(f"wrote {path}", markup=False, highlight=False)
