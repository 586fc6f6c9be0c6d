"""A settled run's record cannot change; notes and tags only grow; a run stopped early is `interrupted`
and never evidence.

The ledger tests write rows through the Ledger API (no training); one test trains a tiny study of
two runs, one of them interrupted, to check what a study counts."""

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablab.errors import UserError
from ablab.store.ledger import Ledger, Run, ledger_path
from ablab.store.record import now_iso
from ablab.store.schema import MIGRATIONS

RUN = "5e771ed0"  # an ablab run id (8 hex digits), so export and import take it


def settled_lab(tmp_path: Path, status: str = "finished") -> Path:
    """A lab whose ledger holds one run that trained (two metric rows) and ended `status`."""
    with Ledger(tmp_path) as ledger:
        ledger.record_run(Run(id=RUN, name="done", status="running", created_at=now_iso(), finished_at=None,
                              config_hash="h", seed=0, data_fingerprint="d", code_version="c", content_key="k",
                              config={"seed": 0, "optim": {"lr": 0.01}}, provenance={}, result={"status": "running"}))
        ledger.log_metrics(RUN, [{"step": 0, "train_loss": 3.0}, {"step": 5, "train_loss": 2.0, "val_loss": 2.1}])
        ledger.finish_run(RUN, status, {"status": status, "final": {"val_loss": 2.1}}, now_iso())
    return tmp_path


def cli(lab: Path, *args: str):
    from ablab.cli.main import app
    return CliRunner().invoke(app, [*args, "--lab", str(lab)])


@pytest.mark.parametrize("status", ["finished", "diverged"])
def test_a_settled_run_refuses_every_change_through_the_ledger(tmp_path, status):
    lab = settled_lab(tmp_path, status)
    with Ledger(lab) as ledger:
        before = (ledger.run(RUN), ledger.metrics(RUN))
        changes = {
            "its result": lambda: ledger.finish_run(RUN, status, {"status": status, "final": {"val_loss": 1.0}}, now_iso()),
            "its status": lambda: ledger.finish_run(RUN, "running", {"status": "running"}, None),
            "a new metric row": lambda: ledger.log_metrics(RUN, [{"step": 10, "train_loss": 1.0}]),
            "a metric row merged": lambda: ledger.log_metrics(RUN, [{"step": 5, "val_loss": 0.5}]),
            "metric rows cut": lambda: ledger.truncate_metrics(RUN, 0),
            "its status, by record_run": lambda: ledger.record_run(Run(**{**before[0].__dict__, "status": "running"})),
        }
        for what, change in changes.items():
            with pytest.raises(UserError, match="cannot be changed.*add a note"):
                change()
            assert (ledger.run(RUN), ledger.metrics(RUN)) == before, what
        # Writing the same result again (a worker's death after its run ended re-writes it) is no change.
        ledger.finish_run(RUN, status, before[0].result, before[0].finished_at)
        ledger.heartbeat(RUN)  # liveness is not the record
        assert ledger.run(RUN).result == before[0].result


def test_raw_sql_cannot_change_a_finished_run_either(tmp_path):
    lab = settled_lab(tmp_path)
    conn = sqlite3.connect(ledger_path(lab), isolation_level=None)
    for statement in ("UPDATE runs SET result = '{}' WHERE id = ?", "UPDATE runs SET config = '{}' WHERE id = ?",
                      "UPDATE runs SET status = 'running' WHERE id = ?", "DELETE FROM metrics WHERE run_id = ?",
                      "UPDATE metrics SET data = '{}' WHERE run_id = ?",
                      "INSERT INTO metrics (run_id, step, data) VALUES (?, 99, '{}')"):
        with pytest.raises(sqlite3.IntegrityError, match="settled run cannot be changed"):
            conn.execute(statement, (RUN,))
    conn.execute("INSERT INTO notes (run_id, time, text) VALUES (?, 't', 'a note')", (RUN,))
    for statement in ("DELETE FROM notes WHERE run_id = ?", "UPDATE notes SET text = 'rewritten' WHERE run_id = ?"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement, (RUN,))
    conn.close()
    with Ledger(lab) as ledger:
        assert ledger.run(RUN).result["final"] == {"val_loss": 2.1} and len(ledger.metrics(RUN)) == 2


def test_a_settled_run_can_still_be_removed_whole(tmp_path):
    from ablab.store.record import runs_root
    lab = settled_lab(tmp_path)
    (runs_root(lab) / RUN).mkdir(parents=True)
    with Ledger(lab) as ledger:
        ledger.add_note(RUN, "kept until the run goes", now_iso())
        ledger.add_tag(RUN, "old")
        ledger.remove_tag(RUN, "old")
    result = cli(lab, "runs", "rm", RUN, "--force", "--yes")
    assert result.exit_code == 0, result.output
    with Ledger(lab) as ledger:
        counts = ledger.row_counts()
    assert counts["runs"] == counts["metrics"] == counts["notes"] == counts["tag_history"] == 0


def test_notes_and_tags_append_with_times_and_show_lists_the_tag_history(tmp_path):
    lab = settled_lab(tmp_path)
    for args in (("tag", RUN, "baseline"), ("tag", RUN, "keep"), ("tag", RUN, "--remove", "baseline"),
                 ("note", RUN, "first"), ("note", RUN, "second"), ("tag", RUN, "baseline")):
        result = cli(lab, *args)
        assert result.exit_code == 0, result.output
    shown = cli(lab, "show", RUN, "--json")
    document = json.loads(shown.output)
    history = [(row["action"], row["tag"]) for row in document["tag_history"]]
    assert history == [("add", "baseline"), ("add", "keep"), ("remove", "baseline"), ("add", "baseline")]
    times = [row["time"] for row in document["tag_history"]]
    assert times == sorted(times) and all(t.startswith("20") for t in times)
    assert sorted(document["run"]["tags"]) == ["baseline", "keep"]  # the current set, for `runs --tag`
    assert [n["text"] for n in document["notes"]] == ["first", "second"] and all(n["time"] for n in document["notes"])
    assert "tag_history" in cli(lab, "show", RUN).output
    refused = cli(lab, "tag", RUN, "--remove", "never-had")  # the UX of a wrong removal stays
    assert isinstance(refused.exception, UserError) and "has no tag 'never-had'" in str(refused.exception)
    assert len(cli_history(lab)) == 4


def cli_history(lab: Path) -> list[dict]:
    with Ledger(lab) as ledger:
        return ledger.tag_history(RUN)


def test_tags_from_before_schema_6_become_history_without_a_time(tmp_path):
    path = ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:5]:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
    conn.execute("PRAGMA user_version=5")
    conn.execute("INSERT INTO runs (id, status, created_at, config_hash, seed, config) VALUES (?, 'finished', 't',"
                 " 'h', 0, '{}')", (RUN,))
    conn.execute("INSERT INTO tags (run_id, tag) VALUES (?, 'legacy')", (RUN,))
    conn.close()
    with Ledger(tmp_path) as ledger:
        assert ledger.schema_version() == len(MIGRATIONS)
        assert ledger.tag_history(RUN) == [{"time": "", "tag": "legacy", "action": "add"}]
        assert ledger.run(RUN).tags == ["legacy"]


def test_a_killed_run_reads_interrupted_in_runs_status(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists on this host: the process that trained the run was killed
    with Ledger(tmp_path) as ledger:
        ledger.record_run(Run(id=RUN, name="killed", status="running", created_at=now_iso(), finished_at=None,
                              config_hash="h", seed=0, data_fingerprint="d", code_version="c", content_key="k",
                              config={}, provenance={}, result={"status": "running"},
                              host=socket.gethostname(), pid=dead.pid))
    listed = cli(tmp_path, "runs", "--status", "interrupted", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert [(r["id"], r["status"]) for r in json.loads(listed.output)] == [(RUN, "interrupted")]
    assert json.loads(cli(tmp_path, "runs", "--status", "running", "--format", "json").output) == []


def test_an_interrupted_run_in_a_study_is_not_evidence(tmp_path):
    """Its best val_loss exists (it evaluated before the stop), yet its cell counts as missing, the
    plan resumes it, and the arm has one value fewer."""
    from ablab import config as C
    from ablab.analysis.verdicts import analyze, cell_values
    from ablab.study import baselines
    from ablab.study.runner import make_plan, run_study

    from conftest import TINY
    from test_study import write_study

    cfg = C.load(None, [*TINY, "train.max_steps=20", "eval.every=5"])
    baselines.create(tmp_path, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    path = write_study(tmp_path, "stopped", 'variables = { "model.d_ff" = [192] }', seeds="[0, 1]",
                       read_at="best")
    plan = make_plan(tmp_path, path, probe=False)
    calls = {"runs": 0}

    def progress_for(arm, seed):
        calls["runs"] += 1
        if calls["runs"] == 4:  # the last run (d_ff=192, seed 1): stopped at step 12, after evaluating at 5 and 10
            return lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 12 else None
        return None

    assert run_study(tmp_path, plan, progress_for, say=lambda s: None) == "interrupted"
    _, values = cell_values(tmp_path, "stopped")
    arm = next(row.arm.name for row in plan.rows if row.arm.name != "baseline")
    run, value = values[(arm, 1)]
    assert run.status == "interrupted" and run.result["best"]["val_loss"] is not None
    assert value != value  # NaN: not a value of the study
    _, results, _ = analyze(tmp_path, "stopped")
    by_arm = {r.arm: r for r in results}
    assert by_arm[arm].values[0] == by_arm[arm].values[0] and by_arm[arm].values[1] != by_arm[arm].values[1]
    assert by_arm[arm].comparison is None  # one pair is not a comparison
    listed = json.loads(cli(tmp_path, "study", "status", "stopped", "--json").output)
    assert {(c["arm"], c["seed"]): (c["status"], c["value"]) for c in listed["cells"]}[(arm, 1)] == ("interrupted", None)
    replanned = make_plan(tmp_path, path, probe=False)
    assert {row.arm.name: row.to_resume for row in replanned.rows} == {"baseline": 0, arm: 1}


def test_importing_a_settled_run_again_is_a_no_op_and_a_differing_one_is_refused(tmp_path):
    from ablab.store.archive import MANIFEST, export_lab, import_runs

    def record(lab: Path):
        with Ledger(lab) as ledger:
            return ledger.run(RUN).result, ledger.metrics(RUN), ledger.row_counts()

    lab = settled_lab(tmp_path / "lab")
    archive = export_lab(lab, tmp_path / "lab.tar.gz").path
    before = record(lab)
    report = import_runs(lab, [archive])
    assert (report.imported, report.already_present) == ([], [RUN]) and record(lab) == before
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile(MANIFEST))
    manifest["runs"][0]["run"]["result"]["final"]["val_loss"] = 1.5  # the same id, a better loss
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(forged, "w:gz") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match=f"Run {RUN} is already in this lab as a finished run with another record"):
        import_runs(lab, [forged])
    assert record(lab) == before
