"""Progress of every long command, drawn one way: rich bars on a terminal; off a terminal (a CI log,
a pipe) a plain line every LINE_SECONDS or every LINE_SHARE of the work, never a redrawn bar, so logs
stay readable; nothing with --quiet. The library reports through plain callbacks (a run's
(step, row), a study's finished cells, examples scored, characters tokenized); only this module
draws them. Imported by cli only."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from ablab import config as config_mod

err_console = Console(stderr=True)  # progress goes to stderr: stdout keeps the results (and --json)
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print no progress (results still print).")
LINE_SECONDS = 5.0  # off a terminal: a line at least this far apart ...
LINE_SHARE = 0.1  # ... unless the work crossed another tenth of its total


def clock(seconds: float | None) -> str:
    """Seconds as 0:42 or 1:02:03; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def count(done: float, total: float | None, unit: str) -> str:
    """'120/200 steps 60%' (or '120 steps' without a total)."""
    if unit == "s":
        return f"{clock(done)}/{clock(total)} {min(done / total, 1):.0%}" if total else clock(done)
    digits = 1 if unit == "MB" else 0
    if not total:
        return f"{done:,.{digits}f} {unit}"
    return f"{done:,.{digits}f}/{total:,.{digits}f} {unit} {min(done / total, 1):.0%}"


class Display:
    """Named bars on one console: rich bars on a terminal, throttled plain lines elsewhere, nothing
    when quiet. A bar is shown from its first update, so errors during set-up print alone."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.console = console or err_console
        self.mode = "quiet" if quiet else ("bar" if self.console.is_terminal else "lines")
        self.bar: Progress | None = None
        self.tasks: dict[str, Any] = {}  # name -> rich task id (bar mode)
        self.printed: dict[str, tuple[float, float]] = {}  # name -> (time, share) of its last line

    def update(self, name: str, done: float, total: float | None, unit: str, eta: float | None, info: str = "",
               final: bool = False) -> None:
        if self.mode == "quiet":
            return
        share = done / total if total else 0.0
        text = count(done, total, unit) + (f"  ETA {clock(eta)}" if total or eta is not None else "")
        if self.mode == "bar":
            if self.bar is None:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[text]}"),
                                    console=self.console)
                self.bar.start()
            if name not in self.tasks:
                self.tasks[name] = self.bar.add_task(name, total=total or None, text="")
            self.bar.update(self.tasks[name], completed=done, total=total or None, text=f"{text}  {info}".rstrip())
            if self._due(name, share, final):  # drawn now, not only at rich's next tick: every tenth is seen
                self.bar.refresh()
            return
        if self._due(name, share, final):
            self.console.print(f"{name}: {text}  {info}".rstrip(), markup=False, highlight=False, soft_wrap=True)

    def _due(self, name: str, share: float, final: bool) -> bool:
        """Whether `name` is due a line (or a forced redraw): its first, its last, another tenth of
        its work, or LINE_SECONDS since its last."""
        now, last = time.monotonic(), self.printed.get(name)
        if final or last is None or now - last[0] >= LINE_SECONDS or int(share / LINE_SHARE) > int(last[1] / LINE_SHARE):
            self.printed[name] = (now, share)
            return True
        return False

    def remove(self, name: str) -> None:
        """The bar of finished work leaves the screen (its plain lines stay in the log)."""
        if self.bar is not None and name in self.tasks:
            self.bar.remove_task(self.tasks.pop(name))
        self.printed.pop(name, None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "Display":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Pace:
    """ETA of work measured from its own rate since it was first seen (a resumed run starts part-way)."""

    def __init__(self) -> None:
        self.start: tuple[float, float] | None = None

    def eta(self, done: float, total: float | None) -> float | None:
        now = time.monotonic()
        if self.start is None:
            self.start = (now, done)
        moved, spent = done - self.start[1], now - self.start[0]
        if not total or moved <= 0 or spent <= 0:
            return None
        return max(total - done, 0) * spent / moved


def run_budget(cfg: Any) -> tuple[str, float | None]:
    """(unit, total) of the budget that binds a run: its steps, its tokens when max_tokens stops it
    first, else its seconds; (steps, None) when nothing bounds it."""
    t, steps = cfg.train, config_mod.budget_steps(cfg)
    if steps is not None and t.max_tokens and (not t.max_steps or t.max_tokens // cfg.tokens_per_step <= t.max_steps):
        return "tokens", float(steps * cfg.tokens_per_step)
    if steps is not None:
        return "steps", float(steps)
    return ("s", float(t.max_seconds)) if t.max_seconds else ("steps", None)


class RunBar:
    """The (step, row) progress callback of one run: done of its binding budget, %, ETA, train loss,
    the last val loss (with its step) and tokens/s. With both a step and a seconds budget, whichever
    is further along is shown: that one will end the run."""

    def __init__(self, display: Display, cfg: Any, name: str = "train"):
        self.display, self.cfg, self.name = display, cfg, name
        self.unit, self.total = run_budget(cfg)
        self.pace = Pace()
        self.seconds_at: tuple[float, float] | None = None  # (training seconds, when) of the last row
        self.last_train = self.last_val = ""

    def __call__(self, step: int, row: dict | None) -> None:
        if row is not None:
            if "elapsed" in row:
                self.seconds_at = (float(row["elapsed"]), time.monotonic())
            if "val_loss" in row:  # with its step: a val loss is measured far less often than the bar moves
                self.last_val = f"val {row['val_loss']:.4f} @{step}"
            if "train_loss" in row:
                self.last_train = f"loss {row['train_loss']:.4f}  {row['tokens_per_s']:,.0f} tok/s"
        unit, total, done = self.unit, self.total, float(step * self.cfg.tokens_per_step if self.unit == "tokens" else step)
        seconds = self._seconds()
        max_seconds = self.cfg.train.max_seconds
        if max_seconds and (unit == "s" or (total and seconds / max_seconds > done / total)):
            unit, total, done = "s", float(max_seconds), min(seconds, max_seconds)
        info = "  ".join(part for part in (self.last_train, self.last_val) if part)
        self.display.update(self.name, done, total, unit, self.pace.eta(done, total), info,
                            final=bool(total) and done >= total)

    def _seconds(self) -> float:
        if self.seconds_at is None:
            self.seconds_at = (0.0, time.monotonic())
        return self.seconds_at[0] + time.monotonic() - self.seconds_at[1]

    def close(self) -> None:
        self.display.remove(self.name)


class StudyBars:
    """An overall bar (cells done of `total`, ETA) plus one RunBar per run in flight, for a study, a
    baseline, tiers or a ladder on any executor. `config_of(arm, seed)` is a cell's config (its run's
    budget). `planned` is the plan's estimated seconds of one run per arm and `left` its runs to train
    per arm: before any run ends the ETA is what the plan has left; after, that estimate times the
    measured ratio of elapsed to planned time of the runs that ended (without a plan: the mean time
    of the runs that ended). Feed `progress_for` and `on_cell` to the library."""

    def __init__(self, display: Display, label: str, total: int, config_of: Callable[[Any, int], Any],
                 planned: dict[str, float] | None = None, left: dict[str, int] | None = None):
        self.display, self.label, self.total, self.config_of = display, label, total, config_of
        self.planned, self.left = planned, dict(left or {})
        self.done = self.ended = 0
        self.planned_ended = 0.0
        self.started = time.monotonic()
        self.bars: dict[tuple[str, int], RunBar] = {}
        self.shown = False

    def progress_for(self, arm: Any, seed: int) -> RunBar:
        if not self.shown:  # the overall bar first: it stays on top of the runs' bars
            self.show()
        bar = self.bars[(str(arm), seed)] = RunBar(self.display, self.config_of(arm, seed), f"  {arm} seed {seed}")
        return bar

    def on_cell(self, arm: Any, seed: int, status: str) -> None:
        """A cell is done: reused (already finished) or its run ended with `status`."""
        bar = self.bars.pop((str(arm), seed), None)
        if bar is not None:
            bar.close()
        self.done += 1
        if status != "reused":
            self.ended += 1
            if self.planned is not None and str(arm) in self.planned:
                self.planned_ended += self.planned[str(arm)]
                self.left[str(arm)] = max(self.left.get(str(arm), 1) - 1, 0)
        self.show()

    def eta(self) -> float | None:
        elapsed, remaining = time.monotonic() - self.started, self.total - self.done
        if remaining <= 0:
            return 0.0
        if self.planned is not None:
            planned_left = sum(self.planned.get(arm, 0.0) * n for arm, n in self.left.items())
            if self.ended and self.planned_ended > 0:
                return planned_left * elapsed / self.planned_ended
            if planned_left > 0:
                return max(planned_left - elapsed, 0.0)
        return elapsed / self.ended * remaining if self.ended else None

    def show(self) -> None:
        self.shown = True
        self.display.update(self.label, self.done, self.total, "runs", self.eta(), final=self.done >= self.total)


def plan_bars(display: Display, plan: Any) -> StudyBars:
    """StudyBars of a study's plan: its arms' configs, and the probe's or finished runs' estimate."""
    by_arm = {row.arm.name: row for row in plan.rows}
    planned, left = {}, {}
    for row in plan.rows:
        runs = row.to_train + row.to_resume
        if runs and row.est_seconds is not None:
            planned[row.arm.name], left[row.arm.name] = row.est_seconds[1] / runs, runs
    complete = all(row.est_seconds is not None for row in plan.rows)
    return StudyBars(display, f"study {plan.spec.name}", plan.total_runs,
                     lambda arm, seed: by_arm[arm].arm.config, planned if complete else None, left)


@contextmanager
def run_bar(quiet: bool, cfg: Any) -> Iterator[RunBar]:
    """The bar of one `ablab run` or `ablab resume`."""
    with Display(quiet) as display:
        yield RunBar(display, cfg)


class ExampleBars:
    """`ablab eval`'s (task, examples done, examples) callback: one bar per task."""

    def __init__(self, display: Display):
        self.display, self.paces = display, {}

    def __call__(self, task: str, done: int, total: int) -> None:
        pace = self.paces.setdefault(task, Pace())
        self.display.update(f"eval {task}", done, total, "examples", pace.eta(done, total), final=done >= total)


class PrepareBar:
    """Data preparation's (label, bytes done, bytes, documents) callback: bytes with ETA, and documents."""

    def __init__(self, display: Display):
        self.display, self.paces = display, {}

    def __call__(self, label: str, done: int, total: int, documents: int) -> None:
        pace = self.paces.setdefault(label, Pace())
        self.display.update(f"tokenizing {Path(label).name or label}", done / 1e6, total / 1e6, "MB", pace.eta(done, total),
                            f"{documents:,} documents", final=done >= total)


@contextmanager
def watching_preparation(display: Display) -> Iterator[None]:
    """Show tokenizing of any corpus prepared while the block runs (inside a run or a study too)."""
    from ablab.data.pipeline import watching  # here: `ablab --help` imports no numpy

    with watching(PrepareBar(display) if display.mode != "quiet" else None):
        yield
