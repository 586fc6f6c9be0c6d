"""`ablab run --nproc N`: data-parallel training through torchrun on CPU (gloo)."""

import json
import os
import signal
import subprocess
import time

import pytest

from ablab import config as C
from ablab.train.distributed import _worker_args
from ablab.train.launch import start_run

from conftest import ABLAB, TINY, run_cli

RUN = [*TINY, "train.max_steps=20", "eval.every=10", "train.checkpoint_every=10"]
# Two ranks sum each gradient in another order than one process does (DDP's all-reduce adds the
# two halves' means), so curves agree to float rounding, not bitwise: measured at most 5e-8 relative
# over these 20 steps. 1e-4 leaves three orders of magnitude for that drift to grow on other machines
# and thread counts; a wrong batch slice or a missing gradient average moves the loss by 1e-2 or more.
RTOL = 1e-4


def only_run(lab):
    runs = [p for p in (lab / ".ablab" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def curve(run_dir, key):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same run trained by 1 and by 2 processes, each in its own lab."""
    labs = {}
    for nproc in (1, 2):
        lab = tmp_path_factory.mktemp(f"nproc{nproc}")
        done = run_cli("run", *RUN, "--nproc", str(nproc), cwd=lab, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        labs[nproc] = only_run(lab)
    return labs


def test_two_processes_follow_the_single_process_loss_curve(two_runs):
    for key in ("train_loss", "val_loss"):
        one, two = curve(two_runs[1], key), curve(two_runs[2], key)
        assert [step for step, _ in one] == [step for step, _ in two]  # rank 0 alone logs, once per step
        assert len(one) >= 3
        for (step, expected), (_, got) in zip(one, two):
            assert got == pytest.approx(expected, rel=RTOL), (key, step)
    result = json.loads((two_runs[2] / "result.json").read_text())
    assert result["status"] == "finished" and result["steps"] == 20
    assert result["tokens_seen"] == 20 * 16 * 64  # the global batch, not one rank's share
    assert sorted(p.name for p in (two_runs[2] / "checkpoints").iterdir()) == ["step-00000010", "step-00000020"]


def test_world_size_is_in_provenance_and_nproc_in_the_config(two_runs):
    for nproc, run_dir in two_runs.items():
        assert json.loads((run_dir / "provenance.json").read_text())["world_size"] == nproc
        assert json.loads((run_dir / "config.json").read_text())["config"]["train"]["nproc"] == nproc
    # Cosmetic: both runs compute the same thing, so they share a config hash (and a content key).
    hashes = {json.loads((d / "config.json").read_text())["config_hash"] for d in two_runs.values()}
    assert len(hashes) == 1


def test_a_batch_that_does_not_split_evenly_is_one_clear_error(tmp_path):
    done = run_cli("run", *TINY, "data.batch_size=15", "train.max_steps=5", "--nproc", "2", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.batch_size (15)" in lines[0] and "train.nproc (2)" in lines[0], done.stderr
    assert not (tmp_path / ".ablab" / "runs").exists()


def test_workers_get_nproc_as_an_override_torchrun_cannot_mistake_for_its_own():
    assert _worker_args(["run", "--nproc", "2", "seed=1", "--force"], 2) == ["run", "seed=1", "--force",
                                                                            "train.nproc=2"]
    assert _worker_args(["run", "--nproc=4", "-c", "small"], 4) == ["run", "-c", "small", "train.nproc=4"]
    # A resumed run keeps its own config: the world size comes from torchrun alone.
    assert _worker_args(["resume", "3f2a", "--nproc", "2"], 2, override=False) == ["resume", "3f2a"]


def test_resume_refuses_a_world_the_batch_cannot_split_over(two_runs, tmp_path):
    done = run_cli("resume", two_runs[1].name, "--nproc", "3", cwd=two_runs[1].parents[2])
    assert done.returncode == 0 and "finished" in done.stdout  # a finished run is not relaunched
    cfg = C.load(None, RUN)
    stopped = start_run(cfg, tmp_path, lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 3 else None)
    done = run_cli("resume", stopped.run_id, "--nproc", "3", cwd=tmp_path)
    assert done.returncode == 2 and "does not divide by the 3 training processes" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_interrupted_run_resumes_on_two_processes_to_the_same_curve(two_runs, tmp_path):
    cfg = C.load(None, RUN)

    def interrupt_at_13(step, row):
        if step == 13:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = start_run(cfg, tmp_path, interrupt_at_13)
    assert stopped.status == "interrupted"
    done = run_cli("resume", stopped.run_id[:6], "--nproc", "2", cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = tmp_path / ".ablab" / "runs" / stopped.run_id
    assert json.loads((run_dir / "result.json").read_text())["status"] == "finished"
    for key in ("train_loss", "val_loss"):
        straight, resumed = curve(two_runs[1], key), curve(run_dir, key)
        assert [step for step, _ in straight] == [step for step, _ in resumed]
        for (step, expected), (_, got) in zip(straight, resumed):
            assert got == pytest.approx(expected, rel=RTOL), (key, step)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("resume") == 1  # logged by rank 0 only


def test_ctrl_c_stops_every_rank_with_a_checkpoint_to_resume_from(tmp_path):
    launcher = subprocess.Popen([*ABLAB, "run", *TINY, "train.max_steps=100000", "eval.every=0", "--nproc", "2"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".ablab/runs/*/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.2)  # the first train row: both ranks are inside the loop
    launcher.send_signal(signal.SIGINT)
    stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, stdout + stderr
    run_dir = only_run(tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["steps"] > 0
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step-{result['steps']:08d}"]
    assert "resume it with" in stdout
