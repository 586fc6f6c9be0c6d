"""What every executor with worker processes shares: the worker's side (`become_worker`, `work`,
with a LedgerProxy from ablab.store.proxy) and the driver's loop (Driver), whatever starts the workers (a process pool, Ray, Slurm).

A worker writes its run directory directly (the lab is on a filesystem the workers share) and puts
every ledger write, progress row and finally its Result on a channel: anything with `put(message)`
on the worker side and `get(timeout)` raising queue.Empty on the driver's. The driver applies the
ledger writes in the order each worker sent them, so it alone ever writes the ledger. A driver killed
outright takes the writes it had not applied with it; the run files hold them, and the ledger is
reconciled with them when it is next opened (ablab.store.reconcile). Workers that watch their
driver (`watch_parent`) end with it.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import signal
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator

import torch

from ablab.executors.base import Executor, OnRun, ProgressFor, Result, Task, execute
from ablab.store import proxy
from ablab.store.record import RunRecord, now_iso, runs_root

POLL_SECONDS = 0.2
ORPHAN_GRACE_SECONDS = 5.0  # a worker whose driver died gives its run this long to checkpoint, then exits


# -- the worker side ---------------------------------------------------------------------------------
_signalled = False  # this worker got SIGINT/SIGTERM between runs
_orphaned = False  # this worker's driver is gone (watch_parent)
_training = threading.Event()  # set while this worker trains a task


def _on_signal(signum, frame) -> None:
    global _signalled
    _signalled = True


def become_worker(threads: int) -> None:
    """Set this process up to train runs for a driver: `threads` torch threads, no ledger of its own,
    and SIGINT/SIGTERM between runs noted rather than fatal (Training handles them while it trains)."""
    torch.set_num_threads(threads)
    proxy.become_worker()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread (some Ray workers): the driver's stop still reaches us
            pass


def watch_parent(parent_pid: int) -> None:
    """End this worker soon after its driver `parent_pid` dies, however it dies: a driver killed with
    kill -9 cannot stop its workers, and a pool worker would wait for its next task forever. A daemon
    thread polls the parent's pid; once it changes, the run in training is asked to stop (it checkpoints
    and ends interrupted, its files saying so), and the process exits when it has, or after
    ORPHAN_GRACE_SECONDS."""
    def watch() -> None:
        global _orphaned
        while os.getppid() == parent_pid:
            time.sleep(POLL_SECONDS)
        _orphaned = True
        deadline = time.monotonic() + ORPHAN_GRACE_SECONDS
        while _training.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(1)  # no driver reads what is left on the channel: nothing to flush, nothing to wait for

    threading.Thread(target=watch, name="ablab-watch-driver", daemon=True).start()


def work(task: Task, channel: Any, stopped: Callable[[], bool], send_progress: bool) -> None:
    """Train one task in this worker; its Result goes on `channel` after every ledger write.
    `stopped()` says the driver asked every run to stop (checked before and during training)."""
    if stopped() or _signalled or _orphaned:
        channel.put(("result", task.key, Result(task, task.run_id, "not_started", {}, worker_pid=os.getpid())))
        return
    held: list = []

    def progress(step: int, row: dict | None) -> None:
        if held and not held[0].stop_signal and (_signalled or _orphaned or stopped()):
            held[0].stop_signal = "the driver's death" if _orphaned else "SIGINT"
        if send_progress:
            channel.put(("progress", task.key, step, row))

    _training.set()
    try:
        result = execute(task, proxy.LedgerProxy(channel, task.key), progress, on_training=held.append)
        result.worker_pid = os.getpid()
        channel.put(("result", task.key, result))
    finally:
        _training.clear()


# -- the driver side ---------------------------------------------------------------------------------
def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Driver:
    """The driver's bookkeeping for one Executor.run: what waits, what trains, which run each task
    created (from its record_run message), and each task's progress callback.

    `submit(task, send_progress)` starts a task on a worker and returns a handle; `death(handle)` is
    None while the handle runs or ended normally, else (message, exception class names) of a worker
    that ended without a Result. When `death_stops_all` (a process pool that one death breaks) every
    run in flight is marked interrupted and the study stops; otherwise only that run fails.
    `on_run(task, run_id)` is called as soon as a task's record_run has been applied."""

    def __init__(self, executor: Executor, ledger: Any, tasks: list[Task], progress_for: ProgressFor | None,
                 submit: Callable[[Task, bool], Any], death: Callable[[Any], tuple[str, tuple] | None],
                 death_stops_all: bool = False, on_run: OnRun | None = None):
        self.executor, self.ledger, self.progress_for, self.on_run = executor, ledger, progress_for, on_run
        self.submit, self.death, self.death_stops_all = submit, death, death_stops_all
        self.pending: deque[Task] = deque(tasks)
        self.in_flight: dict[int, tuple[Task, Any]] = {}
        self.run_ids: dict[int, str] = {}
        self.progress: dict[int, Any] = {}
        self.stopping = False

    def loop(self, channel: Any, signalled: Any, on_stop: Callable[[], None]) -> Iterator[Result]:
        """Dispatch, apply messages and yield Results until every task has ended; on a signal (or an
        interrupted run) call `on_stop` once and let the runs in flight checkpoint and end."""
        stop_sent = False
        while self.pending or self.in_flight:
            if signalled.is_set() and not self.stopping:
                self.stop()
            if self.stopping and not stop_sent:
                on_stop()
                stop_sent = True
            self.dispatch()
            yield from self.receive(channel)
            yield from self.bury_dead_workers(channel)

    def stop(self) -> None:
        self.stopping = True
        self.pending.clear()

    def dispatch(self) -> None:
        while self.pending and not self.stopping and len(self.in_flight) < self.executor.workers:
            task = self.pending.popleft()
            if task.key not in self.progress:
                self.progress[task.key] = self.progress_for(task.arm, task.seed) if self.progress_for else None
            self.in_flight[task.key] = (task, self.submit(task, self.progress[task.key] is not None))

    def receive(self, channel: Any, timeout: float = POLL_SECONDS, until_quiet: bool = False) -> Iterator[Result]:
        """Apply queued messages in order, waiting up to `timeout` for the first; stop when the
        channel is empty, or after a Result (so that a free worker gets its next task) unless `until_quiet`."""
        while True:
            try:
                kind, key, *body = channel.get(timeout=timeout)
            except queue_mod.Empty:
                return
            timeout = 0.0 if not until_quiet else timeout
            if kind == "ledger":
                method, args = body
                if method == "record_run":
                    self.run_ids[key] = args[0].id
                proxy.apply(self.ledger, method, args)
                if method == "record_run" and self.on_run and key in self.in_flight:
                    self.on_run(self.in_flight[key][0], args[0].id)
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

    def bury_dead_workers(self, channel: Any) -> Iterator[Result]:
        """Runs whose worker ended without a Result (killed, out of memory, a failed job)."""
        dead = {key: death for key, (_, handle) in self.in_flight.items() if (death := self.death(handle))}
        if not dead:
            return
        yield from self.receive(channel, timeout=1.0, until_quiet=True)  # what the workers sent before they died
        if self.death_stops_all:
            self.stop()
            dead = {key: dead.get(key) or ("the worker pool broke", ("BrokenProcessPool",)) for key in self.in_flight}
        for key, (message, types) in dead.items():
            if key in self.in_flight:
                yield from self._bury(key, message, types)

    def _bury(self, key: int, message: str, types: tuple) -> Iterator[Result]:
        task, _ = self.in_flight[key]
        run_id = self.run_ids.get(key, task.run_id)
        if self.stopping and run_id is None:  # cancelled before it began: nothing to record
            yield from self._finished(Result(task, None, "not_started", {}))
            return
        status = "interrupted" if self.death_stops_all else "failed"
        result: dict = {}
        if run_id is not None and (runs_root(task.lab) / run_id).is_dir():
            record = RunRecord(run_id, runs_root(task.lab) / run_id, self.ledger)
            ended = record.result()
            if ended.get("status") in ("finished", "diverged"):  # it ended before its worker died: keep that
                record.write_result(ended)
                yield from self._finished(Result(task, run_id, ended["status"], ended))
                return
            record.log_event(status, -1, f"worker ended without a result: {message}")
            result = record.update_result(status=status, stop_reason="worker_died", error=message,
                                          traceback=message, finished_at=now_iso())
        yield from self._finished(Result(task, run_id, status, result, f"worker died: {message}", types))


@contextlib.contextmanager
def catch_signals():
    """SIGINT and SIGTERM on the driver set an Event instead of raising, so that no ledger write
    taken off the channel is lost half way; the loop then stops the workers and drains."""
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
