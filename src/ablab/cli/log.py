"""`ablab log ...`: the researcher's parts of reports/LOG.md (key findings, recommendations) and its
regeneration. Parse, call ablab.report.log_notes / lablog, print. Imported by cli only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ablab.cli.common import LabOpt, console, lab_dir

log_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                      help="The lab log, reports/LOG.md: your findings and recommendations, kept when it is "
                           "regenerated.\n\nExample: `ablab log findings --category \"learning rate\" \"0.04 wins\"`")


def _add(lab: Optional[Path], part: str, kind: str, text: str, study: Optional[str]) -> None:
    from ablab.report.lablog import write_log
    from ablab.report.log_notes import add_note, notes_path

    folder = lab_dir(lab)
    if study is not None:
        from ablab.analysis.verdicts import status

        status(folder, study)  # an unknown study is refused, naming the lab's studies
    add_note(folder, part, kind, text, study)
    console.print(f"kept in {notes_path(folder)}; log: {write_log(folder)}", markup=False)


@log_app.command("findings")
def findings(text: str = typer.Argument(..., help="The finding, in your words, scoped to what was tested."),
             category: str = typer.Option(..., "--category", help="learning rate, architecture, dynamics, efficiency, "
                                          "data, memory, hyperparameter, optimizer or training recipe."),
             study: Optional[str] = typer.Option(None, "--study", help="The study it rests on (named beside it)."),
             lab: Optional[Path] = LabOpt) -> None:
    """Add a key finding under its category in reports/LOG.md (kept in reports/log-notes.toml).

    Example: `ablab log findings --category "learning rate" "lr 0.04 beats 0.02 at 0.1M params" --study lr-up`
    """
    _add(lab, "findings", category, text, study)


@log_app.command("recommend")
def recommend(text: str = typer.Argument(..., help="The recommendation, in your words."),
              kind: str = typer.Option(..., "--kind", help="model, hyperparameters, procedure or future work."),
              study: Optional[str] = typer.Option(None, "--study", help="The study it rests on (named beside it)."),
              lab: Optional[Path] = LabOpt) -> None:
    """Add a recommendation of its kind to reports/LOG.md (kept in reports/log-notes.toml).

    Example: `ablab log recommend --kind procedure "three seeds before reading any verdict"`
    """
    _add(lab, "recommendations", kind, text, study)


@log_app.command("write")
def write(lab: Optional[Path] = LabOpt) -> None:
    """Regenerate reports/LOG.md from the ledger and your notes (every study sheet does this too).

    Example: `ablab log write`
    """
    from ablab.report.lablog import write_log

    console.print(f"log: {write_log(lab_dir(lab))}", markup=False)
