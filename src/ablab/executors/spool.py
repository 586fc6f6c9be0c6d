"""The spool: how a remote worker (ablab.executors.remote) talks to its driver through files in
`.ablab/spool/<session>/`, one file per task attempt, `<key>-<attempt>.msgs`.

    SpoolWriter(path).put(("ledger", key, method, args))   # a worker's channel (ablab.executors.pool)
    spool.expect(task); spool.get(timeout)                 # the driver's: the same tuples, checked

Each message is one line of JSON, never a pickle: anyone who can write the lab folder can write
these files, so the driver reads data only. Every line is checked against its kind's schema (a
ledger write's arguments against ablab.store.proxy.WRITE_SCHEMA) and turned back into the objects
the driver needs (a Run, the driver's own Task in a Result, dicts). A line that does not fit fails
its task with the reason and is never applied; files the driver did not start are never read.
Non-finite floats are written as NaN and Infinity, which the reader reads back as the same floats.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Callable

from ablab.executors.base import Result, Task
from ablab.store import proxy

STOP_FILE = "STOP"
MAX_LINE = 64 << 20  # bytes; a longer "message" is refused rather than held in memory
MESSAGE_FIELDS = {"ledger": {"kind", "key", "method", "args"}, "progress": {"kind", "key", "step", "row"},
                  "result": {"kind", "key", "run_id", "status", "result", "error", "error_types", "worker_pid"}}
RESULT_STATUSES = ("finished", "diverged", "interrupted", "failed", "not_started")


class SpoolError(ValueError):
    """A spool message the driver refuses: not JSON, an unknown kind, or arguments off their schema."""


def encode(message: tuple) -> bytes:
    """A worker's message, as ablab.executors.pool sends it, as one line of JSON."""
    kind, key, *body = message
    if kind == "ledger":
        method, args = body
        data = {"kind": kind, "key": key, "method": method, "args": proxy.to_data(method, args)}
    elif kind == "progress":
        data = {"kind": kind, "key": key, "step": body[0], "row": body[1]}
    else:
        result: Result = body[0]
        data = {"kind": kind, "key": key, "run_id": result.run_id, "status": result.status, "result": result.result,
                "error": result.error, "error_types": list(result.error_types), "worker_pid": result.worker_pid}
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


class MessageReader:
    """Turns one worker's lines back into the messages the Driver takes, for the one `task` whose file
    it is, refusing (SpoolError) anything off the schema: a message for another task, a write to a
    run that is not the task's, a second record_run. Nothing in a message is ever executed."""

    def __init__(self, task: Task):
        self.task = task
        self.run_id = task.run_id  # the run this worker may write: the one it resumes, or the one it records

    def decode(self, line: bytes) -> tuple:
        try:
            data = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise SpoolError(f"a line is not JSON ({err})") from None
        kind = data.get("kind") if isinstance(data, dict) else None
        if not isinstance(kind, str) or kind not in MESSAGE_FIELDS or set(data) != MESSAGE_FIELDS[kind]:
            raise SpoolError(f"a message is not one of {', '.join(MESSAGE_FIELDS)} with their fields: {line[:80]!r}")
        if data["key"] != self.task.key or isinstance(data["key"], bool):
            raise SpoolError(f"a message names task {data['key']!r}, not this file's task {self.task.key}")
        return getattr(self, f"_{kind}")(data)

    def _ledger(self, data: dict) -> tuple:
        method = data["method"]
        try:
            args = proxy.from_data(method, data["args"])
        except proxy.BadWrite as err:
            raise SpoolError(str(err)) from None
        if method == "record_run":
            if self.run_id is not None:
                raise SpoolError(f"a second run ({args[0].id}) is recorded beside run {self.run_id}")
            self.run_id = args[0].id
        elif proxy.runs_written(method, args) != {self.run_id}:
            raise SpoolError(f"{method} writes run {', '.join(sorted(proxy.runs_written(method, args)))}, "
                             f"not this task's run {self.run_id}")
        return "ledger", self.task.key, method, args

    def _progress(self, data: dict) -> tuple:
        step, row = data["step"], data["row"]
        if not isinstance(step, int) or isinstance(step, bool) or not (row is None or isinstance(row, dict)):
            raise SpoolError(f"a progress message has step {step!r:.40} and row {row!r:.40}")
        return "progress", self.task.key, step, row

    def _result(self, data: dict) -> tuple:
        types = data["error_types"]
        if data["status"] not in RESULT_STATUSES or data["run_id"] not in (None, self.run_id) \
                or not isinstance(data["result"], dict) or not isinstance(data["error"], (str, type(None))) \
                or not (isinstance(types, list) and all(isinstance(t, str) for t in types)) \
                or not isinstance(data["worker_pid"], (int, type(None))):
            raise SpoolError(f"a result does not fit its schema: {json.dumps(data)[:200]}")
        return "result", self.task.key, Result(self.task, data["run_id"], data["status"], data["result"],
                                               data["error"], tuple(types), data["worker_pid"])


class SpoolWriter:
    """A worker's channel: messages appended to its own file as lines of JSON, one whole line per write."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def put(self, message: tuple) -> None:
        line = memoryview(encode(message))
        while line:
            line = line[os.write(self.fd, line):]

    def close(self) -> None:
        os.close(self.fd)


class Spool:
    """The driver's side: reads the file of every task it was told to `expect`, from where it left off,
    whole lines only (a line still being written is read on a later call), each checked by the task's
    MessageReader. A refused line fails its task: `refused(task, run_id, message)` records that on the
    run (returning its result), the task's Result says why, and nothing more is read from that file.
    Files the driver does not expect are never read."""

    def __init__(self, folder: Path, refused: Callable[[Task, str | None, str], dict] = lambda *_: {}):
        self.folder, self.refused = folder, refused
        folder.mkdir(parents=True, exist_ok=True)
        self.readers: dict[str, MessageReader] = {}  # file name -> the reader of its task
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, bytes] = {}
        self.done: set[str] = set()  # files whose Result was read (or refused): their worker writes nothing more
        self.ready: deque = deque()

    def expect(self, task: Task) -> None:
        """`task` is about to start: read its worker's file."""
        self.readers[spool_file(task)] = MessageReader(task)

    def get(self, timeout: float) -> tuple:
        deadline = time.monotonic() + timeout
        while not self.ready:
            self._scan()
            left = deadline - time.monotonic()
            if self.ready:
                break
            if left <= 0:
                raise queue_mod.Empty
            time.sleep(min(0.05, left))
        message = self.ready.popleft()
        if message[0] == "refused":  # recorded now, after every earlier write of that file was applied
            _, reader, why = message
            task, run_id = reader.task, reader.run_id
            error = (f"SpoolError: the driver refused a message in {self.folder / spool_file(task)} ({why}); "
                     "nothing in it was applied, so run the study again to retry this run")
            return "result", task.key, Result(task, run_id, "failed", self.refused(task, run_id, error), error,
                                              ("SpoolError",))
        return message

    def _scan(self) -> None:
        for name, reader in list(self.readers.items()):
            path = self.folder / name
            if name in self.done or not path.is_file():
                continue
            with path.open("rb") as f:
                f.seek(self.offsets.get(name, 0))
                data = f.read()
            self.offsets[name] = self.offsets.get(name, 0) + len(data)
            buffer = self.partial.get(name, b"") + data
            *lines, buffer = buffer.split(b"\n")
            self.partial[name] = buffer
            if len(buffer) > MAX_LINE:
                lines.append(buffer)  # refused below, as not JSON
            for line in lines:
                try:
                    message = reader.decode(line)
                except SpoolError as err:
                    self.ready.append(("refused", reader, str(err)))
                    self.done.add(name)
                    break
                self.ready.append(message)
                if message[0] == "result":
                    self.done.add(name)
                    break

    def stop(self) -> None:
        (self.folder / STOP_FILE).touch()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def spool_file(task: Task) -> str:
    """The name of the file that `task`'s worker writes."""
    return f"{task.key}-{task.attempt}.msgs"
