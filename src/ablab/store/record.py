"""The run record: the one place that writes a run's directory.

.ablab/runs/<id>/
  config.json     the full config (canonical JSON) and its hash
  result.json     status, final and best metrics, params, FLOPs, tokens, wall-clock, data identity
  metrics.jsonl   one JSON object per logged step
  samples.jsonl   continuations of the eval.prompts suite: {step, prompt, mode (greedy|sampled), seed, text}
  events.jsonl    divergence, loss spikes, resumes, skipped corrupt checkpoints, interruptions
  provenance.json git state, command line, versions, host, data and tokenizer fingerprints
  pip-freeze.txt  every installed package; code.diff: the uncommitted diff, when there is one
  train.log       human-readable lines
  checkpoints/    see ablab.store.checkpoint
  .lock           held by the process training the run (ablab.store.runlock): one trainer per run

Every write also goes to the lab's ledger (ablab.store.ledger), the source of truth for queries; the
files make a run directory self-describing on its own. Every whole-file write is atomic (temp file,
fsync, rename); appends are line-at-a-time, and readers skip a torn last line left by a kill. Files
are written before the ledger, so that what a kill between the two leaves is repaired from the files
when the ledger is next opened (ablab.store.reconcile).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ablab import config as config_mod
from ablab.config import Config
from ablab.errors import UserError
from ablab.store.ledger import Ledger, Run, pending_path
from ablab.store.provenance import collect as collect_provenance
from ablab.store.runlock import RunLock

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")


def now_iso() -> str:
    """UTC time to the microsecond, so that runs created in the same second still sort in order."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """All complete records of a JSONL file; a torn final line (killed mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def runs_root(lab: Path) -> Path:
    return lab / ".ablab" / "runs"


def sample_rows(rows: list[dict]) -> list[dict]:
    """The rows of a samples.jsonl that have the fields the ledger keys them by (a hand-edited or
    foreign file's other lines are left in the file, out of the ledger)."""
    kinds = {"step": int, "prompt": str, "mode": str, "text": str}
    return [row for row in rows if all(isinstance(row.get(key), kind) and not isinstance(row.get(key), bool)
                                       for key, kind in kinds.items())]


RUN_ID_BYTES = 4  # a run id is this many random bytes in lowercase hex (RunRecord.create)
RUN_ID = re.compile(f"[0-9a-f]{{{2 * RUN_ID_BYTES}}}")


def is_run_id(text: Any) -> bool:
    """Whether `text` has the form of an id RunRecord.create makes: what an imported archive or run
    directory must name, so that its folder lands inside runs/ and nowhere else."""
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


def content_key(config_hash: str, seed: int, data_fingerprint: str, code_version: str) -> str:
    """A run's identity: same key and finished means the same computation, so it is reused."""
    text = f"{config_hash}|{seed}|{data_fingerprint}|{code_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class RunRecord:
    run_id: str
    dir: Path
    ledger: Ledger
    mirrors: list = field(default_factory=list)  # ablab.train.mirrors objects fed a copy of every metric row
    lock: RunLock | None = field(default=None, repr=False)  # held while this process trains the run

    @classmethod
    def create(cls, lab: Path, cfg: Config, identity: dict[str, Any], ledger: Ledger | None = None,
               provenance: tuple[dict, dict[str, str]] | None = None) -> "RunRecord":
        """A new run directory and ledger row, the run locked by this process (its trainer).
        `identity` holds data_fingerprint, tokenizer_fingerprint and the rest of what the run is
        known by before it trains; `provenance` is ablab.store.provenance.collect(lab) when the
        caller already has it. The run is marked pending until its row is in, result.json being the
        last file before the row: ablab.store.reconcile finishes or removes what a kill cuts off."""
        ledger = ledger or Ledger(lab)
        provenance, files = provenance or collect_provenance(lab)
        provenance = dict(provenance)
        root = runs_root(lab)
        root.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = secrets.token_hex(RUN_ID_BYTES)
            if not _mark_pending(lab, run_id):
                continue
            try:
                (root / run_id).mkdir()
                break
            except FileExistsError:
                pending_path(lab, run_id).unlink()
                continue
        record = cls(run_id, root / run_id, ledger)
        record.hold()
        record.checkpoints_dir.mkdir()
        chash = config_mod.config_hash(cfg)
        write_json_atomic(record.dir / "config.json", {"config": config_mod.to_dict(cfg), "config_hash": chash})
        for name, text in files.items():
            (record.dir / name).write_text(text, encoding="utf-8")
        provenance |= identity | {"config_hash": chash}
        write_json_atomic(record.dir / "provenance.json", provenance)
        result = {"run_id": run_id, "name": cfg.name, "status": "running", "created_at": now_iso(),
                  "config_hash": chash, "seed": cfg.seed, **identity}
        write_json_atomic(record.dir / "result.json", result)
        key = content_key(chash, cfg.seed, identity["data_fingerprint"], provenance["code_version"])
        ledger.record_run(Run(
            id=run_id, name=cfg.name, status="running", created_at=result["created_at"], finished_at=None,
            config_hash=chash, seed=cfg.seed, data_fingerprint=identity["data_fingerprint"],
            code_version=provenance["code_version"], content_key=key, config=config_mod.to_dict(cfg),
            provenance=provenance, result=result))
        return record

    @classmethod
    def open(cls, lab: Path, run_id: str, ledger: Ledger | None = None) -> "RunRecord":
        ledger = ledger or Ledger(lab)
        full_id = ledger.resolve(run_id)
        folder = runs_root(lab) / full_id
        if not folder.is_dir():
            raise UserError(f"Run {full_id} is in the ledger but its directory {folder} is gone; "
                            "restore it from an `ablab export` archive with `ablab import`.")
        return cls(full_id, folder, ledger)

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    def hold(self) -> None:
        """Take the run's lock for this process (ablab.store.runlock), or raise RunBusyError naming the
        process that trains it; holding it already is fine."""
        self.lock = (self.lock or RunLock(self.run_id, self.dir)).acquire()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def config(self) -> Config:
        raw = json.loads((self.dir / "config.json").read_text(encoding="utf-8"))["config"]
        return config_mod.from_dict(raw, where=str(self.dir / "config.json"))

    def result(self) -> dict[str, Any]:
        path = self.dir / "result.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def write_result(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.dir / "result.json", result)
        self.ledger.finish_run(self.run_id, result["status"], result, result.get("finished_at"))
        if result["status"] != "running":
            self._mirror("finish", result["status"], result)

    def start_mirrors(self, mirrors: list, lab: Path, cfg: Config) -> None:
        self.mirrors = list(mirrors)
        self._mirror("start", lab, self.run_id, cfg.name, config_mod.to_dict(cfg))

    def _mirror(self, method: str, *args: Any) -> None:
        """Call `method` on every mirror; one that raises is switched off with an event, never
        stopping the run (the ledger and these files are the record; mirrors are copies)."""
        for mirror in list(self.mirrors):
            try:
                getattr(mirror, method)(*args)
            except Exception as err:  # any failure of a third-party logger
                self.mirrors.remove(mirror)
                self.log_event("mirror_failed", -1, f"{mirror.name} mirror switched off: {type(err).__name__}: {err}")

    def update_result(self, **changes: Any) -> dict[str, Any]:
        result = self.result() | changes
        self.write_result(result)
        return result

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def log_metrics(self, row: dict[str, Any]) -> None:
        self._append("metrics.jsonl", row)
        self.ledger.log_metrics(self.run_id, [row])
        self._mirror("log", row)

    def log_event(self, kind: str, step: int, message: str, **data: Any) -> None:
        event = {"kind": kind, "step": step, "message": message, "time": now_iso(), **data}
        self._append("events.jsonl", event)
        self.ledger.log_event(self.run_id, event)
        self.log_line(f"[{kind}] step {step}: {message}")

    def log_evals(self, rows: list[dict]) -> None:
        """Benchmark results (ablab.evals.runner.eval_rows) into evals.jsonl and the ledger."""
        for row in rows:
            self._append("evals.jsonl", row)
        self.ledger.record_evals(rows)

    def log_samples(self, rows: list[dict]) -> None:
        """Continuations of the prompt suite (ablab.evals.prompts.continue_prompts) into samples.jsonl,
        a whole line each, so a kill leaves every earlier row readable."""
        if rows:
            with open(self.dir / "samples.jsonl", "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
            self.ledger.record_samples(self.run_id, rows)

    def heartbeat(self) -> None:
        self.ledger.heartbeat(self.run_id)

    def log_line(self, text: str) -> None:
        with open(self.dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def metrics(self) -> list[dict]:
        return read_jsonl(self.dir / "metrics.jsonl")

    def events(self) -> list[dict]:
        return read_jsonl(self.dir / "events.jsonl")

    def samples(self) -> list[dict]:
        return read_jsonl(self.dir / "samples.jsonl")

    def truncate_samples(self, after_step: int) -> None:
        """Drop samples past `after_step`, as truncate_metrics does for a resume."""
        path = self.dir / "samples.jsonl"
        if not path.exists():
            return
        self.ledger.truncate_samples(self.run_id, after_step)
        self._rewrite_jsonl("samples.jsonl", [row for row in self.samples() if row.get("step", 0) <= after_step])

    def _rewrite_jsonl(self, name: str, rows: list[dict]) -> None:
        """Replace the run's `name` with `rows`, atomically (a kill leaves the old file or the new one)."""
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric rows past `after_step` (written after the checkpoint a resume starts from)."""
        kept = [row for row in self.metrics() if row.get("step", 0) <= after_step]
        self._rewrite_jsonl("metrics.jsonl", kept)
        self.ledger.truncate_metrics(self.run_id, after_step)
        if kept:  # rows a killed driver never applied reach the ledger now; those it has merge unchanged
            self.ledger.log_metrics(self.run_id, kept)


def _mark_pending(lab: Path, run_id: str) -> bool:
    """Mark `run_id` as being created by this process; False when that id is already marked."""
    path = pending_path(lab, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    return True
