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


def number_list(text: str, option: str, kind: type = float, example: str = "1e13,3e13,1e14") -> list:
    """A comma-separated option value as numbers of `kind`, or one sentence naming the option."""
    from ablab.errors import UserError

    def convert(v: str):
        number = float(v)
        if kind is int and not number.is_integer():  # 1e5 is an integer token count; 0.5 is not a seed
            raise ValueError(v)
        return kind(number)

    try:
        return [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise UserError(f"--{option} {text!r} is not a list of {noun}; write e.g. --{option} {example}.") from None
