"""The one write path for runs that train in worker processes: a worker holds a LedgerProxy, whose
writes become messages to the driver, and the driver applies them to the Ledger, which it alone opens.

    proxy.become_worker()                      # this process never opens the Ledger
    record = RunRecord(run_id, folder, LedgerProxy(channel, key))
    proxy.apply(ledger, method, args)          # on the driver, for each message, in order

When the messages travel through files (ablab.executors.remote's spool), a write's arguments are
JSON data: `to_data(method, args)` on the worker, `from_data(method, data)` on the driver, which
checks every argument against the schema of its method (WRITE_SCHEMA) before anything is applied.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any, Callable

from ablab.store import ledger as ledger_mod
from ablab.store.ledger import Ledger, Run
from ablab.store.record import STATUSES, is_run_id
from ablab.store.schema import EVAL_KEY


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


# -- run writes as JSON data, checked on the way back ----------------------------------------------
class BadWrite(ValueError):
    """A write whose arguments do not fit its method's schema; the message says which one and why."""


def to_data(method: str, args: tuple) -> list:
    """A run write's arguments as JSON data: a Run becomes the dict of its fields."""
    return [dataclasses.asdict(arg) if isinstance(arg, Run) else arg for arg in args]


def from_data(method: str, data: Any) -> tuple:
    """The arguments of a run write read back from JSON data, each checked against WRITE_SCHEMA;
    raises BadWrite for an unknown method or any argument that does not fit."""
    if method not in WRITE_SCHEMA:
        raise BadWrite(f"{method!r} is not a run write a worker may send (one of {', '.join(WRITE_SCHEMA)})")
    checks = WRITE_SCHEMA[method]
    if not isinstance(data, list) or len(data) != len(checks):
        raise BadWrite(f"{method} takes {len(checks)} arguments, not {data!r:.80}")
    return tuple(check(f"{method} argument {i + 1}", value) for i, (check, value) in enumerate(zip(checks, data)))


def runs_written(method: str, args: tuple) -> set[str]:
    """The ids of the runs a checked write touches (a worker may only touch its own)."""
    if method == "record_run":
        return {args[0].id}
    if method == "record_evals":
        return {row["run_id"] for row in args[0]}
    return {args[0]}


def _fits(kinds: tuple, what: str) -> Callable[[str, Any], Any]:
    """A check that the value is one of `kinds` (a bool is not a number here)."""
    def check(where: str, value: Any) -> Any:
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise BadWrite(f"{where} must be {what}, not {value!r:.80}")
        return value
    return check


_str, _int, _dict = _fits((str,), "a string"), _fits((int,), "an integer"), _fits((dict,), "an object")
_opt_str, _opt_int = _fits((str, type(None)), "a string or null"), _fits((int, type(None)), "an integer or null")
_opt_number = _fits((int, float, type(None)), "a number or null")


def _run_id(where: str, value: Any) -> str:
    if not is_run_id(value):
        raise BadWrite(f"{where} must be a run id, not {value!r:.80}")
    return value


def _status(where: str, value: Any) -> str:
    if value not in STATUSES:
        raise BadWrite(f"{where} must be one of {', '.join(STATUSES)}, not {value!r:.80}")
    return value


def _with(fields: dict[str, Callable], exact: bool = False) -> Callable[[str, Any], dict]:
    """A check of an object holding `fields` (each checked); with `exact`, nothing else."""
    def check(where: str, value: Any) -> dict:
        _dict(where, value)
        missing, extra = set(fields) - value.keys(), value.keys() - set(fields)
        if missing or (exact and extra):
            raise BadWrite(f"{where} lacks {sorted(missing)} or has unknown {sorted(extra) if exact else []}")
        for name, field_check in fields.items():
            field_check(f"{where}.{name}", value[name])
        return value
    return check


def _list_of(item: Callable[[str, Any], Any]) -> Callable[[str, Any], list]:
    def check(where: str, value: Any) -> list:
        if not isinstance(value, list):
            raise BadWrite(f"{where} must be a list, not {value!r:.80}")
        return [item(f"{where}[{i}]", v) for i, v in enumerate(value)]
    return check


_RUN_FIELDS = {"id": _run_id, "name": _str, "status": _status, "created_at": _str, "finished_at": _opt_str,
               "config_hash": _str, "seed": _int, "data_fingerprint": _opt_str, "code_version": _opt_str,
               "content_key": _opt_str, "config": _dict, "provenance": _dict, "result": _dict, "host": _opt_str,
               "pid": _opt_int, "heartbeat": _opt_number, "tags": _list_of(_str)}
assert set(_RUN_FIELDS) == {f.name for f in dataclasses.fields(Run)}, "the schema names every field of Run"


def _run(where: str, value: Any) -> Run:
    return Run(**_with(_RUN_FIELDS, exact=True)(where, value))


_eval_row = _with({**{key: _fits((str, int, type(None)), "a string, an integer or null") for key in EVAL_KEY},
                   "run_id": _run_id, "created_at": _str, "data": _dict}, exact=True)

# Each run write's arguments, in order (ablab.store.ledger.Ledger's signatures, as a proxy sends them).
WRITE_SCHEMA: dict[str, tuple[Callable[[str, Any], Any], ...]] = {
    "record_run": (_run,),
    "log_metrics": (_run_id, _list_of(_with({"step": _int}))),
    "log_event": (_run_id, _with({"step": _int, "kind": _str, "time": _str})),
    "heartbeat": (_run_id, _opt_str, _opt_int),
    "finish_run": (_run_id, _status, _dict, _opt_str),
    "truncate_metrics": (_run_id, _int),
    "record_evals": (_list_of(_eval_row),),
    "record_samples": (_run_id, _list_of(_with({"step": _int, "prompt": _str, "mode": _str, "text": _str}))),
    "truncate_samples": (_run_id, _int),
}
assert set(WRITE_SCHEMA) == set(Ledger.RUN_WRITES), "every run write has a schema"
