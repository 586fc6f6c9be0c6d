"""The `local` executor: N worker processes on this machine, the driver alone writing the ledger.

Workers are started with 'spawn' (a fork would copy the driver's SQLite connection and torch
threads) and each gets max(1, cpus // workers) torch threads: on a small machine more threads than
cores make every run slower. Ledger writes travel on one multiprocessing queue (ablab.executors.pool).
A worker that dies breaks the whole pool, so every run in flight is then marked interrupted. A
driver that dies (kill -9 included) takes its workers with it: each watches its parent
(ablab.executors.pool.watch_parent), checkpoints its run and exits.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Iterator

from ablab.executors.base import Executor, OnRun, ProgressFor, Result, Task, error_kinds
from ablab.executors.pool import Driver, become_worker, catch_signals, cpus, watch_parent, work

_channel: Any = None
_stop: Any = None  # the driver's Event: set on Ctrl-C, every run checkpoints and ends interrupted


def _init_worker(channel: Any, stop: Any, threads: int) -> None:
    global _channel, _stop
    _channel, _stop = channel, stop
    become_worker(threads)
    watch_parent(os.getppid())  # the pool's processes are the driver's own children


def _work(task: Task, send_progress: bool) -> None:
    work(task, _channel, _stop.is_set, send_progress)


def _death(future: Future) -> tuple[str, tuple] | None:
    if not future.done() or future.exception() is None:
        return None
    err = future.exception()
    return repr(err), error_kinds(err)


class LocalExecutor(Executor):
    """Up to `workers` runs at once in worker processes; the driver writes the ledger."""
    name = "local"

    def __init__(self, workers: int | None = None, retry: Any = None, lab: Any = None, address: str | None = None):
        super().__init__(cpus() if workers is None else workers, retry, lab, address)  # by default one run per core

    def run(self, tasks: list[Task], ledger: Any, progress_for: ProgressFor | None = None,
            on_run: OnRun | None = None) -> Iterator[Result]:
        context = multiprocessing.get_context("spawn")
        channel, stop = context.Queue(), context.Event()
        threads = max(1, cpus() // self.workers)
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(channel, stop, threads)) as pool, catch_signals() as signalled:
            driver = Driver(self, ledger, tasks, progress_for, lambda task, send: pool.submit(_work, task, send),
                            _death, death_stops_all=True, on_run=on_run)
            yield from driver.loop(channel, signalled, stop.set)
