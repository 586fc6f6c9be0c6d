"""`ablab idea add` and `ablab idea list`: parse, call ablab.study.ideas, print. Imported by cli only
(cli/main.py adds idea_app as `ablab idea`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ablab.cli.common import JsonOpt, LabOpt, console, lab_dir

idea_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                       help="The idea backlog: untested ideas with their origin, linked to the studies that test "
                            "them.\n\nExample: `ablab idea add \"ProRes instead of LayerNorm scaling\" --from study-x`")


@idea_app.command("add")
def idea_add(text: str = typer.Argument(..., help="The idea, in quotes."),
             origin: Optional[str] = typer.Option(None, "--from", metavar="STUDY",
                                                  help="The study that suggested it."),
             lab: Optional[Path] = LabOpt) -> None:
    """Put an untested idea in the lab's backlog; `ablab study new NAME --idea ID` starts its study.

    Example: `ablab idea add "ProRes instead of LayerNorm scaling" --from norm-scale`
    """
    from ablab.study.ideas import add_idea

    idea_id = add_idea(lab_dir(lab), text, origin)
    console.print(f"idea {idea_id} added; test it with `ablab study new NAME --idea {idea_id}`", markup=False)


@idea_app.command("list")
def idea_list(json_out: bool = JsonOpt, lab: Optional[Path] = LabOpt) -> None:
    """Every idea, oldest first: its id, text, origin, and status (untested, or the outcome of the
    study testing it: supported, not supported, inconclusive, not run).

    With `--json`: a list of objects with id, text, origin, created_at, tested_by, linked_at and status.

    Example: `ablab idea list --json`
    """
    from rich.table import Table
    from rich.text import Text

    from ablab.analysis.runs import to_json
    from ablab.study.ideas import list_ideas

    ideas = list_ideas(lab_dir(lab))
    if json_out:
        typer.echo(to_json(ideas))
        return
    if not ideas:
        console.print('No ideas yet; add one with `ablab idea add "TEXT" --from STUDY`.', markup=False)
        return
    table = Table("id", "idea", "from", "status", "created")
    for idea in ideas:
        status = f"{idea['status']} ({idea['tested_by']})" if idea["tested_by"] else idea["status"]
        table.add_row(str(idea["id"]), Text(idea["text"]), Text(idea["origin"] or ""), Text(status),
                      idea["created_at"][:10])
    console.print(table)
