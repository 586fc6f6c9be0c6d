"""Schedules and evaluation cadence as a run sees them: the lr peaks at optim.lr after warmup, validation
points spread over any budget, the plan's warnings, the progress bar's val loss, and an MFU that never
reads over 100%."""

import json
import math
import os
import signal

import pytest

from ablab import config as C
from ablab.errors import ConfigError
from ablab.store.record import RunRecord
from ablab.train import hardware, loop
from ablab.train.launch import resume_run, start_run

from conftest import TINY, run_cli


def tiny(*extra: str) -> C.Config:
    return C.load(None, [*TINY, *extra])


def val_steps(tmp_path, outcome) -> list[int]:
    return [r["step"] for r in RunRecord.open(tmp_path, outcome.run_id).metrics() if "val_loss" in r]


# --- the plan's arithmetic ---------------------------------------------------------------------------


def test_eval_points_counts_what_the_loop_evaluates():
    assert C.eval_points(tiny("eval.every=110"), 100) == 2  # the trap: step 0 and the end
    assert C.eval_points(tiny("eval.every=50"), 100) == 3
    assert C.eval_points(tiny("eval.every=30"), 100) == 5  # 0, 30, 60, 90, 100
    assert C.eval_points(tiny(), 550) == 10  # the default: eval.points, whatever the budget
    assert C.eval_points(tiny(), 5) == 6  # a run shorter than eval.points evaluates after every step


def test_schedule_warnings_name_the_setting_and_the_fix():
    trap = tiny("train.max_steps=100", "eval.every=110", "schedule.warmup_steps=50")
    warmup, cadence = C.schedule_warnings(trap, 100)
    assert warmup.startswith("schedule.warmup_steps = 50 is 50% of the run's 100 steps")
    assert "schedule.warmup_steps=10" in warmup
    assert cadence.startswith("eval.every = 110 gives only 2 validation points in 100 steps")
    assert "eval.every=0" in cadence
    too_long = C.schedule_warnings(tiny("schedule.warmup_steps=200"), 100)[0]
    assert "the run ends before the learning rate reaches optim.lr" in too_long
    assert C.schedule_warnings(tiny("eval.points=3", "schedule.warmup_steps=0"), 100) == [
        "eval.points = 3 gives only 3 validation points in 100 steps, too few to read a loss curve; "
        "set eval.points=10."]
    # Nothing to say: a sound run, an unknown step count (a seconds budget), or a run too short for 5 points.
    assert C.schedule_warnings(C.load("quickstart"), 550) == []
    assert C.schedule_warnings(trap, None) == []
    assert C.schedule_warnings(tiny("schedule.warmup_steps=0"), 3) == []


def test_eval_points_must_be_positive():
    with pytest.raises(ConfigError, match="eval.points must be positive"):
        tiny("eval.points=0")


# --- runs --------------------------------------------------------------------------------------------


def test_the_lr_reaches_optim_lr_at_the_end_of_warmup_and_decays_to_the_floor(tmp_path):
    cfg = tiny("train.max_steps=20", "schedule.warmup_steps=10", "train.log_every=1", "eval.points=1")
    rows = [r for r in RunRecord.open(tmp_path, start_run(cfg, tmp_path).run_id).metrics() if "lr_muon" in r]
    lrs = [r["lr_muon"] for r in rows]  # the row at step s holds the lr step s - 1 trained with
    assert lrs[9] == pytest.approx(cfg.optim.lr, rel=1e-12) and max(lrs) == lrs[9]
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] < 0.15 * cfg.optim.lr  # the last step is close to min_lr_ratio (0.1) of optim.lr


def test_validation_points_spread_over_a_step_budget(tmp_path):
    cfg = tiny("train.max_steps=30", "eval.points=4")
    steps = val_steps(tmp_path, start_run(cfg, tmp_path))
    assert steps == [0, 10, 20, 30] and len(steps) == C.eval_points(cfg, 30)


def test_validation_points_spread_over_a_token_budget(tmp_path):
    cfg = tiny("train.max_steps=0", f"train.max_tokens={20 * 16 * 64}", "eval.points=5")
    assert val_steps(tmp_path, start_run(cfg, tmp_path)) == [0, 5, 10, 15, 20]


def test_validation_points_spread_over_a_seconds_budget(tmp_path):
    cfg = tiny("train.max_steps=0", "train.max_seconds=1.0", "eval.points=5")
    outcome = start_run(cfg, tmp_path)
    steps = val_steps(tmp_path, outcome)
    assert len(steps) == 5 and steps[0] == 0 and steps[-1] == outcome.result["steps"]
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert min(gaps) > 0.5 * max(gaps)  # evenly spread in time, so roughly in steps


def test_a_resumed_run_evaluates_where_a_straight_run_does(tmp_path):
    cfg = tiny("train.max_steps=30", "eval.points=7", "train.checkpoint_every=10")
    straight = val_steps(tmp_path, start_run(cfg, tmp_path))

    def interrupt_at_12(step, row):
        if step == 12:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = start_run(cfg, tmp_path, interrupt_at_12, force=True)
    assert stopped.status == "interrupted"
    resumed = resume_run(tmp_path, stopped.run_id)
    assert straight == [0, 5, 10, 15, 20, 25, 30] and val_steps(tmp_path, resumed) == straight


def test_eval_every_still_means_every_n_steps_and_the_end(tmp_path):
    cfg = tiny("train.max_steps=20", "eval.every=25")
    steps = val_steps(tmp_path, start_run(cfg, tmp_path))
    assert steps == [0, 20] and len(steps) == C.eval_points(cfg, 20)  # what the plan warns about


def test_ablab_run_prints_the_schedule_warnings_before_training(tmp_path):
    result = run_cli("run", *TINY, "train.max_steps=8", "eval.points=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: schedule.warmup_steps = 50 is 625% of the run's 8 steps" in result.stdout


# --- MFU ---------------------------------------------------------------------------------------------


def test_a_peak_below_what_the_run_achieves_is_raised_never_an_mfu_over_100(tmp_path):
    outcome = start_run(tiny("train.max_steps=10", "train.peak_flops=1.0", "eval.points=1"), tmp_path)
    record = RunRecord.open(tmp_path, outcome.run_id)
    raised = [e for e in record.events() if e["kind"] == "peak_flops_raised"]
    assert len(raised) == 1 and "raise train.peak_flops" in raised[0]["message"]
    assert all(r["mfu"] <= 1.0 for r in record.metrics() if "mfu" in r)
    assert outcome.result["peak_flops"] >= raised[0]["achieved"] > 1.0


def test_the_best_peak_ever_measured_on_this_machine_is_kept(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "cache"))
    cpu = torch.device("cpu")
    assert hardware.remember_peak_flops(cpu, torch.float32, 5e10) == 5e10
    assert hardware.remember_peak_flops(cpu, torch.float32, 1e10) == 5e10  # a busy moment reads low
    assert hardware.remember_peak_flops(cpu, torch.bfloat16, 1e10) == 1e10  # each dtype its own peak
    (tmp_path / "cache" / "peak_flops.json").write_text("{not json")
    assert hardware.remember_peak_flops(cpu, torch.float32, 2e10) == 2e10  # a damaged file is rewritten
    assert 2e10 in json.loads((tmp_path / "cache" / "peak_flops.json").read_text()).values()


def test_a_measured_peak_the_run_beats_is_remembered_for_later_runs(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "cache"))
    # A machine so loaded that its matmul peak read 1 FLOP/s: the measurement goes through the real cache.
    monkeypatch.setattr(loop.hardware, "measured_peak_flops",
                        lambda device_type, dtype: hardware.remember_peak_flops(torch.device(device_type), dtype, 1.0))
    outcome = start_run(tiny("train.max_steps=10", "eval.points=1"), tmp_path)
    events = [e for e in RunRecord.open(tmp_path, outcome.run_id).events() if e["kind"] == "peak_flops_raised"]
    assert events and "later runs on this machine start from the new peak" in events[0]["message"]
    assert hardware.remember_peak_flops(torch.device("cpu"), torch.float32, 1.0) == outcome.result["peak_flops"]
    assert math.isfinite(outcome.result["final"]["mfu"]) and outcome.result["final"]["mfu"] <= 1.0
