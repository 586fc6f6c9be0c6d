"""Removing runs (`ablab runs rm`): each run's ledger rows and its directory, one run at a time.

The order, so that a kill at any moment never leaves a ledger row without its directory, nor a half
directory where a run's directory belongs:
1. the run's rows (run, metrics, events, notes, tags, benchmark results, study links) go in one
   ledger transaction: before it commits nothing has changed, after it the run is gone;
2. its directory `.ablab/runs/<id>/` is renamed into `.ablab/trash/` (one atomic rename), so the
   run's path holds either the whole directory or nothing;
3. the trash copy is deleted; a kill part way leaves only a folder in `.ablab/trash/`, which the
   next removal sweeps away.
A kill between 1 and 2 leaves a whole directory without a row: an intact run record, as `ablab
import` reads it, never a row pointing at missing files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ablab.errors import UserError
from ablab.store.ledger import Ledger, ledger_path
from ablab.store.record import runs_root
from ablab.store.runlock import RunLock


@dataclass
class Removal:
    """One run to remove, as `plan_removal` found it."""
    run_id: str
    name: str
    status: str
    links: list[str] = field(default_factory=list)  # the studies and baselines it belongs to, in words
    rows: dict[str, int] = field(default_factory=dict)  # rows deleted per table, once removed


def trash_root(lab: Path) -> Path:
    return lab / ".ablab" / "trash"


def plan_removal(lab: Path, refs: Sequence[str], force: bool = False) -> list[Removal]:
    """The runs `refs` name (unique id prefixes), checked before anything is removed: a run still
    training is refused, and so is a run that a study or a baseline is built on, unless `force`."""
    if not ledger_path(lab).exists():
        raise UserError(f"{lab} has no ledger, so no runs; run this inside a lab or pass --lab with its folder.")
    removals: dict[str, Removal] = {}
    with Ledger(lab) as ledger:
        baseline_refs = [b["ref"] for b in ledger.baselines()]
        for ref in refs:
            run = ledger.run(ref)
            if run.status == "running":
                raise UserError(f"Run {run.id} is still training (pid {run.pid} on {run.host}); stop it, "
                                "or let it finish, before removing it.")
            links = [f"study {study} (arm {arm}, seed {seed})" for study, arm, seed in ledger.study_links(run.id)]
            links += [f"baseline {b}" for b in baseline_refs if run.name.startswith(f"{b}/")]
            if links and not force:
                raise UserError(f"Run {run.id} belongs to {', '.join(links)}; removing it loses that result, "
                                "so pass --force if you mean it.")
            removals[run.id] = Removal(run.id, run.name, run.status, links)
    return list(removals.values())


def remove_runs(lab: Path, removals: Sequence[Removal]) -> list[Removal]:
    """Remove each run's rows, then its directory, in the order the module docstring gives. Every
    run's lock (ablab.store.runlock) is taken first, so a trainer that started since the check
    refuses the removal before anything is removed, and none can start during it."""
    sweep_trash(lab)
    with contextlib.ExitStack() as held, Ledger(lab) as ledger:
        for removal in removals:
            if (runs_root(lab) / removal.run_id).is_dir():
                held.callback(RunLock(removal.run_id, runs_root(lab) / removal.run_id).acquire().release)
        for removal in removals:
            removal.rows = ledger.delete_run(removal.run_id)
            folder = runs_root(lab) / removal.run_id
            if folder.exists():
                trash = trash_root(lab) / f"{removal.run_id}-{uuid.uuid4().hex[:8]}"
                trash.parent.mkdir(parents=True, exist_ok=True)
                os.replace(folder, trash)
                shutil.rmtree(trash)
    if trash_root(lab).is_dir() and not any(trash_root(lab).iterdir()):
        trash_root(lab).rmdir()
    return list(removals)


def sweep_trash(lab: Path) -> None:
    """Delete what a removal killed part way left in `.ablab/trash/`."""
    for leftover in trash_root(lab).glob("*"):
        shutil.rmtree(leftover, ignore_errors=True)
