"""The command line's one error boundary: what a user can cause ends in one sentence and exit 2
(130 for Ctrl-C); anything else is a bug, reported in one sentence with the path of a crash report
that holds the traceback, and exit 1. No traceback ever reaches the terminal."""

from __future__ import annotations

import datetime
import itertools
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

import click
import typer

import ablab
from ablab.data.cache import cache_dir
from ablab.errors import UserError

# typer >= 0.26 raises its own vendored copies of click's exceptions, older typer click's own:
# both are caught, whichever this install has (typer.BadParameter is a vendored UsageError).
USAGE_ERRORS = tuple({click.UsageError, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")})
CLICK_ERRORS = tuple({click.ClickException, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})
ABORTS = tuple({click.exceptions.Abort, typer.Abort, KeyboardInterrupt})


def crash_dir() -> Path:
    """Where crash reports go: `$ABLAB_CACHE/crash-reports` (default ~/.cache/ablab/crash-reports)."""
    return cache_dir() / "crash-reports"


def run(app: Callable[..., object]) -> int:
    """Run the typer `app` (not in standalone mode) and return the process's exit code."""
    try:
        code = app(prog_name="ablab", standalone_mode=False)  # the same name under `python -m ablab`
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except USAGE_ERRORS as err:
        if err.ctx is not None and err.__class__.__name__ == "NoArgsIsHelpError":  # bare `ablab`, `ablab study`
            err.ctx.get_help()  # typer prints its help itself
            return 2
        print(f"error: {err.format_message().rstrip('.')}; see `{_command(err)} --help`.", file=sys.stderr)
        return 2
    except CLICK_ERRORS as err:  # e.g. a file option that cannot be opened
        print(f"error: {err.format_message()}", file=sys.stderr)
        return 2
    except ABORTS:
        print("stopped.", file=sys.stderr)
        return 130
    except Exception:  # anything else is ablab's fault, not the user's
        report = write_crash_report()
        print(f"error: ablab hit an internal error, which is a bug; the traceback is in {report} "
              "(please attach it to a bug report).", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


def _command(err: Exception) -> str:
    ctx = getattr(err, "ctx", None)
    return ctx.command_path if ctx is not None else "ablab"


def write_crash_report() -> Path:
    """Write the exception being handled, with the command and versions, to a new crash report."""
    folder = crash_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    for n in itertools.count():  # exclusive creation: two crashes never share a report
        path = folder / f"crash-{stamp}-{os.getpid()}{f'-{n}' if n else ''}.txt"
        try:
            with path.open("x", encoding="utf-8") as report:
                report.write(f"ablab {ablab.__version__}, Python {sys.version.split()[0]}\n"
                             f"command: {' '.join(sys.argv)}\ncwd: {os.getcwd()}\n\n{traceback.format_exc()}")
            return path
        except FileExistsError:
            continue


def print_version(value: bool) -> None:
    """The eager `--version` option's callback."""
    if value:
        print(f"ablab {ablab.__version__}")
        raise typer.Exit()
