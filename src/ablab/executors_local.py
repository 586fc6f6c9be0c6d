"""The `local` executor: N worker processes on this machine, the driver alone writing the ledger.

Workers are started with 'spawn' (a fork would copy the driver's SQLite connection and torch
threads) and each gets max(1, cpus // workers) torch threads: on a small machine more threads than
cores make every run slower. A worker writes its run directory directly (same filesystem) and
sends every ledger write through a LedgerProxy on one queue; the driver applies them to the real
Ledger in the order they arrive, and a worker's Result comes last on the same queue, after all of
its writes. Opening the Ledger inside a worker raises, so the rule cannot be broken by accident.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_mod
import signal
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Iterator

import torch

from ablab import ledger as ledger_mod
from ablab.executors import Executor, ProgressFor, Result, Task, execute
from ablab.record import RunRecord, now_iso, runs_root

# Every Ledger method a RunRecord calls while a run trains; nothing else crosses the queue.
WRITES = ("record_run", "log_metrics", "log_event", "heartbeat", "finish_run", "truncate_metrics", "record_evals")
POLL_SECONDS = 0.2


class LedgerProxy:
    """Stands in for the Ledger inside a worker: each write becomes a message to the driver."""

    def __init__(self, messages: Any, key: int):
        self.messages, self.key = messages, key

    def __getattr__(self, method: str):
        if method not in WRITES:
            raise AttributeError(f"workers only write the ledger through the driver; {method} is not one of {WRITES}")

        def send(*args: Any) -> None:
            self.messages.put(("ledger", self.key, method, args))
        return send


# -- the worker side ---------------------------------------------------------------------------------
_messages: Any = None
_stop: Any = None  # the driver's Event: set on Ctrl-C, every run checkpoints and ends interrupted
_signalled = False  # this worker got SIGINT/SIGTERM between runs


def _refuse_ledger(self, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError("A worker process tried to open the ledger; workers send their writes to the driver "
                       "through ablab.executors_local.LedgerProxy.")


def _on_signal(signum, frame) -> None:
    global _signalled
    _signalled = True


def _init_worker(messages: Any, stop: Any, threads: int) -> None:
    global _messages, _stop
    _messages, _stop = messages, stop
    torch.set_num_threads(threads)
    ledger_mod.Ledger.__init__ = _refuse_ledger  # this process never owns the database
    for sig in (signal.SIGINT, signal.SIGTERM):  # Training installs its own while a run trains
        signal.signal(sig, _on_signal)


def _work(task: Task, send_progress: bool) -> None:
    """Train one task in this worker; the Result goes on the queue after every ledger write."""
    if _stop.is_set() or _signalled:
        _messages.put(("result", task.key, Result(task, task.run_id, "not_started", {}, worker_pid=os.getpid())))
        return
    held: list = []

    def progress(step: int, row: dict | None) -> None:
        if (_stop.is_set() or _signalled) and held and not held[0].stop_signal:
            held[0].stop_signal = "SIGINT"
        if send_progress:
            _messages.put(("progress", task.key, step, row))

    result = execute(task, LedgerProxy(_messages, task.key), progress, on_training=held.append)
    result.worker_pid = os.getpid()
    _messages.put(("result", task.key, result))


# -- the driver side ---------------------------------------------------------------------------------
def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalExecutor(Executor):
    """Up to `workers` runs at once in worker processes; the driver writes the ledger."""
    name = "local"

    def run(self, tasks: list[Task], ledger: Any, progress_for: ProgressFor | None = None) -> Iterator[Result]:
        context = multiprocessing.get_context("spawn")
        messages, stop = context.Queue(), context.Event()
        threads = max(1, _cpus() // self.workers)
        driver = _Driver(ledger, tasks, progress_for, self)
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(messages, stop, threads)) as pool, _catch_signals() as signalled:
            while driver.pending or driver.in_flight:
                if signalled.is_set() and not driver.stopping:
                    driver.stop()
                if driver.stopping:
                    stop.set()
                driver.dispatch(pool)
                yield from driver.receive(messages)
                yield from driver.bury_dead_workers(messages)


class _Driver:
    """The driver's bookkeeping for one LocalExecutor.run: what waits, what trains, which run each
    task created (from its record_run message), and each task's progress callback."""

    def __init__(self, ledger: Any, tasks: list[Task], progress_for: ProgressFor | None, executor: LocalExecutor):
        self.ledger, self.progress_for, self.executor = ledger, progress_for, executor
        self.pending: deque[Task] = deque(tasks)
        self.in_flight: dict[int, tuple[Task, Future]] = {}
        self.run_ids: dict[int, str] = {}
        self.progress: dict[int, Any] = {}
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self.pending.clear()

    def dispatch(self, pool: ProcessPoolExecutor) -> None:
        while self.pending and not self.stopping and len(self.in_flight) < self.executor.workers:
            task = self.pending.popleft()
            if task.key not in self.progress:
                self.progress[task.key] = self.progress_for(task.arm, task.seed) if self.progress_for else None
            self.in_flight[task.key] = (task, pool.submit(_work, task, self.progress[task.key] is not None))

    def receive(self, messages: Any, timeout: float = POLL_SECONDS, until_quiet: bool = False) -> Iterator[Result]:
        """Apply queued messages in order, waiting up to `timeout` for the first; stop when the
        queue is empty, or after a Result (so that a free worker gets its next task) unless `until_quiet`."""
        while True:
            try:
                kind, key, *body = messages.get(timeout=timeout)
            except queue_mod.Empty:
                return
            timeout = 0.0 if not until_quiet else timeout
            if kind == "ledger":
                method, args = body
                if method == "record_run":
                    self.run_ids[key] = args[0].id
                getattr(self.ledger, method)(*args)
            elif kind == "progress" and self.progress.get(key):
                self.progress[key](*body)
            elif kind == "result":
                yield from self._finished(body[0])
                if not until_quiet:
                    return

    def _finished(self, result: Result) -> Iterator[Result]:
        self.in_flight.pop(result.task.key, None)
        again = None if self.stopping else self.executor.retry.again(result)
        if again is not None:
            self.pending.appendleft(again)
            return
        if result.status == "interrupted":  # one run was stopped: the whole study stops
            self.stop()
        if result.status != "not_started":
            yield result

    def bury_dead_workers(self, messages: Any) -> Iterator[Result]:
        """A worker that died without a Result (killed, out of memory) breaks the pool: its run and
        every other one in flight is marked interrupted, so that the next `study run` resumes it."""
        dead = [key for key, (_, future) in self.in_flight.items() if future.done() and future.exception()]
        if not dead:
            return
        yield from self.receive(messages, timeout=1.0, until_quiet=True)  # what the workers sent before they died
        self.stop()
        for key, (task, future) in list(self.in_flight.items()):
            run_id = self.run_ids.get(key, task.run_id)
            if run_id is not None and (runs_root(task.lab) / run_id).is_dir():
                record = RunRecord(run_id, runs_root(task.lab) / run_id, self.ledger)
                record.log_event("interrupted", -1, f"worker process ended without a result: {future.exception()!r}")
                record.update_result(status="interrupted", stop_reason="worker_died", finished_at=now_iso())
            self.in_flight.pop(key)
            yield Result(task, run_id, "interrupted", {}, f"worker process died: {future.exception()!r}")


@contextlib.contextmanager
def _catch_signals():
    """SIGINT and SIGTERM on the driver set an Event instead of raising, so that no ledger write
    taken off the queue is lost half way; the loop then stops the workers and drains."""
    signalled = threading.Event()
    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: signalled.set())
    try:
        yield signalled
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
