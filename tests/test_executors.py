"""Executors change where runs execute, never what they compute; only the driver writes the ledger."""

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from ablab import config as C
from ablab.errors import UserError
from ablab.executors import base as executors
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study import runner as study_runner
from ablab.study.runner import make_plan, run_study

from conftest import TINY, run_cli
from test_study import write_study

WRITES = Ledger.RUN_WRITES  # what a worker sends the driver (ablab.store.proxy)

BASE = "tiny@2026-11-01"


def make_lab(root: Path) -> Path:
    cfg = C.load(None, [*TINY, "train.max_steps=20", "eval.every=10", "train.threads=1"])
    baselines.create(root, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    return root


def cluster_lab(root: Path) -> Path:
    """A lab whose slurm executor runs its jobs as local processes (submitit's local cluster)."""
    lab = make_lab(root)
    (lab / "ablab.toml").write_text('[executor.slurm]\ncluster = "local"\ntime_min = 10\n')
    return lab


def on_run(n: int, callback):
    """A progress_for that gives `callback` to the n-th run dispatched and nothing to the others."""
    dispatched = []

    def progress_for(arm, seed):
        dispatched.append((arm, seed))
        return callback if len(dispatched) == n else None
    return progress_for


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


@pytest.fixture(scope="module")
def inline_losses(tmp_path_factory):
    """The reference: the study's final losses trained one run after another in this process."""
    before = torch.get_num_threads()
    lab = make_lab(tmp_path_factory.mktemp("inline"))
    plan = make_plan(lab, write_study(lab, "ff", PARITY_DESIGN, seeds="[0, 1]"), probe=False)
    assert run_study(lab, plan, say=lambda s: None) == "finished"
    torch.set_num_threads(before)
    return final_losses(lab, "ff")


PARITY_DESIGN = 'variables = { "model.d_ff" = [96] }'
RACE_BUDGET = 60 * 16 * 64  # tokens: 60 steps of the tiny model


@pytest.mark.parametrize("executor", ["local", "ray", "slurm"])
def test_workers_give_the_inline_losses_and_never_open_the_ledger(executor, inline_losses, tmp_path, monkeypatch,
                                                                   one_thread):
    lab = cluster_lab(tmp_path)
    WatchedLedger.writes, WatchedLedger.metric_steps = [], set()
    monkeypatch.setattr(study_runner, "Ledger", WatchedLedger)
    plan = make_plan(lab, write_study(lab, "ff", PARITY_DESIGN, seeds="[0, 1]"), probe=False)
    assert run_study(lab, plan, say=lambda s: None, executor=executor, workers=2) == "finished"
    local = final_losses(lab, "ff")
    assert len(local) == 4 and local.keys() == inline_losses.keys()
    assert all(abs(local[cell] - inline_losses[cell]) <= 1e-6 for cell in local), (inline_losses, local)
    writes = WatchedLedger.writes
    assert {pid for _, pid in writes} == {os.getpid()}  # every write applied by the driver
    assert sum(name == "record_run" for name, _ in writes) == 4
    with Ledger(lab) as ledger:  # and nothing reached the database another way
        assert ledger.row_counts()["metrics"] == len(WatchedLedger.metric_steps) == 4 * 5  # steps 0, 5, .., 20
        runs = ledger.runs()
    assert os.getpid() not in {run.pid for run in runs}  # each row names the worker that trained it
    assert not (lab / ".ablab" / "spool").exists() or not any((lab / ".ablab" / "spool").iterdir())


# Slurm's own failure (a job that never completes) is test_a_worker_killed_mid_run_fails_that_run_alone's;
# its crash-and-resume goes through the same spool driver as Ray's.
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_crashing_run_fails_alone_and_an_interrupted_study_trains_only_what_is_missing(executor, tmp_path,
                                                                                         one_thread):
    lab = cluster_lab(tmp_path)
    # 60 steps, stopped at step 2: the driver applies a worker's progress rows a little after the worker
    # sent them, so the run must still have most of its steps to go when the stop reaches it.
    plan = make_plan(lab, write_study(lab, "crash", 'variables = { "model.d_ff" = [192] }', seeds="[5, 6]",
                                      budget=RACE_BUDGET), probe=False)
    # Ctrl-C on the driver while the second run trains
    progress_for = on_run(2, lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 2 else None)
    said = []
    assert run_study(lab, plan, progress_for, say=said.append, executor=executor, workers=2) == "interrupted"
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
    assert run_study(lab, plan, say=said.append, executor=executor, workers=2, retries=1) == "failed"
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
    with pytest.raises(UserError, match="Unknown executor 'dask'; choose one of: inline, local, ray, slurm."):
        executors.get("dask")
    with pytest.raises(UserError, match="use --executor local"):
        executors.get("inline", workers=2)
    with pytest.raises(UserError, match="at least 1"):
        executors.get("local", workers=0)
    with pytest.raises(UserError, match="--address names a Ray cluster"):
        executors.get("local", address="auto")


def test_engines_refuse_what_they_cannot_use_before_anything_runs(tmp_path, monkeypatch):
    (tmp_path / "ablab.toml").write_text('[executor.slurm]\npartition = "gpu"\ngpus = 2\n')
    with pytest.raises(UserError, match=r"\[executor.slurm\] has no setting 'gpus'; the settings are: partition, "):
        executors.get("slurm", lab=tmp_path)
    (tmp_path / "ablab.toml").write_text('[executor.slurm]\ntime_min = "2h"\n')
    with pytest.raises(UserError, match="time_min = '2h' has the wrong type; give a whole number."):
        executors.get("slurm", lab=tmp_path)
    (tmp_path / "ablab.toml").write_text('[executor.slurm]\npartition = "gpu"\n')
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(UserError, match="sbatch is not on this machine.*cluster = \"local\""):
        executors.get("slurm", lab=tmp_path)
    for name, module in (("ray", "ray"), ("slurm", "submitit")):
        monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
        with pytest.raises(UserError, match=rf"needs the optional extra '{name}'; install it with pip install "
                                            rf"'ablab\[{name}\]'"):
            executors.get(name, lab=tmp_path)


@pytest.mark.parametrize("executor, error", [("ray", "WorkerCrashedError"), ("slurm", "UncompletedJobError")])
def test_a_worker_killed_mid_run_fails_that_run_alone(executor, error, tmp_path, one_thread):
    lab = cluster_lab(tmp_path)
    plan = make_plan(lab, write_study(lab, "kill", 'variables = { "model.d_ff" = [96] }', seeds="[0]",
                                      budget=RACE_BUDGET), probe=False)
    def kill_the_worker(step, row):
        if step == 2:
            with Ledger(lab) as ledger:  # a reader beside the driver: the row names the worker's pid
                (pid,) = [run.pid for run in ledger.runs() if run.status == "running"]
            os.kill(pid, signal.SIGKILL)

    said = []
    assert run_study(lab, plan, on_run(1, kill_the_worker), say=said.append, executor=executor, workers=1) == "failed"
    with Ledger(lab) as ledger:
        runs = {cell: ledger.run(run_id) for cell, run_id in ledger.study_runs("kill").items()}
        killed = runs[("baseline", 0)]
        assert killed.status == "failed" and error in killed.result["error"]
        assert any(e["kind"] == "failed" for e in ledger.events(killed.id))
    assert [run.status for cell, run in runs.items() if cell != ("baseline", 0)] == ["finished"]
    assert any(f"run {killed.id} failed: worker died: {error}" in line for line in said)


def test_the_command_refuses_a_bad_executor_choice_in_one_sentence_before_probing(tmp_path):
    lab = make_lab(tmp_path)
    study = write_study(lab, "cli", 'variables = { "model.d_ff" = [96] }', seeds="[0]")
    (lab / "ablab.toml").write_text('[lab]\nname = "t"\n[executor.ray]\ncpus_per_run = "two"\n')
    for args, message in ((["--executor", "dask"], "Unknown executor 'dask'; choose one of: inline, local, ray, "
                                                   "slurm."),
                          (["--executor", "ray"], "[executor.ray] cpus_per_run = 'two' has the wrong type"),
                          (["--executor", "local", "--address", "auto"], "--address names a Ray cluster")):
        done = run_cli("study", "run", str(study), "--yes", *args, cwd=lab)
        assert done.returncode == 2, done.stdout + done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and "probe" not in done.stdout
    with Ledger(lab) as ledger:
        assert ledger.studies() == []  # nothing recorded, nothing trained


def test_a_ladder_trains_its_rungs_on_an_executor(tmp_path, one_thread):
    from ablab.study.ladder import parse_sizes, plan_ladder, run_ladder

    lab = make_lab(tmp_path)
    ladder = plan_ladder(lab, BASE, parse_sizes("32x1,48x1"), None, [16384], [0])
    said = []
    assert run_ladder(lab, ladder, say=said.append, executor="local") == "finished"
    with Ledger(lab) as ledger:
        runs = [ledger.run(run_id) for run_id in ledger.study_runs(ladder.study).values()]
    assert len(runs) == 2 and all(run.status == "finished" and run.pid != os.getpid() for run in runs)
    assert {run.config["model"]["d_model"] for run in runs} == {32, 48}
    assert len(said) == 2 and all("finished" in line for line in said)
