"""The ledger's schema, one script per version, and the migration that applies them. Only
ablab.store.ledger opens the database.

MIGRATIONS[i] takes a ledger from schema version i to i + 1 (`PRAGMA user_version`). A released
script is never edited: a change to the schema is a new script appended to MIGRATIONS.
"""

import sqlite3

from ablab.errors import UserError

SCHEMA_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    heartbeat REAL,              -- unix time of the last sign of life
    host TEXT, pid INTEGER,      -- where the training process runs
    config_hash TEXT NOT NULL, seed INTEGER NOT NULL,
    data_fingerprint TEXT, code_version TEXT,
    content_key TEXT,            -- (config hash, seed, data fingerprint, code version)
    config TEXT NOT NULL,        -- JSON
    provenance TEXT NOT NULL DEFAULT '{}',
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_content_key ON runs (content_key);
CREATE TABLE metrics (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE events (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL,
    time TEXT NOT NULL, data TEXT NOT NULL,
    UNIQUE (run_id, step, kind, time)
);
CREATE INDEX events_run ON events (run_id);
CREATE TABLE notes (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, time TEXT NOT NULL, text TEXT NOT NULL,
    UNIQUE (run_id, time, text)
);
CREATE TABLE tags (run_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (run_id, tag)) WITHOUT ROWID;
"""

# Version 2 makes room for the studies layer: dated baselines and studies, and which runs are theirs.
SCHEMA_V2 = """
CREATE TABLE baselines (
    name TEXT NOT NULL, date TEXT NOT NULL, config TEXT NOT NULL, seeds TEXT NOT NULL,
    created_at TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (name, date)
);
CREATE TABLE studies (
    name TEXT PRIMARY KEY, baseline TEXT NOT NULL, spec TEXT NOT NULL,
    created_at TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE study_runs (
    study TEXT NOT NULL, arm TEXT NOT NULL, seed INTEGER NOT NULL, run_id TEXT NOT NULL,
    PRIMARY KEY (study, arm, seed)
);
CREATE INDEX runs_status ON runs (status);
"""

# Version 3 stores benchmark results: one row per (run, step evaluated, task and its version, few-shot,
# example limit, seed); evaluating again with the same settings replaces the row.
SCHEMA_V3 = """
CREATE TABLE eval_results (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, task TEXT NOT NULL, task_version INTEGER NOT NULL,
    num_fewshot INTEGER NOT NULL, example_limit INTEGER NOT NULL,  -- 0: every example of the split
    seed INTEGER NOT NULL, created_at TEXT NOT NULL,
    data TEXT NOT NULL,          -- JSON: n, skipped and the metrics
    PRIMARY KEY (run_id, step, task, task_version, num_fewshot, example_limit, seed)
) WITHOUT ROWID;
"""

# Version 4 keeps scaling-law fits: each with what it was fitted to (a baseline's ladder, a study, a
# CSV), its kind (chinchilla, compute, params, isoflop) and its compute convention.
SCHEMA_V4 = """
CREATE TABLE scaling_fits (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, baseline TEXT, kind TEXT NOT NULL, convention TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL           -- JSON: parameters, confidence intervals, points, fitted range
);
CREATE INDEX scaling_fits_name ON scaling_fits (name);
"""

# Version 5 keeps each run's continuations of its prompt suite (eval.prompts): one row per (run, step,
# prompt, mode), in the order they were written (rowid), so a step's prompts read back in suite order.
SCHEMA_V5 = """
CREATE TABLE samples (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, step INTEGER NOT NULL, prompt TEXT NOT NULL, mode TEXT NOT NULL,
    data TEXT NOT NULL,          -- JSON: the samples.jsonl row (step, prompt, mode, seed, text)
    UNIQUE (run_id, step, prompt, mode)
);
"""

# Version 6 keeps the record honest and the ideas in it. A settled run (finished or diverged: the
# evidence studies read) can be deleted whole (`runs rm` deletes its row first) but never changed:
# triggers refuse an update of its record columns and any write to its metric rows, whatever code
# path tries. Notes and tag_history are append-only while their run exists; tags stays the current
# set (fast filters), tag_history says when each tag came and went (rows from before version 6 have
# no time: ''). ideas is the backlog `ablab idea` keeps, each with its origin and the study testing it.
# Given as a list of statements: a trigger's body holds semicolons.
SETTLED_STATUSES = ("finished", "diverged")  # a failed run is retried in place, an interrupted one resumed
SETTLED_MESSAGE = "ablab: the record of a settled run cannot be changed"  # the triggers' error, which Transaction words
_SETTLED = "('finished', 'diverged')"
_RECORD_COLUMNS = ("name", "status", "created_at", "finished_at", "config_hash", "seed", "data_fingerprint",
                   "code_version", "content_key", "config", "provenance", "result")
SCHEMA_V6 = [
    "CREATE TABLE tag_history (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, tag TEXT NOT NULL,"
    " action TEXT NOT NULL CHECK (action IN ('add', 'remove')), time TEXT NOT NULL)",
    "CREATE INDEX tag_history_run ON tag_history (run_id)",
    "INSERT INTO tag_history (run_id, tag, action, time) SELECT run_id, tag, 'add', '' FROM tags ORDER BY run_id, tag",
    "CREATE TABLE ideas (id INTEGER PRIMARY KEY, text TEXT NOT NULL, origin TEXT, created_at TEXT NOT NULL,"
    " tested_by TEXT, linked_at TEXT)",
    f"CREATE TRIGGER settled_run_unchanged BEFORE UPDATE ON runs WHEN OLD.status IN {_SETTLED} AND ("
    + " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _RECORD_COLUMNS)
    + f") BEGIN SELECT RAISE(ABORT, '{SETTLED_MESSAGE}'); END",
    *(f"CREATE TRIGGER settled_metrics_{verb.lower()} BEFORE {verb} ON metrics WHEN (SELECT status FROM runs WHERE"
      f" id = {row}.run_id) IN {_SETTLED} BEGIN SELECT RAISE(ABORT, '{SETTLED_MESSAGE}'); END"
      for verb, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD"))),
    *(f"CREATE TRIGGER {table}_append_only_{verb.lower()} BEFORE {verb} ON {table}{when} BEGIN"
      f" SELECT RAISE(ABORT, 'ablab: {table} are append-only'); END"
      for table in ("notes", "tag_history")
      for verb, when in (("UPDATE", ""), ("DELETE", " WHEN EXISTS (SELECT 1 FROM runs WHERE id = OLD.run_id)"))),
]

MIGRATIONS = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6]  # MIGRATIONS[i]: version i to i + 1
SCHEMA_VERSION = len(MIGRATIONS)
EVAL_KEY = ("run_id", "step", "task", "task_version", "num_fewshot", "example_limit", "seed")  # eval_results' key


def migrate(conn: sqlite3.Connection) -> None:
    """Bring an open ledger (inside a write transaction) up to SCHEMA_VERSION, one script at a time."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UserError(f"This ledger has schema version {version}, newer than this ablab "
                        f"({SCHEMA_VERSION}); upgrade ablab to open it.")
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in script if isinstance(script, list) else filter(str.strip, script.split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={target}")
