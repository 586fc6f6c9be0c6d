"""The ledger's lab-level tables: dated baselines, studies and their cells' runs, benchmark results
and scaling-law fits; and the JSON every table stores. ablab.store.ledger's Ledger is the one class
that writes them (it inherits LabTables); nothing else imports this module but the store and the
`--json` writer (ablab.analysis.runs, for `finite`)."""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any, Iterable

from ablab.errors import UserError
from ablab.store.schema import EVAL_KEY, SETTLED_MESSAGE


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error: one write, all or nothing."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, *rest):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError) and str(exc) == SETTLED_MESSAGE:  # a schema-6 trigger said no
            raise UserError("A finished or diverged run's record (config, metrics, result) cannot be changed: it "
                            "is the evidence studies read; add a note (`ablab note RUN TEXT`) or a tag instead, "
                            "or train a new run.") from None


def dump(value: Any) -> str:
    """JSON for the database. A NaN or infinity (a diverged loss, a bad measurement) is stored as
    null: SQLite's JSON functions reject those tokens, and one of them would break every query."""
    return json.dumps(finite(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def finite(value: Any) -> Any:
    """`value` with every NaN and infinity in it, however deep, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): finite(item) for key, item in value.items()}  # as JSON writes every key
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


class LabTables:
    """The Ledger's methods for the lab-level tables, on the Ledger's connection `conn`."""
    conn: sqlite3.Connection

    def _write(self) -> Transaction:
        """One write transaction on the ledger: all of it or none."""
        return Transaction(self.conn)

    # -- baselines and studies (schema version 2) ---------------------------------------------------
    def save_baseline(self, name: str, date: str, config: dict, seeds: list[int], data: dict) -> None:
        with Transaction(self.conn):
            self.conn.execute("INSERT INTO baselines (name, date, config, seeds, created_at, data)"
                              " VALUES (?, ?, ?, ?, datetime('now'), ?)",
                              (name, date, dump(config), dump(seeds), dump(data)))

    def update_baseline_data(self, name: str, date: str, changes: dict) -> None:
        with Transaction(self.conn):
            self.conn.execute("UPDATE baselines SET data = json_patch(data, ?) WHERE name=? AND date=?",
                              (dump(changes), name, date))

    def set_current_baseline(self, name: str, date: str) -> None:
        """Make NAME@DATE the current baseline of its name (exactly one per name)."""
        with Transaction(self.conn):
            self.conn.execute("UPDATE baselines SET data = json_set(data, '$.current', json('false')) WHERE name=?",
                              (name,))
            self.conn.execute("UPDATE baselines SET data = json_set(data, '$.current', json('true'))"
                              " WHERE name=? AND date=?", (name, date))

    def baselines(self) -> list[dict]:
        rows = self.conn.execute("SELECT name, date, config, seeds, created_at, data FROM baselines ORDER BY name, date")
        return [{"ref": f"{n}@{d}", "name": n, "date": d, "config": json.loads(c), "seeds": json.loads(s),
                 "created_at": at, **json.loads(data)} for n, d, c, s, at, data in rows]

    def save_study(self, name: str, baseline: str, spec: dict) -> None:
        """Record a study's spec; a study keeps its baseline and researcher's notes once recorded."""
        with Transaction(self.conn):
            self.conn.execute("INSERT INTO studies (name, baseline, spec, created_at) VALUES (?, ?, ?, datetime('now'))"
                              " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec", (name, baseline, dump(spec)))

    def update_study_data(self, name: str, changes: dict) -> None:
        with Transaction(self.conn):
            self.conn.execute("UPDATE studies SET data = json_patch(data, ?) WHERE name=?", (dump(changes), name))

    def studies(self) -> list[dict]:
        rows = self.conn.execute("SELECT name, baseline, spec, created_at, data FROM studies ORDER BY created_at, rowid")
        return [{"name": n, "baseline": b, "spec": json.loads(s), "created_at": at, "data": json.loads(d)}
                for n, b, s, at, d in rows]

    def study(self, name: str) -> dict | None:
        return next((s for s in self.studies() if s["name"] == name), None)

    def link_study_run(self, study: str, arm: str, seed: int, run_id: str) -> None:
        with Transaction(self.conn):
            self.conn.execute("INSERT INTO study_runs (study, arm, seed, run_id) VALUES (?, ?, ?, ?)"
                              " ON CONFLICT (study, arm, seed) DO UPDATE SET run_id = excluded.run_id",
                              (study, arm, seed, run_id))

    def study_runs(self, study: str) -> dict[tuple[str, int], str]:
        rows = self.conn.execute("SELECT arm, seed, run_id FROM study_runs WHERE study=?", (study,))
        return {(arm, seed): run_id for arm, seed, run_id in rows}

    # -- benchmark results (schema version 3): keyed by run, step, task version and settings ---------
    def record_evals(self, rows: Iterable[dict]) -> None:
        """Benchmark results, each a dict with the EVAL_KEY fields, `created_at` and `data` (n,
        skipped, metrics); a row with the same key replaces the earlier one."""
        with self._write():
            self.conn.executemany(
                "INSERT INTO eval_results (run_id, step, task, task_version, num_fewshot, example_limit, seed,"
                " created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT"
                " (run_id, step, task, task_version, num_fewshot, example_limit, seed)"
                " DO UPDATE SET created_at = excluded.created_at, data = excluded.data",
                [(*(row[k] for k in EVAL_KEY), row["created_at"],
                  dump(row["data"])) for row in rows])

    def evals(self, run_ids: list[str] | None = None, task: str | None = None) -> list[dict]:
        """Stored benchmark results, by run, step and task, oldest evaluation first within a key."""
        clauses, params = [], []
        if run_ids is not None:
            clauses.append(f"run_id IN ({','.join('?' * len(run_ids))})")
            params += run_ids
        if task is not None:
            clauses.append("task = ?")
            params.append(task)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = self.conn.execute(
            f"SELECT {', '.join(EVAL_KEY)}, created_at, data FROM eval_results{where}"
            " ORDER BY run_id, step, task, created_at", params)
        return [{**dict(zip(EVAL_KEY, row[:-2])), "created_at": row[-2], **json.loads(row[-1])} for row in rows]

    # -- prompt-suite continuations (schema version 5): keyed by run, step, prompt and mode ---------
    def record_samples(self, run_id: str, rows: Iterable[dict]) -> None:
        """A run's continuations of its prompt suite (samples.jsonl rows); a row with the same step,
        prompt and mode replaces the earlier one."""
        with self._write():
            self.conn.executemany(
                "INSERT OR REPLACE INTO samples (run_id, step, prompt, mode, data) VALUES (?, ?, ?, ?, ?)",
                [(run_id, row["step"], row["prompt"], row["mode"], dump(row)) for row in rows])

    def truncate_samples(self, run_id: str, after_step: int) -> None:
        with self._write():
            self.conn.execute("DELETE FROM samples WHERE run_id=? AND step>?", (run_id, after_step))

    def samples(self, run_id: str) -> list[dict]:
        """A run's continuations, by step, each step's in the order they were written (the suite's)."""
        rows = self.conn.execute("SELECT data FROM samples WHERE run_id=? ORDER BY step, id", (run_id,))
        return [json.loads(data) for (data,) in rows]

    # -- scaling-law fits (schema version 4): kind, compute convention, what they were fitted to ----
    def save_fit(self, name: str, kind: str, convention: str, data: dict, baseline: str | None = None,
                 at: str = "") -> int:
        with self._write():
            cursor = self.conn.execute(
                "INSERT INTO scaling_fits (name, baseline, kind, convention, created_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                (name, baseline, kind, convention, at, dump(data)))
        return int(cursor.lastrowid)

    def fits(self, name: str | None = None, baseline: str | None = None, kind: str | None = None) -> list[dict]:
        """Stored fits, newest first, filtered by name, baseline ref and kind."""
        clauses, params = [], []
        for column, value in (("name", name), ("baseline", baseline), ("kind", kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = self.conn.execute("SELECT id, name, baseline, kind, convention, created_at, data FROM scaling_fits"
                                 f"{where} ORDER BY created_at DESC, id DESC", params)
        return [{"id": i, "name": n, "baseline": b, "kind": k, "convention": c, "created_at": at, **json.loads(d)}
                for i, n, b, k, c, at, d in rows]
