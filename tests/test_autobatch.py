"""The largest micro-batch under a memory budget: larger under a larger budget, within the budget in a
measured run, cached in the lab, and one sentence when nothing fits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from ablab import config as C
from ablab.cli.main import app
from ablab.errors import UserError
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study.runner import make_plan
from ablab.train import autobatch, launch

from conftest import TINY, run_cli
from test_study import write_study

SHAPE = ["model.d_model=128", "model.n_layers=2", "model.n_heads=4", "model.d_ff=256", "data.seq_len=256",
         "data.tokenizer=byte", "train.device=cpu"]

MEASURED_RUN = """
import json, sys
from ablab import config as C
from ablab.train.profile import profile
row, = profile(C.load(None, json.loads(sys.argv[1])), 256, [int(sys.argv[2])], steps=2)
print(row.peak_mb)
"""


def test_a_larger_budget_gives_a_larger_batch_that_a_real_run_keeps_within(one_thread):
    cfg = C.load(None, SHAPE)
    small, large = autobatch.largest_batch(cfg, 256, 100), autobatch.largest_batch(cfg, 256, 300)
    assert 1 < small.batch_size < large.batch_size
    usable = 1 - autobatch.MARGIN["cpu"]
    assert small.measured_mb <= usable * 100 and large.measured_mb <= usable * 300  # within the budget less its margin
    over = [mb for size, mb in small.probed if size == small.batch_size + 1]
    assert over and over[0] > usable * 100  # one more sequence would not have fitted: the bisection is tight
    for choice in (small, large):  # a fresh process trains at the chosen size: its peak rise stays in budget
        peak = subprocess.run([sys.executable, "-c", MEASURED_RUN, json.dumps(SHAPE), str(choice.batch_size)],
                              capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1",
                                                                                "PATH": "/usr/bin:/bin"})
        assert 0 < float(peak.stdout.strip()) <= choice.budget_mb, (choice, peak.stdout)


def test_the_choice_is_cached_in_the_lab(tmp_path, monkeypatch, one_thread):
    cfg = C.load(None, SHAPE)
    first = autobatch.cached_batch(tmp_path, cfg, 256, 100)
    assert json.loads((tmp_path / ".ablab" / "autobatch.json").read_text())  # written
    def probed_again(*args, **kwargs):
        raise LookupError("probed again")

    monkeypatch.setattr(autobatch, "largest_batch", probed_again)
    again = autobatch.cached_batch(tmp_path, C.replace(cfg, {"data.batch_size": 7, "seed": 3}), 256, 100)
    assert again.batch_size == first.batch_size  # the batch size and the seed are not part of the key
    with pytest.raises(LookupError, match="probed again"):  # another shape is probed
        autobatch.cached_batch(tmp_path, C.replace(cfg, {"model.d_model": 64}), 256, 100)


def test_an_impossible_budget_is_one_sentence(one_thread):
    with pytest.raises(UserError, match=r"Not even one sequence of data.seq_len=256 fits train.memory_budget_mb=5 "
                                        r"\(one needs \d+ MB\); raise train.memory_budget_mb"):
        autobatch.largest_batch(C.load(None, SHAPE), 256, 5)


# -- "auto" in a config: chosen when a run starts, recorded, kept on resume, shown in the plan --------------

AUTO = [*SHAPE, "data.batch_size=auto", "train.grad_accum=auto", "train.global_batch_tokens=16384",
        "train.memory_budget_mb=100", "eval.tokens=4096", "eval.points=2", "train.log_every=1"]


def test_auto_settings_are_checked_in_one_sentence(tmp_path):
    init = run_cli("init", "lab", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    cases = {("train.grad_accum=auto",): 'train.grad_accum = "auto" holds train.global_batch_tokens, which is not set',
             ("data.batch_size=auto", "train.max_steps=0", "train.max_tokens=5000"): "train.max_tokens needs the "
             "tokens per step before the run starts",
             ("train.grad_accum=auto", "train.global_batch_tokens=1000"): "is not a whole number of data.seq_len=128",
             ("data.batch_size=big",): 'data.batch_size must be an integer or "auto"',
             ("data.batch_size=4", "train.grad_accum=2", "train.global_batch_tokens=2048"): "set train.grad_accum = "
             '"auto" to hold it'}
    for overrides, sentence in cases.items():
        result = run_cli("run", *overrides, cwd=tmp_path / "lab")
        assert result.returncode == 2 and sentence in result.stderr and "Traceback" not in result.stderr, \
            (overrides, result.stderr)


def test_an_auto_run_records_its_choice_and_holds_the_global_batch(tmp_path):
    assert run_cli("init", "lab", cwd=tmp_path).returncode == 0
    lab = tmp_path / "lab"
    result = run_cli("run", *AUTO, "train.max_steps=2", cwd=lab, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "tokens/step (micro-batches chosen by auto)" in result.stdout and "auto batch:" in result.stdout
    with Ledger(lab) as ledger:
        run, = ledger.runs()
        events = [e for e in ledger.events(run.id) if e["kind"] == "auto_batch"]
    r = run.result
    assert r["batch_size"] * r["grad_accum"] * 256 == 16384 == r["tokens_per_step"]  # the global batch is held
    largest = r["auto_batch"]["largest"]
    assert r["grad_accum"] > 1 and r["batch_size"] <= largest  # the budget binds: one micro-batch would not fit
    assert all(64 // fewer > largest for fewer in range(1, r["grad_accum"]) if 64 % fewer == 0)  # the fewest that fit
    assert r["auto_batch"]["budget_mb"] == 100 and r["auto_batch"]["measured_mb"] <= 75  # within the budget's margin
    assert run.config["data"]["batch_size"] == "auto"  # the run's config is what was asked for ...
    assert json.loads((lab / ".ablab" / "runs" / run.id / autobatch.CHOICE_FILE).read_text())["batch_size"] == \
        r["batch_size"]  # ... and its directory keeps what that became
    assert len(events) == 1 and f"chose {r['batch_size']} sequences per micro-batch" in events[0]["message"]
    assert r["steps"] == 2 and r["tokens_seen"] == 2 * 16384


def test_a_resumed_auto_run_keeps_its_batches_on_another_device(tmp_path, one_thread):
    cfg = C.load(None, [*AUTO, "train.max_steps=4"])

    def stop_at_two(step, row):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    first = launch.start_run(cfg, tmp_path, stop_at_two)
    assert first.status == "interrupted"
    cache = tmp_path / ".ablab" / "autobatch.json"
    known = json.loads(cache.read_text())
    cache.write_text(json.dumps({key: entry | {"batch_size": 1} for key, entry in known.items()}))  # "another device"
    resumed = launch.resume_run(tmp_path, first.run_id)
    assert resumed.status == "finished" and resumed.result["steps"] == 4
    assert (resumed.result["batch_size"], resumed.result["grad_accum"]) == \
        (first.result["batch_size"], first.result["grad_accum"])
    # A new run of it asks the cache again, which now says 1 sequence: 64 micro-batches hold 16,384 tokens.
    fresh = launch.start_run(C.replace(cfg, {"seed": 1}), tmp_path)
    assert (fresh.result["batch_size"], fresh.result["grad_accum"]) == (1, 64)


def test_out_of_memory_while_training_is_one_sentence_naming_the_settings(tmp_path, monkeypatch, one_thread):
    from ablab.model.gpt import GPT

    real = GPT.forward

    def forward(self, *args, **kwargs):  # the device runs out of memory in a training step (not in evaluation)
        if torch.is_grad_enabled():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", forward)
    with pytest.raises(UserError, match=r"^Out of memory at step 0 training micro-batches of 16 x 64 tokens on cpu; "
                                        r"start a new run that does: lower data.batch_size, or set data.batch_size"):
        launch.start_run(C.load(None, [*TINY, "train.max_steps=3", "train.device=cpu"]), tmp_path)
    with Ledger(tmp_path) as ledger:
        run, = ledger.runs()
        assert [e["kind"] for e in ledger.events(run.id)] == ["out_of_memory"]


def test_the_plan_says_what_auto_chose_for_each_arm_and_arms_are_not_a_frozen_key_violation(tmp_path):
    cfg = C.load(None, [*AUTO, "train.max_steps=3"])
    baselines.create(tmp_path, baselines.Baseline("auto", "2026-12-01", cfg, [0]))
    path = write_study(tmp_path, "wide", 'variables = { "model.d_model" = [256] }', seeds="[0]",
                       budget=3 * 16384, baseline="auto@2026-12-01")
    plan = make_plan(tmp_path, path, probe=False)
    base, wide = plan.rows
    for row in plan.rows:
        assert "train.grad_accum=auto chose" in row.auto and row.tokens == 3 * 16384
        assert row.trained_as.data.batch_size * row.trained_as.train.grad_accum == 64
    assert wide.trained_as.data.batch_size <= base.trained_as.data.batch_size  # the wider model fits fewer
    assert {k for k, _, _ in wide.diff} == {"model.d_model"}  # the auto choices are not a difference of the arms
    shown = CliRunner().invoke(app, ["study", "plan", str(path), "--no-probe", "--lab", str(tmp_path)],
                               terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "auto batch (" in shown.output and "train.grad_accum=auto chose" in shown.output
