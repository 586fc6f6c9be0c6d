"""The ledger: a lab's SQLite record of every run. The only code that touches the database.

`.ablab/ledger.sqlite` in WAL mode with a busy timeout, so many processes can record at once; each
write is one short transaction (BEGIN IMMEDIATE), so a kill at any moment leaves the database as it
was before or after that write, never half of it. `PRAGMA user_version` holds the schema version;
opening an older ledger runs the migrations in order.

Write API: record_run, log_metrics, log_event, heartbeat, finish_run, add_note, add_tag, remove_tag,
delete_run (`ablab runs rm`: one run's rows in one transaction); baselines
and studies (save_*, update_*, link_study_run); benchmark results (record_evals); scaling-law fits
(save_fit); those of the lab-level tables are in ablab.store.tables, which Ledger inherits, and the
tag history and ideas in ablab.store.notebook. A finished or diverged run's record never changes
(schema 6's triggers refuse it, and Transaction turns that into a UserError); it can only be removed whole.
Queries return plain dataclasses and dicts.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ablab.errors import UserError
from ablab.store.notebook import NotebookTables
from ablab.store.schema import EVAL_KEY, migrate
from ablab.store.tables import LabTables, dump

# Set by ablab.store.proxy.become_worker: a worker's writes go to the driver, never to the database.
WORKER_PROCESS = False
# Called with every Ledger this process opens, before it is used. ablab.store's __init__ adds
# ablab.store.reconcile.reconcile here, so that it runs whichever store module a program imports
# (reconcile reads run files through ablab.store.record, which imports this module).
ON_OPEN: list[Callable[["Ledger"], Any]] = []
STALE_SECONDS = 300  # a run on another host with no heartbeat for this long is taken as dead
# The parts of a run's result that Ledger.summaries returns (what `ablab runs` lists and sorts by).
SUMMARY_RESULT_KEYS = ("steps", "tokens_seen", "params", "train_seconds", "stop_reason", "best", "final")


@dataclass
class Run:
    id: str
    name: str
    status: str  # running | finished | diverged | interrupted | failed (a dead `running` reads interrupted)
    created_at: str
    finished_at: str | None
    config_hash: str
    seed: int
    data_fingerprint: str | None
    code_version: str | None
    content_key: str | None
    config: dict
    provenance: dict
    result: dict
    host: str | None = None
    pid: int | None = None
    heartbeat: float | None = None
    tags: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict:
        return self.result.get("final", {})


def ledger_path(lab: Path) -> Path:
    return lab / ".ablab" / "ledger.sqlite"


def pending_root(lab: Path) -> Path:
    return lab / ".ablab" / "pending"


def pending_path(lab: Path, run_id: str) -> Path:
    """The mark of a run being created (ablab.store.record.RunRecord.create), naming its process,
    removed once the run's row is in (record_run): one left behind is a creation cut off by a kill."""
    return pending_root(lab) / run_id


class Ledger(LabTables, NotebookTables):
    """One lab's ledger. Every write is one BEGIN IMMEDIATE transaction; RUN_WRITES are the ones a
    run makes while it trains, the only ones a worker's LedgerProxy (ablab.store.proxy) carries."""

    RUN_WRITES = ("record_run", "log_metrics", "log_event", "heartbeat", "finish_run", "truncate_metrics",
                  "record_evals", "record_samples", "truncate_samples")

    def __init__(self, lab: Path, timeout: float = 60.0):
        if WORKER_PROCESS:
            raise RuntimeError("A worker process tried to open the ledger; workers send their writes to the "
                               "driver through ablab.store.proxy.LedgerProxy.")
        path = ledger_path(lab)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses nothing
            self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            with self._write():
                migrate(self.conn)
        except sqlite3.DatabaseError as err:
            raise UserError(
                f"The ledger {path} cannot be opened ({err}); restore it from a backup or `ablab export`, "
                "or move it aside to start a new one."
            ) from None
        self.path, self.lab = path, lab
        for hook in ON_OPEN:  # ablab.store.reconcile: a kill between a run's files and its row is repaired
            hook(self)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # -- writes -----------------------------------------------------------------------------------
    def record_run(self, run: Run) -> None:
        with self._write():
            self.conn.execute(
                "INSERT INTO runs (id, name, status, created_at, finished_at, heartbeat, host, pid, config_hash,"
                " seed, data_fingerprint, code_version, content_key, config, provenance, result)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET status=excluded.status, heartbeat=excluded.heartbeat,"
                " host=excluded.host, pid=excluded.pid, provenance=excluded.provenance",
                (run.id, run.name, run.status, run.created_at, run.finished_at, time.time(),
                 run.host or socket.gethostname(), run.pid or os.getpid(), run.config_hash, run.seed,
                 run.data_fingerprint, run.code_version, run.content_key, dump(run.config),
                 dump(run.provenance), dump(run.result)))
        pending_path(self.lab, run.id).unlink(missing_ok=True)  # the row is in: its creation is complete

    def log_metrics(self, run_id: str, rows: Iterable[dict]) -> None:
        """Metric rows keyed by their `step`; a second row for a step merges into the first."""
        with self._write():
            self.conn.executemany(
                "INSERT INTO metrics (run_id, step, data) VALUES (?, ?, ?) ON CONFLICT (run_id, step)"
                " DO UPDATE SET data = json_patch(data, excluded.data)",
                [(run_id, row["step"], dump(row)) for row in rows])
            self.conn.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), run_id))

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        with self._write():
            self.conn.execute("DELETE FROM metrics WHERE run_id=? AND step>?", (run_id, after_step))

    def log_event(self, run_id: str, event: dict) -> None:
        with self._write():
            self.conn.execute(
                "INSERT OR IGNORE INTO events (run_id, step, kind, time, data) VALUES (?, ?, ?, ?, ?)",
                (run_id, event["step"], event["kind"], event["time"], dump(event)))

    def heartbeat(self, run_id: str, host: str | None = None, pid: int | None = None) -> None:
        """The run is alive in process `pid` on `host` (by default this process: a worker's proxy
        names its own)."""
        with self._write():
            self.conn.execute("UPDATE runs SET heartbeat=?, host=?, pid=? WHERE id=?",
                              (time.time(), host or socket.gethostname(), pid or os.getpid(), run_id))

    def finish_run(self, run_id: str, status: str, result: dict, finished_at: str | None) -> None:
        """Set a run's status and result (also used for `running` at start and on resume); refused with a
        UserError once the run is finished or diverged, unless it writes the same record again."""
        with self._write():
            self.conn.execute("UPDATE runs SET status=?, result=?, finished_at=?, heartbeat=? WHERE id=?",
                              (status, dump(result), finished_at, time.time(), run_id))

    def repair_run(self, run_id: str, seen_heartbeat: float | None, result: dict, metrics: Iterable[dict],
                   events: Iterable[dict], evals: Iterable[dict], samples: Iterable[dict] = ()) -> bool:
        """Set a row that reads running or interrupted to what the run's files say (ablab.store.reconcile):
        status, result and finished_at from `result`, with the metric rows, events (the `reconciled` one
        among them), benchmark results and prompt-suite samples the files hold, in one transaction. Only while the row is as
        it was read (heartbeat `seen_heartbeat`): False, changing nothing, when a process wrote it since."""
        with self._write():
            if not self.conn.execute("SELECT 1 FROM runs WHERE id=? AND status IN ('running', 'interrupted')"
                                     " AND heartbeat IS ?", (run_id, seen_heartbeat)).fetchone():
                return False
            self.conn.executemany(  # merged as log_metrics merges: rows the ledger already has stay as they are
                "INSERT INTO metrics (run_id, step, data) VALUES (?, ?, ?) ON CONFLICT (run_id, step)"
                " DO UPDATE SET data = json_patch(data, excluded.data)",
                [(run_id, row["step"], dump(row)) for row in metrics])
            self.conn.executemany(
                "INSERT OR IGNORE INTO events (run_id, step, kind, time, data) VALUES (?, ?, ?, ?, ?)",
                [(run_id, e["step"], e["kind"], e["time"], dump(e)) for e in events])
            self.conn.executemany(
                f"INSERT OR REPLACE INTO eval_results ({', '.join(EVAL_KEY)}, created_at, data)"
                f" VALUES ({', '.join('?' * (len(EVAL_KEY) + 2))})",
                [(*(row[k] for k in EVAL_KEY), row["created_at"], dump(row["data"])) for row in evals])
            self.conn.executemany(
                "INSERT OR REPLACE INTO samples (run_id, step, prompt, mode, data) VALUES (?, ?, ?, ?, ?)",
                [(run_id, row["step"], row["prompt"], row["mode"], dump(row)) for row in samples])
            # Last: once the row reads finished or diverged, its metric rows are settled (schema 6's triggers).
            self.conn.execute("UPDATE runs SET status=?, result=?, finished_at=?, heartbeat=? WHERE id=?",
                              (result["status"], dump(result), result.get("finished_at"), time.time(), run_id))
        return True

    def add_note(self, run_id: str, text: str, at: str) -> None:
        with self._write():
            self.conn.execute("INSERT OR IGNORE INTO notes (run_id, time, text) VALUES (?, ?, ?)", (run_id, at, text))

    def add_tag(self, run_id: str, tag: str, at: str | None = None) -> None:
        """Tag a run; a tag it did not have is also written to its tag history, at `at` (default now)."""
        with self._write():
            if self.conn.execute("INSERT OR IGNORE INTO tags (run_id, tag) VALUES (?, ?)", (run_id, tag)).rowcount:
                self._tag_event(run_id, tag, "add", at)

    def import_run(self, run: Run, metrics: Iterable[dict], events: Iterable[dict], notes: Iterable[dict],
                   tags: Iterable[str]) -> bool:
        """Insert a run from another lab or a bare run directory with everything it holds, as it is
        (heartbeat, host and pid included), in one transaction; False, changing nothing, when a run
        with this id is already here."""
        with self._write():
            if self.conn.execute("SELECT 1 FROM runs WHERE id=?", (run.id,)).fetchone():
                return False
            # The metric rows before the run's row: once a finished row is in, its metrics are settled.
            # The same merge as log_metrics, so a run directory's metrics.jsonl (where a final eval row
            # repeats the last train step) becomes the rows its training wrote.
            self.conn.executemany(
                "INSERT INTO metrics (run_id, step, data) VALUES (?, ?, ?) ON CONFLICT (run_id, step)"
                " DO UPDATE SET data = json_patch(data, excluded.data)",
                [(run.id, row["step"], dump(row)) for row in metrics])
            self.conn.execute(
                "INSERT INTO runs (id, name, status, created_at, finished_at, heartbeat, host, pid, config_hash,"
                " seed, data_fingerprint, code_version, content_key, config, provenance, result)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.id, run.name, run.status, run.created_at, run.finished_at, run.heartbeat, run.host, run.pid,
                 run.config_hash, run.seed, run.data_fingerprint, run.code_version, run.content_key,
                 dump(run.config), dump(run.provenance), dump(run.result)))
            self.conn.executemany(
                "INSERT OR IGNORE INTO events (run_id, step, kind, time, data) VALUES (?, ?, ?, ?, ?)",
                [(run.id, e["step"], e["kind"], e["time"], dump(e)) for e in events])
            self.conn.executemany("INSERT OR IGNORE INTO notes (run_id, time, text) VALUES (?, ?, ?)",
                                  [(run.id, n["time"], n["text"]) for n in notes])
            for tag in tags:  # as added here, now: an archive holds a run's tags, not their history
                self.conn.execute("INSERT OR IGNORE INTO tags (run_id, tag) VALUES (?, ?)", (run.id, tag))
                self._tag_event(run.id, tag, "add", None)
        return True

    # -- queries ----------------------------------------------------------------------------------
    def has_run(self, run_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None

    def unsettled_runs(self) -> list[tuple[str, str, float | None]]:
        """(id, status as shown, heartbeat) of the runs whose row may lag their files: stored running
        or interrupted, with no live process training them. One indexed query; the finished majority
        is never read."""
        rows = self.conn.execute(
            "SELECT id, status, host, pid, heartbeat FROM runs WHERE status IN ('running', 'interrupted')")
        shown = [(run_id, live_status(status, host, pid, beat), beat) for run_id, status, host, pid, beat in rows]
        return [row for row in shown if row[1] != "running"]

    def row_counts(self) -> dict[str, int]:
        """Rows per table: what a backup, an import or a concurrency check compares."""
        tables = [name for (name,) in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {name: self.conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in tables}

    def resolve(self, prefix: str) -> str:
        """The full id of the one run whose id starts with `prefix`."""
        ids = [r[0] for r in self.conn.execute(
            "SELECT id FROM runs WHERE id >= ? AND id < ? LIMIT 3", (prefix, prefix + "\uffff"))]
        if not ids:
            raise UserError(f"No run '{prefix}' in this lab's ledger; `ablab runs` lists the runs.")
        if len(ids) > 1:
            raise UserError(f"Run id '{prefix}' is ambiguous ({', '.join(ids)}, …); give more characters.")
        return ids[0]

    def run(self, prefix: str) -> Run:
        run_id = self.resolve(prefix)
        return self.runs(ids=[run_id])[0]

    def runs(self, status: str | None = None, name: str | None = None, tag: str | None = None,
             where: dict[str, Any] | None = None, ids: list[str] | None = None) -> list[Run]:
        """Runs, oldest first, filtered by status (as shown, liveness included), name (glob),
        tag, exact config values (dotted keys) and ids."""
        rows, tags = self._select("*", status, name, tag, where, ids)
        runs = [_run_from_row(row, tags.get(row["id"], [])) for row in rows]
        return [r for r in runs if status is None or r.status == status]

    def summaries(self, status: str | None = None, name: str | None = None, tag: str | None = None,
                  where: dict[str, Any] | None = None) -> list[dict]:
        """Filtered like runs(), for listings of thousands of runs: id, name, status (liveness
        included), created_at, finished_at, seed, tags, and of the result only SUMMARY_RESULT_KEYS.
        Decoding every run's whole config, provenance and result is most of the time runs() takes."""
        paths = ", ".join(f"'$.{key}'" for key in SUMMARY_RESULT_KEYS)
        rows, tags = self._select("id, name, status, created_at, finished_at, seed, host, pid, heartbeat, "
                                  f"json_extract(result, {paths}) AS summary", status, name, tag, where, None)
        found = [{"id": row["id"], "name": row["name"],
                  "status": live_status(row["status"], row["host"], row["pid"], row["heartbeat"]),
                  "created_at": row["created_at"], "finished_at": row["finished_at"], "seed": row["seed"],
                  "result": {k: v for k, v in zip(SUMMARY_RESULT_KEYS, json.loads(row["summary"])) if v is not None},
                  "tags": tags.get(row["id"], [])} for row in rows]
        return [run for run in found if status is None or run["status"] == status]

    def _select(self, columns: str, status: str | None, name: str | None, tag: str | None,
                where: dict[str, Any] | None, ids: list[str] | None) -> tuple[list[sqlite3.Row], dict[str, list[str]]]:
        """One query for the filtered rows (oldest first) and one for all tags."""
        clauses, params = [], []
        if name:
            clauses.append("name GLOB ?")
            params.append(name)
        if tag:
            clauses.append("id IN (SELECT run_id FROM tags WHERE tag = ?)")
            params.append(tag)
        for key, value in (where or {}).items():
            clauses.append("json_extract(config, ?) = ?")
            params += [f"$.{key}", value]
        if ids:
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            params += ids
        if status in ("finished", "diverged", "failed"):
            clauses.append("status = ?")
            params.append(status)
        elif status in ("running", "interrupted"):  # a stored `running` may read interrupted (dead process)
            clauses.append("status IN ('running', ?)")
            params.append(status)
        sql = f"SELECT {columns} FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "") + \
            " ORDER BY created_at, rowid"  # rowid: insertion order within a second
        self.conn.row_factory = sqlite3.Row
        try:
            rows = self.conn.execute(sql, params).fetchall()
            tags = self._tags([r["id"] for r in rows])
        finally:
            self.conn.row_factory = None
        return rows, tags

    def _tags(self, run_ids: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for run_id, tag in self.conn.execute("SELECT run_id, tag FROM tags ORDER BY tag"):
            found.setdefault(run_id, []).append(tag)
        return found

    def metrics(self, run_id: str) -> list[dict]:
        return [json.loads(d) for (d,) in self.conn.execute(
            "SELECT data FROM metrics WHERE run_id=? ORDER BY step", (run_id,))]

    def events(self, run_id: str) -> list[dict]:
        return [json.loads(d) for (d,) in self.conn.execute(
            "SELECT data FROM events WHERE run_id=? ORDER BY step, id", (run_id,))]

    def notes(self, run_id: str) -> list[dict]:
        return [{"time": t, "text": text} for t, text in self.conn.execute(
            "SELECT time, text FROM notes WHERE run_id=? ORDER BY time, id", (run_id,))]

    def find_finished(self, content_key: str) -> Run | None:
        """The newest finished run with this content key, if any."""
        row = self.conn.execute("SELECT id FROM runs WHERE content_key=? AND status='finished'"
                                " ORDER BY created_at DESC, rowid DESC LIMIT 1", (content_key,)).fetchone()
        return self.runs(ids=[row[0]])[0] if row else None

    def finished_with_hashes(self, config_hashes: list[str]) -> list[Run]:
        """The finished runs of these configs (any seed, study or command), oldest first."""
        if not config_hashes:
            return []
        rows = self.conn.execute(f"SELECT id FROM runs WHERE status='finished' AND config_hash IN "
                                 f"({','.join('?' * len(config_hashes))})", config_hashes).fetchall()
        return self.runs(ids=[row[0] for row in rows]) if rows else []

    # -- config columns, tag removal and run removal (`ablab runs --columns`, `tag --remove`, `runs rm`) --
    def config_values(self, keys: list[str]) -> dict[str, list[Any]]:
        """Run id -> the values of these dotted config keys (None where a run's config lacks one),
        in one query that decodes nothing else, so listing thousands of runs with them stays fast."""
        if not keys:
            return {}
        # Given two paths or more, json_extract returns a JSON array, in which true and false stay
        # booleans (of one path it returns 1 or 0), so a single key is asked for twice.
        paths = [f"$.{key}" for key in keys] * (1 if len(keys) > 1 else 2)
        rows = self.conn.execute(f"SELECT id, json_extract(config, {', '.join('?' * len(paths))}) FROM runs", paths)
        return {run_id: json.loads(values)[:len(keys)] for run_id, values in rows}

    def remove_tag(self, run_id: str, tag: str, at: str | None = None) -> bool:
        """Take a tag off a run, its removal written to the tag history; False when the run did not have it."""
        with self._write():
            removed = self.conn.execute("DELETE FROM tags WHERE run_id=? AND tag=?", (run_id, tag)).rowcount > 0
            if removed:
                self._tag_event(run_id, tag, "remove", at)
        return removed

    def study_links(self, run_id: str) -> list[tuple[str, str, int]]:
        """(study, arm, seed) of every study cell this run fills."""
        return list(self.conn.execute(
            "SELECT study, arm, seed FROM study_runs WHERE run_id=? ORDER BY study, arm, seed", (run_id,)))

    def delete_run(self, run_id: str) -> dict[str, int]:
        """Delete one run's rows (the run, its metrics, events, notes, tags, benchmark results, samples
        and study links) in one transaction, and return how many rows each table lost. Every statement
        names this run id, so no other run's rows are touched. The run's row goes first: schema 6's
        triggers let a settled run's metrics, notes and tag history go only with the run itself."""
        tables = {"runs": "id", "metrics": "run_id", "events": "run_id", "notes": "run_id", "tags": "run_id",
                  "tag_history": "run_id", "eval_results": "run_id", "samples": "run_id", "study_runs": "run_id"}
        with self._write():
            return {table: self.conn.execute(f"DELETE FROM {table} WHERE {column}=?", (run_id,)).rowcount
                    for table, column in tables.items()}


def _run_from_row(row: sqlite3.Row, tags: list[str]) -> Run:
    return Run(
        id=row["id"], name=row["name"], status=live_status(row["status"], row["host"], row["pid"], row["heartbeat"]),
        created_at=row["created_at"], finished_at=row["finished_at"], config_hash=row["config_hash"],
        seed=row["seed"], data_fingerprint=row["data_fingerprint"], code_version=row["code_version"],
        content_key=row["content_key"], config=json.loads(row["config"]), provenance=json.loads(row["provenance"]),
        result=json.loads(row["result"]), host=row["host"], pid=row["pid"], heartbeat=row["heartbeat"], tags=tags)


def live_status(status: str, host: str | None, pid: int | None, heartbeat: float | None) -> str:
    """A `running` run whose process is gone reads `interrupted` (and is resumable): on this host
    when its pid no longer exists, elsewhere when its heartbeat is older than STALE_SECONDS."""
    if status != "running":
        return status
    if host == socket.gethostname() and pid:
        return "running" if _pid_alive(pid) else "interrupted"
    if heartbeat is not None and time.time() - heartbeat > STALE_SECONDS:
        return "interrupted"
    return "running"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
