"""One record, never split, and one trainer per run, under real kill -9s: a kill between a run's
files and its ledger row is repaired when the ledger is next opened; a second trainer of a run is
refused in one sentence naming the pid that trains it; a local driver killed outright takes its
workers with it, and the runs they finished are not trained again."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from ablab import config as C
from ablab.store.ledger import Ledger, ledger_path, pending_root
from ablab.store.record import read_jsonl, runs_root
from ablab.study import baselines
from ablab.train.launch import start_run

from conftest import ABLAB, run_cli
from test_study import write_study

FAST = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64", "data.seq_len=32",
        "data.batch_size=4", "eval.every=0", "eval.tokens=256", "train.log_every=10", "train.threads=1"]

# A child process that creates a tiny run in each lab it is given and stops it at one moment of writing
# its record (an exception there, which nothing catches), then kills itself with SIGKILL: each lab holds
# what a kill -9 at that moment leaves, for one process start rather than one per moment.
KILLED_AT = """
import os, signal, sys
from pathlib import Path
from ablab import config
from ablab.store import ledger, record
from ablab.train.launch import start_run

class Stop(Exception):
    pass

def stop(*args):
    raise Stop

finish_run, record_run, write = ledger.Ledger.finish_run, ledger.Ledger.record_run, record.write_json_atomic
cfg = config.load(None, sys.argv[1:])
for lab in ("final-write", "resume-first", "before-row", "mid-creation"):
    ledger.Ledger.finish_run, ledger.Ledger.record_run, record.write_json_atomic = finish_run, record_run, write
    if lab in ("final-write", "resume-first"):  # result.json says finished; the row is not written yet
        ledger.Ledger.finish_run = lambda self, run_id, status, *rest: \\
            stop() if status == "finished" else finish_run(self, run_id, status, *rest)
    elif lab == "before-row":  # the directory and its files exist; the row does not
        ledger.Ledger.record_run = stop
    else:  # the directory exists, result.json does not
        record.write_json_atomic = lambda path, data: stop() if path.name == "result.json" else write(path, data)
    Path(lab).mkdir()
    try:
        start_run(cfg, Path(lab).resolve())
    except Stop:
        pass
os.kill(os.getpid(), signal.SIGKILL)
"""


def rows(lab: Path) -> dict[str, str]:
    """Run id -> stored status, read with sqlite itself (opening a Ledger would reconcile it)."""
    with sqlite3.connect(ledger_path(lab)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return dict(conn.execute("SELECT id, status FROM runs"))


def result_of(lab: Path, run_id: str) -> dict:
    return json.loads((runs_root(lab) / run_id / "result.json").read_text())


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a reparented child waits for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_kill_between_the_files_and_the_row_is_repaired_on_the_next_open(tmp_path):
    child = subprocess.run([sys.executable, "-c", KILLED_AT, *FAST, "train.max_steps=8"], cwd=tmp_path, check=False,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    labs = {name: tmp_path / name for name in ("final-write", "resume-first", "before-row", "mid-creation")}

    # The final write: result.json says finished, the row says running (its process is dead).
    lab = labs["final-write"]
    [(run_id, status)] = rows(lab).items()
    assert status == "running" and result_of(lab, run_id)["status"] == "finished"
    listed = run_cli("runs", "--format", "json", cwd=lab)
    assert listed.returncode == 0, listed.stderr
    assert [(r["id"], r["status"]) for r in json.loads(listed.stdout)] == [(run_id, "finished")]
    assert rows(lab) == {run_id: "finished"}
    with Ledger(lab) as ledger:
        run = ledger.run(run_id)
        assert run.result == result_of(lab, run_id) and run.finished_at == run.result["finished_at"]
        [event] = [e for e in ledger.events(run_id) if e["kind"] == "reconciled"]
        assert "result.json says finished but the ledger row said interrupted" in event["message"]
        assert ledger.metrics(run_id)[-1]["val_loss"] == run.final["val_loss"]  # the final eval row is in
    shown = run_cli("show", run_id, cwd=lab)
    assert shown.returncode == 0 and "finished" in shown.stdout, shown.stdout + shown.stderr

    # The same kill, its pid since taken by a live process (this one), then `ablab resume` first: it
    # holds the run's lock, so no process trains it, and it repairs the row as it says the run finished.
    lab = labs["resume-first"]
    [(run_id, status)] = rows(lab).items()
    assert status == "running"
    with sqlite3.connect(ledger_path(lab)) as conn:
        conn.execute("UPDATE runs SET pid=? WHERE id=?", (os.getpid(), run_id))
    with Ledger(lab) as ledger:
        assert ledger.run(run_id).status == "running"  # a live pid: nothing on open says otherwise
    resumed = run_cli("resume", run_id, cwd=lab)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert f"{result_of(lab, run_id)['final']['val_loss']:.4f}" in resumed.stdout
    assert rows(lab) == {run_id: "finished"}

    # Killed before the row: the directory is complete, so its row is rebuilt from its files, resumable.
    lab = labs["before-row"]
    [orphan] = [p.name for p in runs_root(lab).iterdir()]
    assert rows(lab) == {} and (pending_root(lab) / orphan).exists()
    with Ledger(lab) as ledger:
        assert [(r.id, r.status) for r in ledger.runs()] == [(orphan, "interrupted")]
        assert any(e["kind"] == "reconciled" for e in ledger.events(orphan))
    assert not any(pending_root(lab).iterdir())
    resumed = run_cli("resume", orphan, cwd=lab)
    assert resumed.returncode == 0, resumed.stderr
    assert rows(lab) == {orphan: "finished"}

    # Killed before result.json: nothing trained, so the cut-off directory is removed.
    lab = labs["mid-creation"]
    assert rows(lab) == {} and len(list(runs_root(lab).iterdir())) == 1
    with Ledger(lab) as ledger:
        assert ledger.runs() == []
    assert not any(runs_root(lab).iterdir()) and not any(pending_root(lab).iterdir())


def test_one_trainer_per_run_a_second_is_refused_naming_the_pid(tmp_path, one_thread):
    cfg = C.load(None, [*FAST, "train.max_steps=800", "train.checkpoint_every=400"])
    refused = []

    def resume_while_training(step, row):
        if step == 6 and not refused:  # `ablab resume` of this run while it trains here, from another process
            (run_id,) = rows(tmp_path)
            done = run_cli("resume", run_id, cwd=tmp_path)
            with Ledger(tmp_path) as ledger:
                refused.append((done, ledger.events(run_id)))
            os.kill(os.getpid(), signal.SIGINT)  # then stop: checkpointed, interrupted, resumable

    stopped = start_run(cfg, tmp_path, resume_while_training)
    [(done, events_then)] = refused
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        (f"error: Run {stopped.run_id} is already being trained by pid {os.getpid()} on {os.uname().nodename}; "
         "wait for that process to end (or stop it), then resume the run.")]
    assert events_then == [] and stopped.status == "interrupted"  # refused before it wrote (or read) a thing

    # Two `ablab resume` at once: one trains it to the end, the other is refused before it reads a checkpoint.
    both = [subprocess.Popen([*ABLAB, "resume", stopped.run_id], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in both]
    codes = sorted(process.returncode for process in both)
    assert codes == [0, 2], outputs
    winner = next(process for process in both if process.returncode == 0)
    _, loser_err = next(out for out, process in zip(outputs, both) if process.returncode == 2)
    assert "Traceback" not in loser_err and f"being trained by pid {winner.pid} " in loser_err, loser_err
    assert rows(tmp_path) == {stopped.run_id: "finished"}
    with Ledger(tmp_path) as ledger:
        resumes = [e["step"] for e in ledger.events(stopped.run_id) if e["kind"] == "resume"]
    assert resumes == [stopped.result["steps"]]  # one resume, from the interrupted step: the loser read nothing
    straight = start_run(cfg, tmp_path, force=True)
    assert result_of(tmp_path, stopped.run_id)["final"]["val_loss"] == straight.result["final"]["val_loss"]


def test_a_local_driver_killed_takes_its_workers_and_its_finished_runs_are_kept(tmp_path):
    steps = 200
    cfg = C.load(None, [*FAST, f"train.max_steps={steps}", "train.checkpoint_every=50", "eval.every=100"])
    baselines.create(tmp_path, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    study = write_study(tmp_path, "driver", 'variables = { "model.d_ff" = [96] }', seeds="[0, 1]", axis="steps",
                        budget=steps)
    log = tmp_path / "driver.log"  # a file, not a pipe: surviving workers would hold a pipe open
    driver = subprocess.Popen([*ABLAB, "study", "run", str(study), "--yes", "--executor", "local", "--workers", "2"],
                              cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT)
    workers: set[int] = set()

    def wait_for(what: str, condition) -> dict[str, str]:
        deadline = time.monotonic() + 240
        while not condition(now := statuses(tmp_path)):
            assert driver.poll() is None, f"the study ended before {what}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never {what}"
            workers.update(children(driver.pid))
            time.sleep(0.02)
        return now

    wait_for("two runs trained past a checkpoint", lambda now: sum(
        s == "running" and any((runs_root(tmp_path) / r / "checkpoints").glob("step-*")) for r, s in now.items()) == 2)
    os.kill(driver.pid, signal.SIGSTOP)  # frozen, the driver applies nothing its workers send from now on
    # A loaded machine may have let a first run finish (and the driver record it) before two others got
    # past a checkpoint: only runs that finish while the driver is frozen leave the split.
    unfinished = {r for r, s in statuses(tmp_path).items() if s != "finished"}
    now = wait_for("a worker finished its run", lambda now: any(now.get(r) == "finished" for r in unfinished))
    workers.update(children(driver.pid))
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    finished = {r: result_of(tmp_path, r) for r in unfinished if now.get(r) == "finished"}
    assert all(rows(tmp_path).get(r) != "finished" for r in finished)  # the split a killed driver leaves
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:  # leave no process behind, even when this test fails
        os.kill(pid, signal.SIGKILL)
    assert len(workers) >= 2 and not survivors, "a worker (or the resource tracker) outlived its driver"

    again = run_cli("study", "run", str(study), "--yes", cwd=tmp_path)  # inline: what it decides is the same
    assert again.returncode == 0, again.stdout + again.stderr
    with Ledger(tmp_path) as ledger:
        links = ledger.study_runs("driver")
        assert len(links) == 4 and len(ledger.runs()) == 4  # one run per cell: none trained twice
        assert all(ledger.run(r).status == "finished" for r in links.values())
        for run_id, result in finished.items():  # what had finished is recorded as it was, never trained again
            assert run_id in links.values() and result_of(tmp_path, run_id) == result
            assert ledger.run(run_id).result == result
            assert not [e for e in ledger.events(run_id) if e["kind"] == "resume"]
            # with the metric rows the dead driver never applied
            assert [m["step"] for m in ledger.metrics(run_id)] == sorted(
                {m["step"] for m in read_jsonl(runs_root(tmp_path) / run_id / "metrics.jsonl")})


def statuses(lab: Path) -> dict[str, str]:
    """Run id -> the status its result.json says, for every run directory that has one."""
    found = {}
    for path in runs_root(lab).glob("*/result.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
    return found
