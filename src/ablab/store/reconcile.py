"""One record of a run, whatever kill comes between its two halves: the ledger row is reconciled
with the run's files every time a lab's ledger is opened (ablab.store.ledger.Ledger calls `reconcile`).

A run is written files first, ledger second (ablab.store.record): RunRecord.create marks the run
pending (`.ablab/pending/<id>`, naming its process), makes its directory, writes its files with
result.json last, then its row, which clears the mark; every later change goes to result.json, then
to the row. A worker's row is written by its driver (ablab.executors.pool), later still. So a kill
(of the trainer, or of a driver with its workers) leaves at worst one of:
- a row that reads running or interrupted while result.json says finished, diverged or failed: the
  row is set to the file (status, result, finished_at), with the metric rows, events and benchmark
  results the files hold (those a dead driver never applied), and a `reconciled` event;
- a pending mark whose process is gone and no row: a directory with its result.json gets its row from
  its files, as `ablab import` rebuilds one (running becomes interrupted: resumable), with a
  `reconciled` event; one without result.json was cut off before it trained and is removed.

It is cheap: one indexed query for the rows not yet settled whose process is gone (the finished
majority is never read), and a listing of the pending folder, empty but for cut-off creations.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from ablab.errors import UserError
from ablab.store.archive import run_from_directory
from ablab.store.ledger import Ledger, live_status, pending_path, pending_root
from ablab.store.record import is_run_id, now_iso, read_jsonl, runs_root, sample_rows
from ablab.store.schema import EVAL_KEY

SETTLED = ("finished", "diverged", "failed")  # what a result.json says once its run has ended for good


def reconcile(ledger: Ledger) -> list[str]:
    """Repair what kills left split in `ledger`'s lab; returns the ids of the runs repaired. A run
    whose files cannot be read or changed (permissions, a full disk) is left as it is: opening the
    ledger never fails for it."""
    repaired = []
    with contextlib.suppress(OSError):
        for run_id in _cut_off_creations(ledger):
            with contextlib.suppress(OSError):
                if _record_from_files(ledger, run_id):
                    repaired.append(run_id)
    for run_id, status, heartbeat in ledger.unsettled_runs():
        with contextlib.suppress(OSError):
            if settle(ledger, run_id, status, heartbeat):
                repaired.append(run_id)
    return repaired


def settle(ledger: Ledger, run_id: str, status: str, heartbeat: float | None) -> bool:
    """Set `run_id`'s row (read as `status`, with `heartbeat`) to its result.json when the file says
    the run ended and the row does not; the caller knows that no process trains the run."""
    folder = runs_root(ledger.lab) / run_id
    result = _read_result(folder)
    if status not in ("running", "interrupted") or result.get("status") not in SETTLED:
        return False
    event = _event(f"reconciled: result.json says {result['status']} but the ledger row said {status}; "
                   "the row now matches the file")
    metrics = [row for row in read_jsonl(folder / "metrics.jsonl") if isinstance(row.get("step"), int)]
    events = [e for e in read_jsonl(folder / "events.jsonl") if {"step", "kind", "time"} <= e.keys()]
    evals = [row for row in read_jsonl(folder / "evals.jsonl")
             if {*EVAL_KEY, "created_at", "data"} <= row.keys() and row["run_id"] == run_id]
    samples = sample_rows(read_jsonl(folder / "samples.jsonl"))
    if not ledger.repair_run(run_id, heartbeat, result, metrics, [*events, event], evals, samples):
        return False  # a process wrote the row since it was read: it is alive, and the row is its
    _append_event(folder, event)
    return True


def _cut_off_creations(ledger: Ledger) -> list[str]:
    """Ids of pending runs whose creating process is gone (a live one is still creating its run)."""
    folder = pending_root(ledger.lab)
    if not folder.is_dir():
        return []
    found = []
    for mark in folder.iterdir():
        if not is_run_id(mark.name):
            continue
        if ledger.has_run(mark.name):  # the row went in; only the mark's removal was cut off
            mark.unlink(missing_ok=True)
        elif not _creator_alive(mark):
            found.append(mark.name)
    return found


def _creator_alive(mark: Path) -> bool:
    """As a running row is judged (ledger.live_status): its pid on this host, else the mark's age."""
    try:
        parts, written = mark.read_text(encoding="utf-8").split(), mark.stat().st_mtime
    except OSError:
        return True  # gone meanwhile: whoever removed it dealt with it
    pid, host = (int(parts[0]), parts[1]) if len(parts) == 2 and parts[0].isdigit() else (None, None)
    return live_status("running", host, pid, written) == "running"


def _record_from_files(ledger: Ledger, run_id: str) -> bool:
    """Give a cut-off creation its row from its files, or remove it when it never got that far."""
    folder = runs_root(ledger.lab) / run_id
    mark = pending_path(ledger.lab, run_id)
    if not (folder / "result.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)  # killed mid-creation: nothing trained, nothing to keep
        mark.unlink(missing_ok=True)
        return False
    try:
        run, metrics, events = run_from_directory(folder)
    except UserError:
        return False  # a file it needs is unreadable: left as it is, for `ablab import` to say why
    event = _event("reconciled: the run directory had no ledger row (its creation was cut off by a kill); "
                   "its row is rebuilt from its files")
    imported = ledger.import_run(run, metrics, [*events, event], notes=[], tags=[])
    mark.unlink(missing_ok=True)
    if imported:
        _append_event(folder, event)
    return imported


def _read_result(folder: Path) -> dict:
    try:
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return result if isinstance(result, dict) else {}


def _event(message: str) -> dict:
    return {"kind": "reconciled", "step": -1, "message": message, "time": now_iso()}


def _append_event(folder: Path, event: dict) -> None:
    """The event in events.jsonl too, as RunRecord.log_event writes every event."""
    try:
        with open(folder / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
    except OSError:
        pass  # the ledger has it; a read-only run directory keeps its files as they were
