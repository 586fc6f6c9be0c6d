"""The one write path for runs that train in worker processes: a worker holds a LedgerProxy, whose
writes become messages to the driver, and the driver applies them to the Ledger, which it alone opens.

    proxy.become_worker()                      # this process never opens the Ledger
    record = RunRecord(run_id, folder, LedgerProxy(channel, key))
    proxy.apply(ledger, method, args)          # on the driver, for each message, in order
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ablab.store import ledger as ledger_mod
from ablab.store.ledger import Ledger


class LedgerProxy:
    """Stands in for the Ledger inside a worker: each run write becomes a message on `channel`
    (anything with `put`). The run row names the worker's host and pid, so that `ablab runs` can
    tell where it trains and whether its process is alive."""

    def __init__(self, channel: Any, key: int):
        self.channel, self.key = channel, key

    def __getattr__(self, method: str):
        if method not in Ledger.RUN_WRITES:
            raise AttributeError(f"workers only write the ledger through the driver; {method} is not one of "
                                 f"{Ledger.RUN_WRITES}")

        def send(*args: Any) -> None:
            if method == "record_run":
                run = args[0]
                run.host, run.pid = socket.gethostname(), os.getpid()
            elif method == "heartbeat":
                args = (*args, socket.gethostname(), os.getpid())
            self.channel.put(("ledger", self.key, method, args))
        return send


def apply(ledger: Ledger, method: str, args: tuple) -> None:
    """A worker's write, applied by the driver; only the writes a run makes cross the channel."""
    if method not in Ledger.RUN_WRITES:
        raise ValueError(f"{method} is not a run write a worker may send")
    getattr(ledger, method)(*args)


def become_worker() -> None:
    """Mark this process as a worker: opening the Ledger here is a bug, refused with a clear error."""
    ledger_mod.WORKER_PROCESS = True
