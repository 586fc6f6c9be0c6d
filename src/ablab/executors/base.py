"""Executors: where a study's runs execute, never what they compute.

The driver (ablab.study.runner, through ablab.train.launch.decide) decides every cell before it is
dispatched (skip, resume, reuse by content key, or start) and turns the rest into Tasks, whose
workers train them through ablab.train.launch.open_training. An executor runs Tasks and yields a Result for
each, in the order they end:

    executor = executors.get("local", workers=2, retry=Retry(count=1))
    for result in executor.run(tasks, ledger, progress_for, on_run):
        ...

`on_run(task, run_id)` is told, on the driver, as soon as a task's run has its ledger row (before it
trains), so that a study links the run to its cells then: a study killed mid-run resumes that run.

- `inline`: one run after another in this process (what `ablab study run` always did).
- `local`: N worker processes on this machine (ablab.executors.local);
- `ray`: Ray tasks on a cluster, or a local Ray instance (ablab.executors.remote);
- `slurm`: Slurm jobs through submitit (ablab.executors.remote).
Workers never open the ledger: they send each write to the driver, which applies them in order
(ablab.executors.pool).

A run that raises ends `failed`, with the error and its traceback in result.json and the ledger,
and the other runs go on; the Retry policy says how often, and on which exceptions, a failed run
is tried again (resuming from its last checkpoint). SIGINT or SIGTERM ends the runs in flight as
`interrupted` (checkpointed, resumable) and dispatches nothing more.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from ablab.errors import UserError
from ablab.store.record import RunRecord, now_iso
from ablab.train import launch
from ablab.train.launch import Request

# (arm, seed) -> a progress callback for that run, or None; always called on the driver.
ProgressFor = Callable[[str, int], Any]
# (task, run id): the task's run record exists (its ledger row is written); called on the driver.
OnRun = Callable[["Task", str], None]


@dataclass(frozen=True)
class Task:
    """One cell's training, decided on the driver (ablab.train.launch.decide): which run it is
    (`request`), and where it sits in the study. Plain data, so that it can travel to another process."""
    key: int  # the cell's place in dispatch order (seeds outermost)
    arm: str
    seed: int
    request: Request
    attempt: int = 0  # 0 for the first try, then one more per retry

    @property
    def lab(self) -> Path:
        return self.request.lab

    @property
    def run_id(self) -> str | None:
        return self.request.run_id


@dataclass
class Result:
    task: Task
    run_id: str | None  # None when the run failed before its record was created
    status: str  # finished | diverged | interrupted | failed | not_started
    result: dict
    error: str | None = None  # "ExceptionType: message" of a failed run
    error_types: tuple[str, ...] = ()  # the exception's class and its bases, for Retry.on
    worker_pid: int | None = None


@dataclass(frozen=True)
class Retry:
    """Try a failed run again up to `count` times when its exception is (a subclass of) one named
    in `on`; a retry resumes the failed run from its last checkpoint."""
    count: int = 0
    on: tuple[str, ...] = ("Exception",)

    def __post_init__(self):
        if self.count < 0:
            raise UserError(f"The retry count must be 0 or more, not {self.count}; use --retries 0 to never retry.")

    def again(self, result: Result) -> Task | None:
        """The task that tries `result`'s cell once more, or None when the policy says no."""
        task = result.task
        if result.status != "failed" or task.attempt >= self.count:
            return None
        if not set(self.on) & set(result.error_types):
            return None
        request = dataclasses.replace(task.request, run_id=result.run_id or task.run_id)
        return dataclasses.replace(task, request=request, attempt=task.attempt + 1)


def execute(task: Task, ledger: Any, progress: Callable[[int, dict | None], None] | None = None,
            on_training: Callable[[Any], None] | None = None,
            on_record: Callable[[RunRecord], None] | None = None) -> Result:
    """Train one task through the one door (ablab.train.launch), writing through `ledger` (the
    Ledger itself, or a worker's proxy of it); `on_record` is told the run's record as soon as it
    exists. An exception ends the run `failed` with the error and traceback in its result, never raised."""
    record = training = None

    def opened(run_record: RunRecord) -> None:  # known before set-up ends, so a failure lands on it
        nonlocal record
        record = run_record
        if on_record is not None:
            on_record(run_record)
    try:
        record, training = launch.open_training(task.request, ledger, on_record=opened)
        if on_training is not None:
            on_training(training)
        outcome = training.run(progress)
        return Result(task, outcome.run_id, outcome.status, outcome.result)
    except Exception as err:  # any failure of one run: recorded on that run, the study goes on
        return _failed(task, record, training, err)


def error_kinds(err: BaseException) -> tuple[str, ...]:
    """The names of an exception's class and its bases, which Retry.on is matched against."""
    return tuple(cls.__name__ for cls in type(err).__mro__)


def _failed(task: Task, record: RunRecord | None, training: Any, err: Exception) -> Result:
    message, types = f"{type(err).__name__}: {err}", error_kinds(err)
    if record is None:
        return Result(task, None, "failed", {}, message, types)
    step = training.loop.step if training is not None else 0
    record.log_event("failed", step, message)
    result = record.update_result(status="failed", stop_reason="error", error=message,
                                  traceback=traceback.format_exc(), finished_at=now_iso())
    return Result(task, record.run_id, "failed", result, message, types)


class Executor(abc.ABC):
    """Runs Tasks and yields their Results as they end. Subclasses set `name` and `run`.
    `workers` caps the runs in flight (None: the executor's default), `lab` is where an executor
    finds its settings (ablab.toml), `address` names a cluster to join (ray)."""
    name: ClassVar[str]

    def __init__(self, workers: int | None = None, retry: Retry | None = None, lab: Path | None = None,
                 address: str | None = None):
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, not {workers}.")
        if address is not None and self.name != "ray":
            raise UserError(f"--address names a Ray cluster; it has no meaning for the {self.name} executor.")
        self.workers = workers or 1
        self.retry = retry or Retry()
        self.address = address

    @abc.abstractmethod
    def run(self, tasks: list[Task], ledger: Any, progress_for: ProgressFor | None = None,
            on_run: OnRun | None = None) -> Iterator[Result]:
        """Train `tasks` (dispatched in the order given), writing through `ledger`; yield each Result.
        `on_run(task, run_id)` is called once a task's run has its ledger row, before it trains."""


class InlineExecutor(Executor):
    """One run after another in this process, writing the ledger directly."""
    name = "inline"

    def __init__(self, workers: int | None = None, retry: Retry | None = None, lab: Path | None = None,
                 address: str | None = None):
        if workers not in (None, 1):
            raise UserError(f"The inline executor trains one run at a time, so --workers {workers} has no effect; "
                            "use --executor local to train several at once.")
        super().__init__(workers, retry, lab, address)

    def run(self, tasks: list[Task], ledger: Any, progress_for: ProgressFor | None = None,
            on_run: OnRun | None = None) -> Iterator[Result]:
        for task in tasks:
            progress = progress_for(task.arm, task.seed) if progress_for else None
            while True:
                opened = (lambda record, task=task: on_run(task, record.run_id)) if on_run else None
                result = execute(task, ledger, progress, on_record=opened)
                task = self.retry.again(result)
                if task is None:
                    break
            yield result
            if result.status == "interrupted":  # Ctrl-C reached the run: train nothing more
                return


# name -> "module:class", imported only when asked for: the engines' modules import this one.
EXECUTORS: dict[str, str] = {"inline": "ablab.executors.base:InlineExecutor",
                             "local": "ablab.executors.local:LocalExecutor",
                             "ray": "ablab.executors.remote:RayExecutor",
                             "slurm": "ablab.executors.remote:SlurmExecutor"}


def get(name: str, workers: int | None = None, retry: Retry | None = None, lab: Path | None = None,
        address: str | None = None) -> Executor:
    """The executor registered as `name`, set up for `workers` runs at once, `retry`, the settings
    of `lab`'s ablab.toml and (ray) a cluster `address`."""
    if name not in EXECUTORS:
        raise UserError(f"Unknown executor '{name}'; choose one of: {', '.join(EXECUTORS)}.")
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(workers, retry, lab, address)
