"""What the command-line modules share: the console, the --lab option, the executor options.
Imported by cli* only."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ablab.config import seeds_problem
from ablab.errors import UserError
from ablab.lab import find_lab, require_lab


class _Console(Console):
    """Lines are never wrapped by rich (the terminal wraps them), so a path or a run id printed stays
    whole and can be copied or grepped. Tables fit a terminal's width; written to a file or a pipe
    (a CI log, `> plan.txt`), a table gets its natural width instead of being squeezed to 80 columns."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.is_terminal and kwargs.get("width") is None and len(objects) == 1 and isinstance(objects[0], Table):
            natural = Measurement.get(self, self.options.update_width(10_000), objects[0]).maximum
            if natural > self.width:  # print(width=) only narrows: widen the console for this table
                before, self.width = self._width, natural
                try:
                    return super().print(*objects, **kwargs)
                finally:
                    self.width = before  # type: ignore[assignment]  (None: follow the terminal again)
        super().print(*objects, **kwargs)


console = _Console(soft_wrap=True)
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
    """The --lab folder (which must be a lab: a typo must not become a new ledger), else the nearest
    folder with ablab.toml, else the current one."""
    return require_lab(lab.resolve()) if lab else find_lab()


def bounded(low: float | None = None, high: float | None = None, example: Any = None) -> Callable:
    """An option callback refusing a number outside [low, high], or NaN or infinity, with one sentence
    naming the option and a valid value (`example`, else the default), before the command does any
    work. None (an option left unset) passes."""
    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is None or (math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)):
            return value
        name = max(param.opts, key=len)
        if low is not None and high is not None:
            allowed = f"between {low:,} and {high:,}"
        else:
            allowed = f"at least {low:,}" if low is not None else f"at most {high:,}"
        raise UserError(f"{name} must be a number {allowed}, not {value}; e.g. {name} "
                        f"{param.default if example is None else example}.")
    return check


def seed_list(text: str, option: str = "seeds") -> list[int]:
    """A comma-separated list of distinct seeds, each in [0, 2**32), or one sentence naming the option."""
    seeds = number_list(text, option, int, "0,1,2")
    problem = seeds_problem(seeds)
    if problem:
        raise UserError(f"--{option} {text!r} cannot be used: {problem}; write e.g. --{option} 0,1,2.")
    return seeds


def number_list(text: str, option: str, kind: type = float, example: str = "1e13,3e13,1e14") -> list:
    """A comma-separated option value as numbers of `kind`, or one sentence naming the option."""
    def convert(v: str):
        number = float(v)
        # 1e5 is an integer token count; 0.5 is not a seed; nan and inf are no count at all
        if not math.isfinite(number) or (kind is int and not number.is_integer()):
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


JsonOpt = typer.Option(False, "--json", help="Print one JSON document (keys as listed above) and nothing else.")
