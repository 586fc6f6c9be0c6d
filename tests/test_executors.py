"""Executors change where runs execute, never what they compute; only the driver writes the ledger."""

import os
import signal
from pathlib import Path

import pytest
import torch

from ablab import baselines, executors, study_runner
from ablab import config as C
from ablab.errors import UserError
from ablab.executors_local import WRITES
from ablab.ledger import Ledger
from ablab.study_runner import make_plan, run_study
from conftest import TINY
from test_study import write_study

BASE = "tiny@2026-11-01"


@pytest.fixture
def one_thread():
    """train.threads=1 sets this process's torch threads; give the rest of the session its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_lab(root: Path) -> Path:
    cfg = C.load(None, [*TINY, "train.max_steps=20", "eval.every=10", "train.threads=1"])
    baselines.create(root, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    return root


def final_losses(lab: Path, study: str) -> dict:
    with Ledger(lab) as ledger:
        return {cell: ledger.run(run_id).final["val_loss"] for cell, run_id in ledger.study_runs(study).items()}


class WatchedLedger(Ledger):
    """The real Ledger, noting which process applied each write."""
    writes: list = []
    metric_steps: set = set()

    def __getattribute__(self, name):
        if name in WRITES:
            WatchedLedger.writes.append((name, os.getpid()))
        return super().__getattribute__(name)

    def log_metrics(self, run_id, rows):
        rows = list(rows)
        WatchedLedger.metric_steps |= {(run_id, row["step"]) for row in rows}
        super().log_metrics(run_id, rows)


def test_local_workers_give_the_inline_losses_and_never_open_the_ledger(tmp_path, monkeypatch, one_thread):
    design = 'variables = { "model.d_ff" = [96] }'
    inline_lab, local_lab = make_lab(tmp_path / "inline"), make_lab(tmp_path / "local")
    plan = make_plan(inline_lab, write_study(inline_lab, "ff", design, seeds="[0, 1]"), probe=False)
    assert run_study(inline_lab, plan, say=lambda s: None) == "finished"
    monkeypatch.setattr(study_runner, "Ledger", WatchedLedger)
    plan = make_plan(local_lab, write_study(local_lab, "ff", design, seeds="[0, 1]"), probe=False)
    assert run_study(local_lab, plan, say=lambda s: None, executor="local", workers=2) == "finished"
    inline, local = final_losses(inline_lab, "ff"), final_losses(local_lab, "ff")
    assert len(local) == 4 and local.keys() == inline.keys()
    assert all(abs(local[cell] - inline[cell]) <= 1e-6 for cell in inline), (inline, local)
    writes = WatchedLedger.writes
    assert {pid for _, pid in writes} == {os.getpid()}  # every write applied by the driver
    assert sum(name == "record_run" for name, _ in writes) == 4
    with Ledger(local_lab) as ledger:  # and nothing reached the database another way
        assert ledger.row_counts()["metrics"] == len(WatchedLedger.metric_steps) == 4 * 5  # steps 0, 5, .., 20
        assert {run.pid for run in ledger.runs()} == {os.getpid()}


def test_a_crashing_run_fails_alone_and_an_interrupted_study_trains_only_what_is_missing(tmp_path, one_thread):
    lab = make_lab(tmp_path)
    plan = make_plan(lab, write_study(lab, "crash", 'variables = { "model.d_ff" = [192] }', seeds="[5, 6]"), probe=False)
    calls = {"runs": 0}

    def progress_for(arm, seed):
        calls["runs"] += 1
        if calls["runs"] == 2:  # Ctrl-C on the driver while the second run trains
            return lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 8 else None
        return None

    said = []
    assert run_study(lab, plan, progress_for, say=said.append, executor="local", workers=2) == "interrupted"
    with Ledger(lab) as ledger:
        before = ledger.study_runs("crash")
        status = {cell: ledger.run(run_id).status for cell, run_id in before.items()}
        runs_before = len(ledger.runs())
    assert "interrupted" in status.values() and set(status.values()) <= {"finished", "interrupted"}
    assert len(before) < 4  # the cells after the interruption were never dispatched
    broken_cell = next(cell for cell, s in status.items() if s == "interrupted")
    for path in (lab / ".ablab" / "runs" / before[broken_cell] / "checkpoints").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")
    assert run_study(lab, plan, say=said.append, executor="local", workers=2, retries=1) == "failed"
    with Ledger(lab) as ledger:
        after = ledger.study_runs("crash")
        assert all(after[cell] == run_id for cell, run_id in before.items())  # resumed, never retrained
        assert len(ledger.runs()) == runs_before + 4 - len(before)  # only the missing runs are new
        broken = ledger.run(after[broken_cell])
        assert broken.status == "failed" and broken.result["error"].startswith("CheckpointError: Every checkpoint")
        assert "Traceback" in broken.result["traceback"] and len(broken.result["previous_errors"]) == 1
        assert all(ledger.run(r).status == "finished" for cell, r in after.items() if cell != broken_cell)
        assert any(e["kind"] == "failed" for e in ledger.events(broken.id))
    assert any(f"run {broken.id} failed: CheckpointError" in line for line in said)


def test_executor_names_and_workers_are_checked():
    with pytest.raises(UserError, match="Unknown executor 'ray'; choose one of: inline, local."):
        executors.get("ray")
    with pytest.raises(UserError, match="use --executor local"):
        executors.get("inline", workers=2)
    with pytest.raises(UserError, match="at least 1"):
        executors.get("local", workers=0)
