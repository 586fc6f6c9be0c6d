"""`ablab gc`: free the disk that finished runs' old checkpoints hold.

A finished or diverged run never trains again, so only its newest intact checkpoint is still of use
(for `ablab sample` and for starting from its weights); the older ones, and hidden temp folders left
by a kill during a save, can go. Running and interrupted runs are never touched: resuming needs
their checkpoints, including the older ones it falls back on when the newest is damaged.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ablab.store import checkpoint
from ablab.store.ledger import Ledger, ledger_path
from ablab.store.record import runs_root

DONE = ("finished", "diverged")


@dataclass
class RunPrune:
    run_id: str
    status: str
    kept: str | None  # the checkpoint left in place; None when none is intact (then nothing is removed)
    removed: list[str] = field(default_factory=list)
    bytes: int = 0


@dataclass
class PruneReport:
    dry_run: bool
    runs: list[RunPrune] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.runs)

    @property
    def removed(self) -> int:
        return sum(len(r.removed) for r in self.runs)


def prune_checkpoints(lab: Path, dry_run: bool = False) -> PruneReport:
    """Remove every checkpoint of finished and diverged runs but each one's newest intact one."""
    report = PruneReport(dry_run)
    if not ledger_path(lab).exists():  # no runs, so nothing to prune; a folder that is no lab stays as it was
        return report
    with Ledger(lab) as ledger:
        done = [run for status in DONE for run in ledger.runs(status=status)]
    for run in sorted(done, key=lambda r: (r.created_at, r.id)):
        folder = runs_root(lab) / run.id / "checkpoints"
        if not folder.is_dir():
            continue
        keep, _ = checkpoint.latest_valid(folder)
        entry = RunPrune(run.id, run.status, keep.name if keep else None)
        if keep is not None:  # with no intact checkpoint, the damaged ones are all the evidence left
            stale = [p for p in folder.iterdir() if p.is_dir() and p != keep
                     and (p.name.startswith("step-") or p.name.startswith(".tmp-step-"))]
            for path in sorted(stale):
                entry.removed.append(path.name)
                entry.bytes += _size(path)
                if not dry_run:
                    shutil.rmtree(path)
        report.runs.append(entry)
    return report


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
