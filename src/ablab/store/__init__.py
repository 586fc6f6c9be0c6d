"""The store layer: the only code that touches the ledger database and the run directories.

    ledger.py      the SQLite ledger: one class, the one write API, queries, liveness
    schema.py      the ledger's schema, one script per version, and the migrations
    record.py      the one writer of a run's directory (and, through the ledger, its rows)
    reconcile.py   on every ledger open: rows repaired from the files a kill left ahead of them
    runlock.py     one trainer per run: the OS lock its training process holds
    checkpoint.py  atomic checksummed checkpoints; the newest intact one on resume
    provenance.py  git state, command, versions, host; the code version of a run's content key
    archive.py     export runs to one archive; import archives or bare run directories
    prune.py       gc: old checkpoints of finished runs
"""

from ablab.store import ledger as _ledger
from ablab.store import reconcile as _reconcile

_ledger.ON_OPEN.append(_reconcile.reconcile)  # every open of a ledger reconciles it with the run files
