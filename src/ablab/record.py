"""The run record: the one place that writes a run's directory.

.ablab/runs/<id>/
  config.json     the full config (canonical JSON) and its hash
  result.json     status, final and best metrics, params, FLOPs, tokens, wall-clock, data identity
  metrics.jsonl   one JSON object per logged step
  events.jsonl    divergence, loss spikes, resumes, skipped corrupt checkpoints, interruptions
  train.log       human-readable lines
  checkpoints/    see ablab.checkpoint

Every whole-file write is atomic (temp file, fsync, rename); appends are line-at-a-time, and
readers skip a torn last line left by a kill.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ablab import config as config_mod
from ablab.config import Config
from ablab.errors import UserError

STATUSES = ("running", "finished", "diverged", "interrupted", "failed")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


@dataclass
class RunRecord:
    run_id: str
    dir: Path

    @classmethod
    def create(cls, lab: Path, cfg: Config) -> "RunRecord":
        root = runs_root(lab)
        root.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = secrets.token_hex(4)
            try:
                (root / run_id).mkdir()
                break
            except FileExistsError:
                continue
        record = cls(run_id, root / run_id)
        record.checkpoints_dir.mkdir()
        write_json_atomic(record.dir / "config.json", {
            "config": config_mod.to_dict(cfg), "config_hash": config_mod.config_hash(cfg),
        })
        record.write_result({"run_id": run_id, "name": cfg.name, "status": "running",
                             "created_at": now_iso(), "config_hash": config_mod.config_hash(cfg),
                             "seed": cfg.seed})
        return record

    @classmethod
    def open(cls, lab: Path, run_id: str) -> "RunRecord":
        root = runs_root(lab)
        matches = sorted(p for p in root.glob(f"{run_id}*") if p.is_dir()) if root.is_dir() else []
        if not matches:
            raise UserError(f"No run '{run_id}' in {root}; list runs with `ls {root}` or check the lab directory.")
        if len(matches) > 1:
            raise UserError(f"Run id '{run_id}' is ambiguous ({', '.join(p.name for p in matches)}); give more characters.")
        return cls(matches[0].name, matches[0])

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    def config(self) -> Config:
        raw = json.loads((self.dir / "config.json").read_text(encoding="utf-8"))["config"]
        return config_mod.from_dict(raw, where=str(self.dir / "config.json"))

    def result(self) -> dict[str, Any]:
        path = self.dir / "result.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def write_result(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.dir / "result.json", result)

    def update_result(self, **changes: Any) -> dict[str, Any]:
        result = self.result() | changes
        self.write_result(result)
        return result

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def log_metrics(self, row: dict[str, Any]) -> None:
        self._append("metrics.jsonl", row)

    def log_event(self, kind: str, step: int, message: str, **data: Any) -> None:
        self._append("events.jsonl", {"kind": kind, "step": step, "message": message,
                                      "time": now_iso(), **data})
        self.log_line(f"[{kind}] step {step}: {message}")

    def log_line(self, text: str) -> None:
        with open(self.dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def metrics(self) -> list[dict]:
        return read_jsonl(self.dir / "metrics.jsonl")

    def events(self) -> list[dict]:
        return read_jsonl(self.dir / "events.jsonl")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric rows past `after_step` (written after the checkpoint a resume starts from)."""
        kept = [row for row in self.metrics() if row.get("step", 0) <= after_step]
        tmp = self.dir / ".metrics.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "metrics.jsonl")
