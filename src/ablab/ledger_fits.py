"""The ledger's scaling-law fits (schema version 4): `ablab scaling fit` and `ablab ladder` store
each fit with its kind, compute convention and what it was fitted to; a baseline's law is the
newest fit stored under its ref."""

from __future__ import annotations

import json
import sqlite3


class _FitStore:
    conn: sqlite3.Connection  # and _write(), a BEGIN IMMEDIATE transaction: both from Ledger

    def save_fit(self, name: str, kind: str, convention: str, data: dict, baseline: str | None = None,
                 at: str = "") -> int:
        with self._write():
            cursor = self.conn.execute(
                "INSERT INTO scaling_fits (name, baseline, kind, convention, created_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                (name, baseline, kind, convention, at, json.dumps(data, sort_keys=True, separators=(",", ":"))))
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
