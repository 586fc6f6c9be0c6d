"""The ledger's benchmark results (schema version 3): what `ablab eval`, evaluation during training
and studies' benchmarks write, keyed by run, step, task version and the evaluation's settings."""

from __future__ import annotations

import json
import sqlite3
from typing import Iterable

EVAL_KEY = ("run_id", "step", "task", "task_version", "num_fewshot", "example_limit", "seed")


class _EvalStore:
    conn: sqlite3.Connection  # and _write(), a BEGIN IMMEDIATE transaction: both from Ledger

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
                  json.dumps(row["data"], sort_keys=True, separators=(",", ":"))) for row in rows])

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
