import json
import os
import signal
import time

import pytest

from ablab import config as C
from ablab.errors import CheckpointError
from ablab.store import checkpoint
from ablab.store.record import RunRecord
from ablab.train.launch import resume_run, start_run

from conftest import ABLAB, TINY, run_cli


def tiny(*extra: str) -> C.Config:
    return C.load(None, [*TINY, *extra])


def test_a_tiny_model_learns_tiny_shakespeare(tmp_path):
    # Measured: 200 steps of this 0.1M-parameter model reach val loss ~2.1 (uniform over 65
    # characters is 4.17; unigram frequencies alone give ~3.3). 2.4 leaves room for noise across machines.
    outcome = start_run(tiny("train.max_steps=200", "eval.every=100"), tmp_path)
    assert outcome.status == "finished"
    final = outcome.result["final"]
    assert final["val_loss"] < 2.4
    assert final["val_bpb"] == pytest.approx(final["val_loss"] / 0.6931 * 1.0, rel=0.01)  # char-level: 1 token = 1 byte
    assert outcome.result["best"]["val_loss"] <= final["val_loss"] + 1e-9


def test_run_record_describes_the_run(tmp_path):
    cfg = tiny("train.max_steps=20", "eval.every=10", "train.checkpoint_every=10", "name=rec")
    outcome = start_run(cfg, tmp_path)
    run_dir = tmp_path / ".ablab" / "runs" / outcome.run_id
    assert {"config.json", "metrics.jsonl", "result.json", "train.log"} <= {p.name for p in run_dir.iterdir()}
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config_hash"] == C.config_hash(cfg) and C.from_dict(saved["config"]) == cfg
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("params", "non_embedding_params", "flops_per_token", "tokens_seen", "train_seconds",
                "wall_seconds", "data_fingerprint", "tokenizer_fingerprint", "final", "best", "status"):
        assert key in result, key
    assert result["tokens_seen"] == 20 * 16 * 64 and result["steps"] == 20
    rows = RunRecord.open(tmp_path, outcome.run_id).metrics()
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 10, 20]
    train_rows = [r for r in rows if "train_loss" in r]
    for key in ("tokens", "elapsed", "grad_norm", "lr_muon", "lr_adamw", "tokens_per_s", "mfu", "peak_memory_mb"):
        assert all(key in r for r in train_rows), key
    assert all(0 < r["mfu"] < 1 for r in train_rows)
    assert [p.name for p in checkpoint.checkpoints(run_dir / "checkpoints")] == ["step-00000010", "step-00000020"]


def test_stops_at_whichever_budget_comes_first(tmp_path):
    by_tokens = start_run(tiny("train.max_steps=100", f"train.max_tokens={7 * 16 * 64}"), tmp_path)
    assert by_tokens.result["steps"] == 7 and by_tokens.result["stop_reason"] == "max_tokens"
    by_time = start_run(tiny("train.max_steps=100000", "train.max_seconds=1.5", "eval.every=0"), tmp_path)
    assert by_time.result["stop_reason"] == "max_seconds"
    assert 1.5 <= by_time.result["train_seconds"] < 5


def test_interrupt_then_resume_is_bitwise_equal_to_a_straight_run(tmp_path):
    cfg = tiny("train.max_steps=30", "eval.every=10", "train.checkpoint_every=10")
    straight = start_run(cfg, tmp_path)

    def interrupt_at_17(step, row):
        if step == 17:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = start_run(cfg, tmp_path, interrupt_at_17, force=True)
    assert stopped.status == "interrupted" and stopped.result["steps"] in (17, 18)
    events = RunRecord.open(tmp_path, stopped.run_id).events()
    assert events[-1]["kind"] == "interrupted"
    resumed = resume_run(tmp_path, stopped.run_id)
    assert resumed.status == "finished"
    assert resumed.result["final"]["val_loss"] == straight.result["final"]["val_loss"]
    assert resumed.result["final"]["train_loss"] == straight.result["final"]["train_loss"]
    curve = lambda run_id: [(r["step"], r.get("train_loss"), r.get("val_loss"))  # noqa: E731
                            for r in RunRecord.open(tmp_path, run_id).metrics()]
    assert curve(resumed.run_id) == curve(straight.run_id)


def test_kill_9_mid_run_then_resume_reaches_the_same_final_loss(tmp_path):
    args = [*TINY, "train.max_steps=60", "train.checkpoint_every=20", "eval.every=20"]
    straight = run_cli("run", *args, cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    import subprocess
    child = subprocess.Popen([*ABLAB, "run", *args, "--force"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    runs = tmp_path / ".ablab" / "runs"
    before = set(runs.iterdir())
    deadline = time.time() + 120
    while time.time() < deadline:
        new = [p for p in runs.iterdir() if p not in before]
        if new and (new[0] / "checkpoints" / "step-00000020").exists():
            break
        time.sleep(0.005)
    assert child.poll() is None, "the run ended before it could be killed"
    child.kill()
    child.wait()
    run_id = new[0].name
    assert RunRecord.open(tmp_path, run_id).result()["status"] == "running"
    resumed = run_cli("resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    results = {p.name: json.loads((p / "result.json").read_text()) for p in runs.iterdir()}
    assert results[run_id]["status"] == "finished"
    finals = {r["final"]["val_loss"] for r in results.values()}
    assert len(finals) == 1, finals


def test_absurd_learning_rate_ends_as_diverged_with_an_event(tmp_path):
    outcome = start_run(tiny("train.max_steps=200", "optim.lr=1e8", "optim.adamw_lr=1e8", "optim.grad_clip=0"),
                        tmp_path)
    assert outcome.status == "diverged" and outcome.result["steps"] < 200
    events = RunRecord.open(tmp_path, outcome.run_id).events()
    assert events[-1]["kind"] == "diverged"
    result = run_cli("run", *TINY, "train.max_steps=200", "optim.lr=1e8", "optim.adamw_lr=1e8",
                     "optim.grad_clip=0", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "diverged" in result.stdout


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    cfg = tiny("train.max_steps=30", "train.checkpoint_every=10", "train.keep_checkpoints=5")

    def interrupt_at_25(step, row):
        if step == 25:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = start_run(cfg, tmp_path, interrupt_at_25)
    record = RunRecord.open(tmp_path, stopped.run_id)
    newest = checkpoint.checkpoints(record.checkpoints_dir)[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    resumed = resume_run(tmp_path, stopped.run_id)
    assert resumed.status == "finished"
    kinds = [(e["kind"], e["step"]) for e in record.events()]
    assert ("corrupt_checkpoint", int(newest.name.split("-")[1])) in kinds
    assert ("resume", 20) in kinds
    straight = start_run(cfg, tmp_path, force=True)
    assert resumed.result["final"]["val_loss"] == straight.result["final"]["val_loss"]


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path):
    def interrupt_at_12(step, row):
        if step == 12:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = start_run(tiny("train.max_steps=30", "train.checkpoint_every=10"), tmp_path, interrupt_at_12)
    record = RunRecord.open(tmp_path, stopped.run_id)
    for path in checkpoint.checkpoints(record.checkpoints_dir):
        (path / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="delete .* to restart it from step 0"):
        resume_run(tmp_path, stopped.run_id)
    result = run_cli("resume", stopped.run_id, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "damaged" in result.stderr
