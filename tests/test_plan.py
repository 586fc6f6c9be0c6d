"""What a study plan says before an hour of CPU is spent: reuse across budget spellings, what is
reused / to train / to resume, measured time as a range, one probe per shape, the noise floor of a
baseline from any study's runs, the template, and readable promotion."""

import json
import os
import signal
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablab import config as C
from ablab.cli.main import app
from ablab.data.prepare import prepare_data
from ablab.store.ledger import Ledger
from ablab.study import baselines, estimates, runner
from ablab.study.runner import make_plan, run_study
from ablab.train import launch

from conftest import TINY, run_cli
from test_study import write_study as study_file

STEPS = 15
PER_STEP = 16 * 64  # TINY's tokens per step
BASE = "tiny@2026-11-01"


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A lab whose baselines stop by steps (max_steps=15); the studies below stop by tokens. The warmup
    is short so that the decay, which follows the budget, shapes the runs."""
    lab = tmp_path_factory.mktemp("plan-lab")
    cfg = C.load(None, [*TINY, f"train.max_steps={STEPS}", "schedule.warmup_steps=2"])
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    baselines.create(lab, baselines.Baseline("solo", "2026-11-01", cfg, [7]))
    return lab


def write_study(lab: Path, name: str, variables: str, seeds: str = "[0, 1]", baseline: str = BASE,
                budget: int = STEPS * PER_STEP) -> Path:
    return study_file(lab, name, f"variables = {{ {variables} }}", seeds=seeds, budget=budget, baseline=baseline)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=200)


def test_a_budget_in_tokens_reuses_the_runs_of_the_same_budget_in_steps(lab):
    cfg = baselines.load(lab, "solo@2026-11-01").config
    in_tokens = C.replace(cfg, {"train.max_steps": 0, "train.max_tokens": STEPS * PER_STEP + PER_STEP // 2})
    assert C.config_hash(in_tokens) == C.config_hash(cfg) != C.config_hash(C.replace(cfg, {"train.max_steps": 14}))
    trained = runner.run_baseline(lab, "solo@2026-11-01", say=lambda s: None)
    assert trained["val_loss"] != trained["val_loss"]  # one seed: no spread measured yet
    said = []
    plan = make_plan(lab, write_study(lab, "solo-lr", '"optim.lr" = [0.04]', seeds="[7]",
                                      baseline="solo@2026-11-01"), probe=False)
    assert (plan.rows[0].reused, plan.rows[0].to_train) == (1, 0)
    assert run_study(lab, plan, say=said.append) == "finished"
    with Ledger(lab) as ledger:
        baseline_run = ledger.runs(name="solo@2026-11-01/seed7")[0]
        assert ledger.study_runs("solo-lr")[("baseline", 7)] == baseline_run.id
    assert f"baseline seed 7: run {baseline_run.id} reused" in said
    # The two spellings train identically, not merely hash alike: forced to train again, the
    # token-spelled config (a budget that is not a whole number of steps) ends on the same bits.
    again = launch.start_run(C.replace(in_tokens, {"seed": 7}), lab, force=True)
    assert again.result["steps"] == STEPS and again.run_id != baseline_run.id
    assert again.result["final"]["val_loss"] == baseline_run.final["val_loss"]
    assert again.result["final"]["train_loss"] == baseline_run.final["train_loss"]


def test_the_noise_floor_counts_a_study_s_runs_of_the_baseline_seeds(lab):
    listed = json.loads(invoke("baseline", "list", "--json", "--lab", str(lab)).output)
    assert {b["ref"]: b["noise_floor"] for b in listed}[BASE] is None
    path = write_study(lab, "floor", '"optim.lr" = [0.04]')
    assert run_study(lab, make_plan(lab, path, probe=False), say=lambda s: None) == "finished"
    listed = {b["ref"]: b for b in json.loads(invoke("baseline", "list", "--json", "--lab", str(lab)).output)}
    with Ledger(lab) as ledger:
        finals = [ledger.run(ledger.study_runs("floor")[("baseline", seed)]).final["val_loss"] for seed in (0, 1)]
    assert listed[BASE]["noise_floor"]["val_loss"] == pytest.approx(abs(finals[0] - finals[1]) / 2 ** 0.5)
    shown = json.loads(invoke("baseline", "show", BASE, "--json", "--lab", str(lab)).output)
    assert shown["noise_floor"]["val_loss"] == listed[BASE]["noise_floor"]["val_loss"]
    said = []
    runner.run_baseline(lab, BASE, say=said.append)  # nothing left to train: the study's runs are the baseline's
    assert len(said) == 2 and all("reused" in line for line in said)
    result = invoke("baseline", "promote", "floor", "--arm", "optim.lr=0.04", "--date", "2026-11-02", "--lab", str(lab))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["promoted tiny@2026-11-02, now the current 'tiny' baseline",
                                          f"  parent: {BASE}", "  optim.lr: 0.02 -> 0.04",
                                          "  justified by: study floor, arm optim.lr=0.04"]


def test_the_plan_counts_reused_to_train_and_to_resume(lab):
    path = write_study(lab, "counts", '"model.d_ff" = [96]', seeds="[3]")

    def stop_the_arm(arm, seed):  # the arm's run is interrupted at step 6, the baseline's finishes
        return (lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 6 else None) if arm != "baseline" \
            else None

    assert run_study(lab, make_plan(lab, path, probe=False), stop_the_arm, say=lambda s: None) == "interrupted"
    plan = make_plan(lab, write_study(lab, "counts", '"model.d_ff" = [96]', seeds="[3, 4]"), probe=False)
    base, arm = plan.rows
    assert (base.reused, base.to_train, base.to_resume) == (1, 1, 0) and base.steps_to_run == STEPS
    assert (arm.reused, arm.to_train, arm.to_resume) == (0, 1, 1)
    with Ledger(lab) as ledger:
        done = ledger.run(ledger.study_runs("counts")[("model.d_ff=96", 3)]).result["steps"]
    assert 6 <= done < STEPS and arm.steps_to_run == STEPS + STEPS - done  # a resume counts only what is left
    # Time: the baseline's shape has finished runs on this host, so they are the measure; the d_ff=96
    # shape has no finished run, and without a probe its time is unknown.
    assert "finished run" in base.pace.source and base.pace.low <= base.pace.mid <= base.pace.high
    assert base.est_seconds == pytest.approx(tuple(s * STEPS for s in (base.pace.low, base.pace.mid, base.pace.high)))
    assert arm.pace is None and arm.est_seconds is None and plan.est_seconds is None
    assert run_study(lab, plan, say=lambda s: None) == "finished"
    after = make_plan(lab, plan.spec.path, probe=False)
    assert [(r.reused, r.to_train, r.to_resume) for r in after.rows] == [(2, 0, 0), (2, 0, 0)]
    assert after.est_seconds == (0.0, 0.0, 0.0)


def test_params_and_flops_per_arm_see_tied_embeddings(lab):
    plan = make_plan(lab, write_study(lab, "tied", '"model.tie_embeddings" = [true]'), probe=False)
    base, tied = plan.rows
    vocab = 65  # tiny-shakespeare, by character
    assert base.params - tied.params == vocab * 64  # the output head shares the embedding matrix
    assert base.flops_per_run == base.flops_per_token * STEPS * PER_STEP
    assert tied.flops_per_token == base.flops_per_token  # the head's matmul is done either way


def test_study_run_probes_each_shape_once_and_not_again(tmp_path, monkeypatch):
    cfg = C.load(None, [*TINY, f"train.max_steps={STEPS}"])
    baselines.create(tmp_path, baselines.Baseline("tiny", "2026-11-01", cfg, [0]))
    probed = []
    real = estimates.probe
    monkeypatch.setattr(estimates, "probe", lambda *args: probed.append(args[0]) or real(*args))
    path = write_study(tmp_path, "probed", '"optim.lr" = [0.01, 0.04]', seeds="[0]")
    planned = invoke("study", "plan", str(path), "--lab", str(tmp_path))
    assert planned.exit_code == 0, planned.output
    assert len(probed) == 1  # three arms of one shape share one probe
    result = invoke("study", "run", str(path), "--yes", "--lab", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert len(probed) == 1  # `run` shows the plan's probe, remembered in the lab, and runs from the plan it showed
    assert "s/step (spread" in result.output and "from probe of" in result.output and "min ago" in result.output
    (tmp_path / estimates.PROBES).write_text("{not json", encoding="utf-8")  # a damaged memory is measured again
    assert invoke("study", "plan", str(path), "--lab", str(tmp_path)).exit_code == 0
    assert "0 reused, 3 to train, 0 to resume" in result.output
    assert "schedule.warmup_steps = 50 is 333% of the run's 15 steps" in result.output
    data = prepare_data(cfg.data)
    assert estimates.probe(cfg, data, 3).source == "probe of 5 steps"  # at least 5, though the run has 3
    assert estimates.probe(cfg, data, 6).source == "probe of 6 steps"  # never more than the run trains
    long = estimates.probe(cfg, data, 10_000)  # timed for PROBE_SECONDS, not a fixed 3 steps
    assert int(long.source.split()[2]) > 6 and long.low <= long.mid <= long.high


def test_study_new_fills_the_template_and_planning_refuses_its_unwritten_texts(lab):
    result = invoke("study", "new", "tie", "--baseline", BASE, "--question", "Does tying the embeddings cost loss?",
                    "--variable", "model.tie_embeddings=true", "--variable", "optim.lr=0.01,0.04", "--lab", str(lab))
    assert result.exit_code == 0, result.output
    assert "replace its [to write] texts" in result.output  # said, not swallowed as markup
    path = lab / "studies" / "tie.toml"
    raw = tomllib.loads(path.read_text())
    assert raw["objective"]["question"] == "Does tying the embeddings cost loss?"
    assert raw["design"]["variables"] == {"model.tie_embeddings": [True], "optim.lr": [0.01, 0.04]}
    assert "model.tie_embeddings and optim.lr" in raw["hypothesis"]["mechanism"]
    refused = run_cli("study", "plan", str(path), "--no-probe", "--lab", str(lab), cwd=lab)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "hypothesis.mechanism still holds the template's unwritten text" in refused.stderr
    text = path.read_text()
    for key in ("mechanism", "prediction", "falsification"):
        text = text.replace(raw["hypothesis"][key], f"my {key}")
    path.write_text(text)
    plan = make_plan(lab, path, probe=False)
    assert [row.arm.name for row in plan.rows] == ["baseline", "model.tie_embeddings=True optim.lr=0.01",
                                                   "model.tie_embeddings=True optim.lr=0.04"]
    bad = invoke("study", "new", "typo", "--variable", "optim.lrr=0.1", "--lab", str(lab))
    assert bad.exit_code != 0 and "Did you mean 'optim.lr'" in str(bad.exception or bad.output)
