"""The store layer: the only code that touches the ledger database and the run directories.

    ledger.py      the SQLite ledger: one class, the one write API, queries, liveness
    schema.py      the ledger's schema, one script per version, and the migrations
    record.py      the one writer of a run's directory (and, through the ledger, its rows)
    checkpoint.py  atomic checksummed checkpoints; the newest intact one on resume
    provenance.py  git state, command, versions, host; the code version of a run's content key
    archive.py     export runs to one archive; import archives or bare run directories
    prune.py       gc: old checkpoints of finished runs
"""
