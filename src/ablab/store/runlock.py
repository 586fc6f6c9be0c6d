"""One trainer per run: an OS file lock on `.ablab/runs/<id>/.lock`, held by the process training the run.

    lock = RunLock(run_id, run_dir).acquire()   # RunBusyError (exit 2) when another process trains it
    ...                                         # train
    lock.release()                              # or let the process end: the OS drops the lock

The lock is `flock` on a file that is never deleted (deleting it would let a second process lock a
new file of the same name), so it goes away with its process however that process ends, kill -9
included: a dead trainer never blocks a resume. The file holds the holder's pid and host, which the
refusal names. Where the OS has no `flock` (not POSIX), runs go unlocked.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ablab.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK_NAME = ".lock"  # hidden: an export leaves it out, as it does temp files


class RunBusyError(UserError):
    """Another process is training this run."""


class RunLock:
    """The lock of one run directory; `acquire` takes it without waiting or refuses."""

    def __init__(self, run_id: str, run_dir: Path):
        self.run_id, self.path = run_id, run_dir / LOCK_NAME
        self.file = None

    def acquire(self) -> RunLock:
        if fcntl is None or self.file is not None:
            return self
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (kept open: it holds the lock)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise RunBusyError(f"Run {self.run_id} is already being trained by {holder}; wait for that process "
                               "to end (or stop it), then resume the run.") from None
        except OSError:  # a filesystem without locks (some network mounts): train unlocked, as before locks
            handle.close()
            return self
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        self.file = handle
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the file drops the lock
            self.file = None


def _holder(handle) -> str:
    """'pid N on HOST' of the process holding the lock, which writes them just after it locks."""
    for _ in range(20):
        handle.seek(0)
        parts = handle.read().split()
        if len(parts) == 2 and parts[0].isdigit():
            return f"pid {parts[0]} on {parts[1]}"
        time.sleep(0.05)
    return "another process"
