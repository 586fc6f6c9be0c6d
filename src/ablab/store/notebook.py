"""The ledger's notebook tables (schema version 6): each run's tag history, and the lab's idea backlog.

Tags are kept as a current set (`tags`, what `ablab runs --tag` filters on) and as a history that
only grows (`tag_history`: every addition and removal with its time), so taking a tag off a run
never erases that it had it. Ideas live in the ledger rather than in a file of their own: an
`ablab idea add` is one transaction (a kill leaves the idea in or out, never half), two at once get
distinct ids, and linking an idea to the study that tests it is a write next to the study's row.
Ledger (ablab.store.ledger) inherits NotebookTables; nothing else imports this module.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from ablab.store.tables import Transaction


def _now() -> str:
    """UTC to the microsecond, as ablab.store.record.now_iso writes it (record imports the ledger)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class NotebookTables:
    """The Ledger's methods for tag history and ideas, on the Ledger's connection `conn`."""
    conn: sqlite3.Connection

    # -- tag history ------------------------------------------------------------------------------
    def _tag_event(self, run_id: str, tag: str, action: str, at: str | None) -> None:
        """One row of a run's tag history, inside the caller's transaction."""
        self.conn.execute("INSERT INTO tag_history (run_id, tag, action, time) VALUES (?, ?, ?, ?)",
                          (run_id, tag, action, at or _now()))

    def tag_history(self, run_id: str) -> list[dict]:
        """Every tag added to or removed from the run, oldest first; time '' for tags the run had
        before the ledger kept history (schema version 6)."""
        return [{"time": at, "tag": tag, "action": action} for at, tag, action in self.conn.execute(
            "SELECT time, tag, action FROM tag_history WHERE run_id=? ORDER BY id", (run_id,))]

    # -- ideas --------------------------------------------------------------------------------------
    def add_idea(self, text: str, origin: str | None) -> int:
        """Add an untested idea (from study `origin`, if any); returns its id."""
        with Transaction(self.conn):
            cursor = self.conn.execute("INSERT INTO ideas (text, origin, created_at) VALUES (?, ?, ?)",
                                       (text, origin, _now()))
        return int(cursor.lastrowid)

    def ideas(self) -> list[dict]:
        """Every idea, oldest first: id, text, origin, created_at, tested_by (a study name or None), linked_at."""
        rows = self.conn.execute("SELECT id, text, origin, created_at, tested_by, linked_at FROM ideas ORDER BY id")
        return [{"id": i, "text": t, "origin": o, "created_at": at, "tested_by": by, "linked_at": linked}
                for i, t, o, at, by, linked in rows]

    def link_idea(self, idea_id: int, study: str) -> bool:
        """Mark the idea as tested by `study`; False when it does not exist. An idea already tested
        by another study keeps its first link (the map shows that study as its test)."""
        with Transaction(self.conn):
            cursor = self.conn.execute("UPDATE ideas SET tested_by=?, linked_at=? WHERE id=? AND"
                                       " (tested_by IS NULL OR tested_by=?)", (study, _now(), idea_id, study))
            exists = cursor.rowcount or self.conn.execute("SELECT 1 FROM ideas WHERE id=?", (idea_id,)).fetchone()
        return bool(exists)
