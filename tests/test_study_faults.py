"""A study links each run when the run is created, so a study killed mid-run (kill -9 or Ctrl-C),
twice, and run again resumes the interrupted run from its checkpoint instead of training a new one;
no run directory is left without its ledger row; a link to a run of an older arm config is not resumed."""

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from ablab import config as C
from ablab.errors import UserError
from ablab.store.ledger import Ledger, ledger_path
from ablab.store.record import runs_root
from ablab.study import baselines
from ablab.study.runner import make_plan, run_study

from conftest import ABLAB
from test_executors import RACE_BUDGET, cluster_lab, on_run
from test_study import write_study

STEPS = 120  # each run: long enough to be killed twice after a checkpoint, short enough for the suite
TINY_FAST = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64", "data.seq_len=32",
             "data.batch_size=4", "eval.every=0", "eval.tokens=256", "train.log_every=10",
             "train.checkpoint_every=20", "train.threads=1"]


def fault_lab(root: Path) -> Path:
    cfg = C.load(None, [*TINY_FAST, f"train.max_steps={STEPS}"])
    baselines.create(root, baselines.Baseline("tiny", "2026-11-01", cfg, [0]))
    return root


def checkpoint_steps(lab: Path) -> dict[str, int]:
    """Run id -> the step of its newest complete checkpoint (a hidden folder is one being written)."""
    found = {}
    for ckpt in runs_root(lab).glob("*/checkpoints/step-*"):
        found[ckpt.parent.parent.name] = max(found.get(ckpt.parent.parent.name, 0), int(ckpt.name.split("-")[1]))
    return found


def start_study(lab: Path, study: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*ABLAB, "study", "run", str(study), "--yes", *args], cwd=lab, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_after_a_checkpoint(lab: Path, study: Path, sig: int, past: dict[str, int], *args: str) -> dict[str, int]:
    """Run the study and send `sig` once a run has a checkpoint newer than `past`; the checkpoints then."""
    process = start_study(lab, study, *args)
    deadline = time.monotonic() + 240
    while not any(step > past.get(run_id, 0) for run_id, step in checkpoint_steps(lab).items()):
        assert process.poll() is None, f"the study ended before it could be killed:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(process.pid, sig)  # the driver alone: its workers (local executor) must notice by themselves
    output, _ = process.communicate(timeout=120)
    assert process.returncode in (-signal.SIGKILL, 130), output  # Ctrl-C: 130, interrupted and resumable
    while time.monotonic() < deadline:  # and every process it started has ended
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("processes of the killed study are still alive")
    if sig == signal.SIGINT:
        assert "interrupted; run `ablab study run" in output and "Traceback" not in output, output
    return checkpoint_steps(lab)


def ledger_rows(lab: Path) -> list[str]:
    with sqlite3.connect(ledger_path(lab)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return sorted(run_id for (run_id,) in conn.execute("SELECT id FROM runs"))


# Inline and kill -9 alone: a local driver's kill is tests/test_faults.py's, and Ctrl-C ends a run
# interrupted through the same link; each further case costs the suite 20-40 s.
@pytest.mark.parametrize("executor, sig", [("inline", signal.SIGKILL)], ids=["inline-kill-9"])
def test_a_study_killed_twice_mid_run_resumes_the_same_run_when_run_again(tmp_path, executor, sig, one_thread):
    lab = fault_lab(tmp_path)
    study = write_study(lab, "faults", 'variables = { "model.d_ff" = [96] }', seeds="[0]", axis="steps",
                        budget=STEPS)
    args = ("--executor", executor) + (("--workers", "1") if executor == "local" else ())
    first = kill_after_a_checkpoint(lab, study, sig, {}, *args)
    [killed] = ledger_rows(lab)  # the first cell's run: linked, with its row, when it was created
    assert list(first) == [killed]
    with Ledger(lab) as ledger:
        assert ledger.study_runs("faults") == {("baseline", 0): killed}
        assert ledger.run(killed).status == "interrupted"
    second = kill_after_a_checkpoint(lab, study, sig, first, *args)
    assert ledger_rows(lab) == [killed] and second[killed] > first[killed]  # resumed and went on, not restarted

    said = []  # run again in this process: what it costs is the two runs, not a second start-up
    assert run_study(lab, make_plan(lab, study, probe=False), say=said.append, executor=executor,
                     workers=1 if executor == "local" else None) == "finished", said
    assert said[0] == f"baseline seed 0: run {killed} finished"
    rows = ledger_rows(lab)
    assert len(rows) == 2 and killed in rows  # one run per cell: the killed one finished, one new for the arm
    assert sorted(p.name for p in runs_root(lab).iterdir()) == rows  # no run directory without its row
    with Ledger(lab) as ledger:
        links = ledger.study_runs("faults")
        assert links[("baseline", 0)] == killed and set(links.values()) == set(rows)
        assert all(ledger.run(run_id).status == "finished" for run_id in rows)
        resumes = [e["step"] for e in ledger.events(killed) if e["kind"] == "resume"]
        assert resumes == [first[killed], second[killed]]  # each re-run went on from the newest checkpoint
        assert ledger.run(killed).result["steps"] == STEPS


# Ray and Slurm share the spool's driver (ablab.executors.spool): Slurm's local jobs stand for both.
@pytest.mark.parametrize("executor", ["inline", "local", "slurm"])
def test_every_executor_links_a_run_to_its_cell_before_it_trains(executor, tmp_path, one_thread):
    lab = cluster_lab(tmp_path)
    plan = make_plan(lab, write_study(lab, "early", 'variables = { "model.d_ff" = [96] }', seeds="[0]",
                                      budget=RACE_BUDGET), probe=False)
    seen = []

    def look(step, row):  # on the driver, while the first run trains
        if step == 2 and not seen:
            with Ledger(lab) as ledger:
                seen.append((ledger.study_runs("early"), [run.id for run in ledger.runs(status="running")]))
            os.kill(os.getpid(), signal.SIGINT)

    workers = None if executor == "inline" else 1
    assert run_study(lab, plan, on_run(1, look), say=lambda s: None, executor=executor, workers=workers) \
        == "interrupted"
    [(links, running)] = seen
    assert len(running) == 1 and links == {("baseline", 0): running[0]}


def test_a_link_to_a_run_of_an_older_arm_config_is_not_resumed(tmp_path):
    lab = fault_lab(tmp_path)
    path = write_study(lab, "edited", 'variables = { "model.d_ff" = [96] }', seeds="[0]", axis="steps", budget=STEPS)
    stop_at = lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 30 else None  # noqa: E731
    assert run_study(lab, make_plan(lab, path, probe=False), on_run(1, stop_at), say=lambda s: None) == "interrupted"
    with Ledger(lab) as ledger:
        old = ledger.study_runs("edited")[("baseline", 0)]
        assert ledger.run(old).status == "interrupted"
    path.write_text(path.read_text().replace(f"budget = {STEPS}", f"budget = {STEPS // 2}"))  # the design changed
    assert run_study(lab, make_plan(lab, path, probe=False), say=lambda s: None) == "finished"
    with Ledger(lab) as ledger:
        new = ledger.study_runs("edited")[("baseline", 0)]
        assert new != old and ledger.run(new).result["steps"] == STEPS // 2
        assert ledger.run(old).status == "interrupted"  # left as it was, not resumed under the new design


def test_a_linked_run_still_training_stops_a_second_run_of_the_study(tmp_path):
    lab = fault_lab(tmp_path)
    path = write_study(lab, "twice", 'variables = { "model.d_ff" = [96] }', seeds="[0]", axis="steps", budget=STEPS)
    plan = make_plan(lab, path, probe=False)
    refused = []

    def second_driver(step, row):  # a second `ablab study run` while the first one trains
        if step == 2 and not refused:
            with pytest.raises(UserError) as err:
                run_study(lab, plan, say=lambda s: None)
            refused.append(str(err.value))
            os.kill(os.getpid(), signal.SIGINT)

    assert run_study(lab, plan, on_run(1, second_driver), say=lambda s: None) == "interrupted"
    [message] = refused
    assert "of baseline seed 0 is still training (pid" in message and message.endswith("run the study again.")
    with Ledger(lab) as ledger:
        assert len(ledger.runs()) == 1


def test_a_run_of_the_cell_created_but_not_yet_linked_when_the_study_died_is_resumed(tmp_path, one_thread):
    from ablab.study.runner import with_seed
    from ablab.train.launch import start_run

    lab = fault_lab(tmp_path)
    path = write_study(lab, "orphan", 'variables = { "model.d_ff" = [96] }', seeds="[0]", axis="steps", budget=STEPS)
    plan = make_plan(lab, path, probe=False)
    cfg = with_seed(plan.rows[0].arm.config, 0, "orphan/baseline")  # the run the study would create for the cell
    stop_at = lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 30 else None  # noqa: E731
    orphan = start_run(cfg, lab, stop_at)
    assert orphan.status == "interrupted"
    said = []
    assert run_study(lab, plan, say=said.append) == "finished"
    with Ledger(lab) as ledger:
        assert ledger.study_runs("orphan")[("baseline", 0)] == orphan.run_id and len(ledger.runs()) == 2
        assert ledger.run(orphan.run_id).status == "finished"
    assert said[0] == f"baseline seed 0: run {orphan.run_id} finished"
