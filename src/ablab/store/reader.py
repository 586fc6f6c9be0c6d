"""A read-only view of a lab's ledger, for readers that watch a lab while others write it (`ablab ui`).

The connection is opened with SQLite's `mode=ro`, so the database itself refuses every write; on top of
that the reader never migrates and never reconciles (both write), and its write transaction raises.
WAL mode lets it read a consistent snapshot while training processes commit their rows.

    with ReadOnlyLedger(lab) as ledger:
        rows = ledger.metrics_since(run_id, step=120)
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ablab.errors import UserError
from ablab.store.ledger import Ledger, ledger_path
from ablab.store.schema import SCHEMA_VERSION


class ReadOnlyLedger(Ledger):
    """Ledger's queries on a connection that cannot write (Ledger's writes raise here)."""

    def __init__(self, lab: Path, timeout: float = 10.0):
        path = ledger_path(lab)
        if not path.is_file():
            raise UserError(f"{lab} has no ledger, so no runs to show; run this inside a lab or pass --lab with its folder.")
        try:
            self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout,
                                        isolation_level=None, check_same_thread=False)
            self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise UserError(f"The ledger {path} cannot be read ({err}); check its permissions, or restore it "
                            "from a backup or `ablab export`.") from None
        if version != SCHEMA_VERSION:
            self.conn.close()
            newer = version > SCHEMA_VERSION
            raise UserError(f"The ledger {path} has schema version {version}, "
                            + ("newer than this ablab's; upgrade ablab to read it." if newer else
                               f"older than this ablab's {SCHEMA_VERSION}; run any ablab command in the lab "
                               "(e.g. `ablab runs`) once to upgrade it."))
        self.path, self.lab = path, lab

    def _write(self):
        raise RuntimeError("ReadOnlyLedger never writes; open ablab.store.ledger.Ledger to change the ledger.")

    def metrics_since(self, run_id: str, step: int) -> list[dict]:
        """A run's metric rows after `step`, oldest first: what a page polling a training run asks for."""
        return [json.loads(d) for (d,) in self.conn.execute(
            "SELECT data FROM metrics WHERE run_id=? AND step>? ORDER BY step", (run_id, step))]

    def metrics_of(self, run_ids: list[str]) -> dict[str, list[dict]]:
        """Run id -> its metric rows by step, in one query (a study's curves)."""
        found: dict[str, list[dict]] = {run_id: [] for run_id in run_ids}
        if not run_ids:
            return found
        rows = self.conn.execute(f"SELECT run_id, data FROM metrics WHERE run_id IN ({','.join('?' * len(run_ids))})"
                                 " ORDER BY run_id, step", run_ids)
        for run_id, data in rows:
            found[run_id].append(json.loads(data))
        return found
