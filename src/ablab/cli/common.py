"""What the command-line modules share: the console, the --lab option, the executor options.
Imported by cli* only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ablab.lab import find_lab

console = Console()
LabOpt = typer.Option(None, "--lab", help="Lab directory (default: nearest folder with ablab.toml, else here).")

# Where a study's or a ladder's runs execute (ablab.executors.base).
ExecutorOpt = typer.Option("inline", help="Where runs execute: inline (one at a time, here), local (worker "
                           "processes here), ray (a Ray cluster) or slurm (Slurm jobs; settings under "
                           "[executor.slurm] in ablab.toml).")
WorkersOpt = typer.Option(None, help="Runs at once (local: default one per core; ray, slurm: default all, "
                          "queued by the cluster).")
AddressOpt = typer.Option(None, help="The Ray cluster to join, e.g. auto or ray://head:10001 (default: "
                          "[executor.ray] address, else a local Ray instance).")
RetriesOpt = typer.Option(0, help="Times a run that raised is tried again from its last checkpoint.")
RetryOnOpt = typer.Option("Exception", help="Comma-separated exception class names worth a retry, e.g. "
                          "OutOfMemoryError,WorkerCrashedError.")


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


def make_executor(name: str, workers: Optional[int], retries: int, retry_on: str, lab: Path,
                  address: Optional[str]):
    """The executor the options ask for, checked now: a bad choice fails before a plan is probed."""
    from ablab.executors import base as executors

    retry = executors.Retry(retries, tuple(n.strip() for n in retry_on.split(",") if n.strip()))
    return executors.get(name, workers, retry, lab, address)
