"""What the command-line modules share: the console and the --lab option. Imported by cli* only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ablab.lab import find_lab

console = Console()
LabOpt = typer.Option(None, "--lab", help="Lab directory (default: nearest folder with ablab.toml, else here).")


def lab_dir(lab: Optional[Path]) -> Path:
    """The --lab folder, else the nearest folder with ablab.toml, else the current one."""
    return lab.resolve() if lab else find_lab()
