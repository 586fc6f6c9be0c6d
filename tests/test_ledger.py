"""The ledger under load and after a crash, its migrations, export/import, gc, provenance and reuse.

Only ledger, archive and record are imported at the top: the concurrency test's worker processes
import this module, and must not pay for importing torch.
"""

import json
import multiprocessing
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from ablab.errors import UserError
from ablab.store import proxy
from ablab.store.archive import export_lab, import_runs
from ablab.store.ledger import Ledger, Run, ledger_path
from ablab.store.record import now_iso, runs_root
from ablab.store.schema import SCHEMA_V1, SCHEMA_VERSION

from conftest import ABLAB, TINY, run_cli


def tiny(*extra: str):
    from ablab import config as C
    return C.load(None, [*TINY, *extra])


def train(lab: Path, *extra: str, progress=None, force: bool = False):
    from ablab.train.launch import start_run
    return start_run(tiny(*extra), lab, progress, force=force)


def interrupt_at(step_to_stop: int):
    def progress(step, row):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGINT)
    return progress


def snapshot(lab: Path) -> list:
    """Everything the ledger says about each run: row, tags, metrics, events, notes."""
    with Ledger(lab) as ledger:
        return [(asdict(run), ledger.metrics(run.id), ledger.events(run.id), ledger.notes(run.id))
                for run in ledger.runs()]


def runs_json(lab: Path) -> str:
    """`ablab runs --format json` of `lab`, in this process."""
    from typer.testing import CliRunner

    from ablab.cli.main import app
    result = CliRunner().invoke(app, ["runs", "--format", "json", "--lab", str(lab)])
    assert result.exit_code == 0, result.output
    return result.output


def fake_run(run_id: str, worker: int = 0, status: str = "running", d_model: int = 64) -> Run:
    config = {"seed": worker, "model": {"d_model": d_model, "n_layers": 2}}
    return Run(id=run_id, name=f"w{worker}", status=status, created_at=now_iso(), finished_at=None,
               config_hash=f"hash-{run_id}", seed=worker, data_fingerprint="data", code_version="code",
               content_key=f"key-{run_id}", config=config, provenance={}, result={"status": status})


@pytest.fixture(scope="module")
def source_lab(tmp_path_factory):
    """A lab with a finished run (with a note and tags) and an interrupted one."""
    lab = tmp_path_factory.mktemp("source-lab")
    done = train(lab, "train.max_steps=10", "eval.every=5", "train.checkpoint_every=5")
    stopped = train(lab, "train.max_steps=30", "seed=1", progress=interrupt_at(12))
    assert (done.status, stopped.status) == ("finished", "interrupted")
    with Ledger(lab) as ledger:
        ledger.add_note(done.run_id, "the baseline looks healthy", now_iso())
        ledger.add_tag(done.run_id, "baseline")
        ledger.add_tag(stopped.run_id, "wip")
    return lab


# -- export and import ----------------------------------------------------------------------------
def test_export_then_import_gives_the_same_ledger_and_importing_twice_changes_nothing(source_lab, tmp_path):
    archive = tmp_path / "lab.tar.gz"
    exported = export_lab(source_lab, archive)
    assert exported.runs == 2 and exported.bytes > 0 and not exported.without_directory
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert not any("/checkpoints/" in n for n in names), "checkpoints are left out unless asked for"
    ids = sorted(run.id for run in Ledger(source_lab).runs())
    assert {f"runs/{i}/metrics.jsonl" for i in ids} <= set(names)

    target = tmp_path / "target"
    first = import_runs(target, [archive])
    assert sorted(first.imported) == ids and first.already_present == []
    assert snapshot(target) == snapshot(source_lab)
    assert [r.tags for r in Ledger(target).runs()] == [["baseline"], ["wip"]]
    assert runs_json(target) == runs_json(source_lab) and len(json.loads(runs_json(target))) == 2
    for run_id in ids:
        for name in ("config.json", "result.json", "metrics.jsonl", "provenance.json"):
            assert (runs_root(target) / run_id / name).read_bytes() == (runs_root(source_lab) / run_id / name).read_bytes()

    counts = Ledger(target).row_counts()
    again = import_runs(target, [archive, runs_root(source_lab)])
    assert again.imported == [] and sorted(again.already_present) == sorted(ids * 2)
    assert Ledger(target).row_counts() == counts
    assert snapshot(target) == snapshot(source_lab) and runs_json(target) == runs_json(source_lab)


def test_export_with_checkpoints_carries_them_and_a_resume_can_use_them(source_lab, tmp_path):
    archive = tmp_path / "with-ckpt.tar.gz"
    stopped = Ledger(source_lab).runs(status="interrupted")[0]
    export_lab(source_lab, archive, [stopped.id[:5]], with_checkpoints=True)
    target = tmp_path / "target"
    assert import_runs(target, [archive]).imported == [stopped.id]
    copied = sorted(p.name for p in (runs_root(target) / stopped.id / "checkpoints").iterdir())
    assert copied == sorted(p.name for p in (runs_root(source_lab) / stopped.id / "checkpoints").iterdir())
    assert copied, "the interrupted run has checkpoints"


def test_bare_run_directories_rebuild_the_ledger_rows(source_lab, tmp_path):
    """Run directories copied from another machine, or written before the ledger existed."""
    target = tmp_path / "target"
    report = import_runs(target, [runs_root(source_lab)])
    assert len(report.imported) == 2
    # What only the ledger held (notes, tags) and which process ran it are not in the files.
    drop = lambda snap: [({k: v for k, v in run.items() if k not in ("pid", "heartbeat", "tags")},  # noqa: E731
                          metrics, events) for run, metrics, events, notes in snap]
    assert drop(snapshot(target)) == drop(snapshot(source_lab))
    assert Ledger(target).runs(status="finished")[0].content_key is not None
    assert import_runs(target, [runs_root(source_lab)]).already_present == report.imported


def test_a_run_directory_left_running_imports_as_interrupted(tmp_path):
    folder = tmp_path / "elsewhere" / "abcd1234"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"seed": 3}, "config_hash": "h"}))
    (folder / "result.json").write_text(json.dumps({"run_id": "abcd1234", "status": "running"}))
    (folder / "metrics.jsonl").write_text('{"step": 0, "val_loss": 4.0}\n{"step": 5, "train_lo')  # torn by a kill
    import_runs(tmp_path / "lab", [folder])
    with Ledger(tmp_path / "lab") as ledger:
        run = ledger.run("abcd")
        assert run.status == "interrupted" and run.seed == 3
        assert ledger.metrics(run.id) == [{"step": 0, "val_loss": 4.0}]


def _archive_with(path: Path, files: dict[str, bytes]) -> Path:
    import io
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind, words", [
    ("garbage", "not a readable archive"),
    ("truncated", "not a readable archive"),
    ("foreign", "not an ablab export"),
    ("other-format", "not an ablab export"),
    ("newer", "upgrade ablab"),
    ("escape", "unexpected entry"),
    ("damaged-manifest", "damaged"),
])
def test_corrupt_or_foreign_archives_are_refused_and_change_nothing(source_lab, tmp_path, kind, words):
    good = export_lab(source_lab, tmp_path / "good.tar.gz").path
    manifest = {"format": "ablab-export", "format_version": 1,
                "runs": [{"run": {"id": "abcd1234"}, "metrics": [], "events": [], "notes": [], "tags": []}]}
    bad = tmp_path / "bad.tar.gz"
    if kind == "garbage":
        bad.write_bytes(b"this is not an archive\n")
    elif kind == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "foreign":
        _archive_with(bad, {"photos/cat.jpg": b"\xff\xd8"})
    elif kind == "other-format":
        _archive_with(bad, {"ablab-export.json": json.dumps({"format": "mlflow"}).encode()})
    elif kind == "newer":
        _archive_with(bad, {"ablab-export.json": json.dumps(manifest | {"format_version": 99}).encode()})
    elif kind == "escape":
        _archive_with(bad, {"ablab-export.json": json.dumps(manifest).encode(),
                            "runs/abcd1234/../../../evil.txt": b"owned"})
    else:
        _archive_with(bad, {"ablab-export.json": json.dumps(manifest).encode()})  # the run row lacks fields
    target = tmp_path / "target"
    with pytest.raises(UserError, match=words):
        import_runs(target, [bad])
    assert Ledger(target).row_counts()["runs"] == 0
    assert not (runs_root(target).exists() and any(runs_root(target).iterdir()))
    assert not (tmp_path / "evil.txt").exists()


def test_import_of_a_bad_archive_on_the_command_line_exits_2_with_one_sentence(tmp_path):
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    result = run_cli("import", "bad.tar.gz", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ablab export" in lines[0], result.stderr


# -- schema migration -----------------------------------------------------------------------------
def test_a_version_1_ledger_opens_as_the_current_version_with_every_row_kept(tmp_path):
    path = ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1)
    conn.execute("PRAGMA user_version=1")
    for i in range(3):
        config = json.dumps({"model": {"d_model": 64 * (i + 1)}})
        conn.execute("INSERT INTO runs (id, status, created_at, config_hash, seed, config) VALUES (?, ?, ?, ?, ?, ?)",
                     (f"run{i}", "finished", f"2026-01-0{i + 1}", f"h{i}", i, config))
        conn.executemany("INSERT INTO metrics VALUES (?, ?, ?)",
                         [(f"run{i}", step, json.dumps({"step": step, "val_loss": 4.0 - step})) for step in range(4)])
        conn.execute("INSERT INTO notes (run_id, time, text) VALUES (?, ?, ?)", (f"run{i}", "t", f"note {i}"))
        conn.execute("INSERT INTO tags VALUES (?, ?)", (f"run{i}", "old"))
    conn.commit()
    conn.close()

    with Ledger(tmp_path) as ledger:
        assert SCHEMA_VERSION >= 2 and ledger.schema_version() == SCHEMA_VERSION
        counts = ledger.row_counts()
        assert {k: counts[k] for k in ("runs", "metrics", "notes", "tags", "events")} == \
            {"runs": 3, "metrics": 12, "notes": 3, "tags": 3, "events": 0}
        assert {"baselines", "studies", "study_runs", "eval_results", "scaling_fits"} <= counts.keys()
        assert [r.id for r in ledger.runs(tag="old", status="finished")] == ["run0", "run1", "run2"]
        assert [r.id for r in ledger.runs(where={"model.d_model": 128})] == ["run1"]
        assert ledger.metrics("run2")[-1] == {"step": 3, "val_loss": 1.0}
        assert ledger.notes("run1") == [{"time": "t", "text": "note 1"}]
        ledger.add_note("run1", "written after the migration", "t2")
    with Ledger(tmp_path) as ledger:  # opening again migrates nothing twice
        assert ledger.schema_version() == SCHEMA_VERSION and len(ledger.notes("run1")) == 2


def test_a_ledger_from_a_newer_ablab_is_refused(tmp_path):
    Ledger(tmp_path).close()
    conn = sqlite3.connect(ledger_path(tmp_path))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(UserError, match="upgrade ablab"):
        Ledger(tmp_path)


# -- concurrency ----------------------------------------------------------------------------------
WORKERS, RUNS_EACH, METRICS_EACH = 8, 20, 50


def _record_many(lab: str, worker: int) -> int:
    """One process recording runs the way training does: one short write per call."""
    with Ledger(Path(lab)) as ledger:
        for i in range(RUNS_EACH):
            run_id = f"w{worker}-r{i:02d}"
            ledger.record_run(fake_run(run_id, worker))
            for step in range(METRICS_EACH):
                ledger.log_metrics(run_id, [{"step": step, "train_loss": 1.0 / (step + 1)}])
            ledger.log_event(run_id, {"step": 7, "kind": "loss_spike", "time": now_iso(), "worker": worker})
            ledger.add_note(run_id, f"note from worker {worker}", now_iso())
            ledger.add_tag(run_id, f"worker-{worker}")
            ledger.heartbeat(run_id)
            ledger.finish_run(run_id, "finished", {"status": "finished", "final": {"val_loss": 1.0}}, now_iso())
            ledger.runs(status="finished", tag=f"worker-{worker}")  # readers in the mix
    return worker


def test_eight_processes_recording_at_once_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:  # an exception in any worker (e.g. "database is locked") re-raises here
        assert sorted(pool.starmap(_record_many, [(str(tmp_path), w) for w in range(WORKERS)])) == list(range(WORKERS))
    with Ledger(tmp_path) as ledger:
        counts = ledger.row_counts()
        n = WORKERS * RUNS_EACH
        assert {k: counts[k] for k in ("runs", "metrics", "events", "notes", "tags")} == \
            {"runs": n, "metrics": n * METRICS_EACH, "events": n, "notes": n, "tags": n}
        assert len(ledger.runs(status="finished")) == n
        assert all(len(ledger.metrics(f"w{w}-r19")) == METRICS_EACH for w in range(WORKERS))
        assert ledger.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- a crash --------------------------------------------------------------------------------------
def test_kill_9_leaves_an_intact_ledger_with_an_interrupted_run_that_resumes(tmp_path):
    child = subprocess.Popen([*ABLAB, "run", *TINY, "train.max_steps=100", "train.checkpoint_every=20", "--force"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run_id = time.time() + 120, None
    while time.time() < deadline and child.poll() is None:
        if ledger_path(tmp_path).exists():
            with Ledger(tmp_path) as ledger:
                runs = ledger.runs()
                if runs and any(row["step"] >= 25 for row in ledger.metrics(runs[0].id)):
                    run_id = runs[0].id
                    break
        time.sleep(0.02)
    assert child.poll() is None and run_id, "the run ended before it could be killed"
    child.kill()
    child.wait()
    with Ledger(tmp_path) as ledger:
        assert ledger.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [(r.id, r.status) for r in ledger.runs()] == [(run_id, "interrupted")]
        assert [r.id for r in ledger.runs(status="interrupted")] == [run_id]
    resumed = run_cli("resume", run_id[:6], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    with Ledger(tmp_path) as ledger:
        run = ledger.run(run_id)
        assert run.status == "finished" and run.result["steps"] == 100
        steps = [row["step"] for row in ledger.metrics(run_id)]
        assert steps == sorted(set(steps)) and steps[-1] == 100


# -- gc -------------------------------------------------------------------------------------------
def test_gc_keeps_the_newest_intact_checkpoint_of_finished_runs_only(tmp_path):
    from ablab.store.prune import prune_checkpoints

    cfg = ["train.checkpoint_every=5", "train.keep_checkpoints=10", "eval.every=0"]
    done = train(tmp_path, *cfg, "train.max_steps=20")
    stopped = train(tmp_path, *cfg, "train.max_steps=30", "seed=1", progress=interrupt_at(12))
    folder = lambda run_id: runs_root(tmp_path) / run_id / "checkpoints"  # noqa: E731
    names = lambda run_id: sorted(p.name for p in folder(run_id).iterdir())  # noqa: E731
    assert names(done.run_id) == ["step-00000005", "step-00000010", "step-00000015", "step-00000020"]
    interrupted_before = names(stopped.run_id)
    assert len(interrupted_before) == 3

    dry = prune_checkpoints(tmp_path, dry_run=True)
    assert dry.bytes > 0 and dry.removed == 3 and len(names(done.run_id)) == 4

    weights = folder(done.run_id) / "step-00000020" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # the newest is damaged: the one before is kept
    size_of = lambda name: sum(p.stat().st_size for p in (folder(done.run_id) / name).iterdir())  # noqa: E731
    expected = sum(size_of(n) for n in ("step-00000005", "step-00000010", "step-00000020"))
    report = prune_checkpoints(tmp_path)
    assert [(r.run_id, r.kept) for r in report.runs] == [(done.run_id, "step-00000015")]
    assert report.bytes == expected > 0
    assert names(done.run_id) == ["step-00000015"]
    assert names(stopped.run_id) == interrupted_before
    assert prune_checkpoints(tmp_path).bytes == 0


# -- provenance -----------------------------------------------------------------------------------
def _git(lab: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(lab), *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_provenance_in_a_git_lab_records_commit_branch_dirty_and_the_diff(tmp_path):
    lab = tmp_path / "git-lab"
    lab.mkdir()
    _git(lab, "init", "-q", "-b", "main")
    (lab / "study.toml").write_text("question = 'a'\n")
    _git(lab, "add", "study.toml")
    _git(lab, "commit", "-q", "-m", "first")
    (lab / "study.toml").write_text("question = 'b'\n")
    outcome = train(lab, "train.max_steps=2", "eval.every=0")
    run_dir = runs_root(lab) / outcome.run_id
    git = json.loads((run_dir / "provenance.json").read_text())["git"]
    assert git["available"] and git["commit"] == _git(lab, "rev-parse", "HEAD")
    assert git["branch"] == "main" and git["dirty"] is True
    assert "question = 'b'" in (run_dir / "code.diff").read_text()


def test_provenance_outside_git_says_why_and_records_the_machine(tmp_path):
    if subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode == 0:
        pytest.skip("the temp directory is inside a git checkout here")
    outcome = train(tmp_path, "train.max_steps=2", "eval.every=0")
    run_dir = runs_root(tmp_path) / outcome.run_id
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["git"]["available"] is False and "not in a git checkout" in provenance["git"]["reason"]
    assert isinstance(provenance["ablab_git"], dict) and "available" in provenance["ablab_git"]
    assert not (run_dir / "code.diff").exists()
    assert "torch==" in (run_dir / "pip-freeze.txt").read_text()
    assert provenance["versions"]["python"] and provenance["versions"]["torch"]
    host = provenance["host"]
    assert host["cpu"] and host["cores"] >= 1 and host["gpu"]["count"] >= 0
    for key in ("data_fingerprint", "tokenizer_fingerprint", "config_hash", "code_version"):
        assert provenance[key], key
    assert Ledger(tmp_path).run(outcome.run_id).provenance == provenance


# -- reuse ----------------------------------------------------------------------------------------
def test_the_same_config_twice_reuses_the_finished_run_and_force_trains_anew(tmp_path):
    first = train(tmp_path, "train.max_steps=3", "eval.every=0")
    metrics_before = Ledger(tmp_path).metrics(first.run_id)
    again = train(tmp_path, "train.max_steps=3", "eval.every=0", "name=cosmetic-only")
    assert again.reused and again.run_id == first.run_id and again.result == first.result
    assert Ledger(tmp_path).row_counts()["runs"] == 1 and len(list(runs_root(tmp_path).iterdir())) == 1
    assert Ledger(tmp_path).metrics(first.run_id) == metrics_before
    forced = train(tmp_path, "train.max_steps=3", "eval.every=0", force=True)
    assert not forced.reused and forced.run_id != first.run_id
    assert Ledger(tmp_path).row_counts()["runs"] == 2


def test_a_worker_writes_only_through_its_proxy_and_the_driver_applies_it(tmp_path):
    """The one write path for workers: a LedgerProxy turns run writes into messages, the driver's
    apply puts them in the ledger, anything else is refused, and a worker process cannot open it."""
    channel: queue.Queue = queue.Queue()
    worker_side = proxy.LedgerProxy(channel, key=7)
    run = Run(id="w0rker01", name="w", status="running", created_at=now_iso(), finished_at=None, config_hash="h",
              seed=0, data_fingerprint=None, code_version=None, content_key=None, config={}, provenance={}, result={})
    worker_side.record_run(run)
    worker_side.log_metrics("w0rker01", [{"step": 0, "train_loss": 2.0}])
    with pytest.raises(AttributeError, match="only write the ledger through the driver"):
        worker_side.add_note("w0rker01", "not a run write", "t")
    with Ledger(tmp_path) as ledger:
        while not channel.empty():
            kind, key, method, args = channel.get()
            assert (kind, key) == ("ledger", 7)
            proxy.apply(ledger, method, args)
        assert ledger.run("w0rker01").pid == os.getpid() and ledger.metrics("w0rker01")[0]["train_loss"] == 2.0
        with pytest.raises(ValueError, match="not a run write"):
            proxy.apply(ledger, "add_tag", ("w0rker01", "x"))
    probe = ("import sys; from pathlib import Path; from ablab.store import proxy; from ablab.store.ledger import Ledger\n"
             f"proxy.become_worker()\ntry:\n    Ledger(Path({str(tmp_path)!r}))\nexcept RuntimeError as err:\n"
             "    print(err)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "A worker process tried to open the ledger" in result.stdout, result.stderr
