"""Benchmarks on runs: `ablab eval`, results in the ledger, evaluation during training, studies'
benchmarks, three-tier baselines, and what a trained model gains over the same model untrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablab import config as C
from ablab.evals.runner import aggregate, per_budget
from ablab.evals.specfile import task_names
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study.tiers import TaskTiers, TierReport, check
from ablab.train.launch import start_run

from conftest import TINY, run_cli

BYTE = [*TINY, "data.tokenizer=byte", "eval.every=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """A lab with one tiny byte-level run, 12 steps."""
    lab = tmp_path_factory.mktemp("eval-lab")
    outcome = start_run(C.load(None, [*BYTE, "train.max_steps=12"]), lab)
    assert outcome.status == "finished"
    return lab, outcome.run_id


def eval_json(lab: Path, run_id: str, *args: str) -> dict:
    result = run_cli("eval", run_id[:6], "--json", *args, cwd=lab)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_eval_stores_versioned_results_and_reports_the_aggregate(trained, shared_data):
    lab, run_id = trained
    report = eval_json(lab, run_id, "--tasks", "piqa,arc_easy", "--limit", "12")
    tasks = {t["task"]: t for t in report["tasks"]}
    assert set(tasks) == {"piqa", "arc_easy"} and all(t["n"] == 12 for t in tasks.values())
    assert tasks["piqa"]["metrics"]["chance"] == 0.5
    centred = [t["metrics"]["centered"] for t in tasks.values()]
    assert report["aggregate"]["centered"] == pytest.approx(sum(centred) / 2)
    assert report["step"] == 12
    assert report["per_hour"] == pytest.approx(report["aggregate"]["centered"] / (report["train_seconds"] / 3600))
    assert report["per_million_params"] == pytest.approx(report["aggregate"]["centered"] / (report["params"] / 1e6))
    with Ledger(lab) as ledger:
        stored = {(e["task"], e["task_version"]): e for e in ledger.evals([run_id])}
    assert set(stored) == {("piqa", 1), ("arc_easy", 1)}
    assert stored[("piqa", 1)]["metrics"] == tasks["piqa"]["metrics"]
    assert stored[("piqa", 1)]["example_limit"] == 12 and stored[("piqa", 1)]["step"] == 12
    lines = (lab / ".ablab" / "runs" / run_id / "evals.jsonl").read_text().splitlines()
    assert len(lines) == 2

    eval_json(lab, run_id, "--tasks", "piqa", "--limit", "12")  # the same evaluation again replaces its row
    with Ledger(lab) as ledger:
        assert len(ledger.evals([run_id], task="piqa")) == 1
    shown = run_cli("show", run_id[:6], cwd=lab)
    assert "benchmarks" in shown.stdout and "arc_easy" in shown.stdout


def test_eval_table_output(trained, shared_data):
    lab, run_id = trained
    result = run_cli("eval", run_id[:6], "--tasks", "lambada", "--limit", "8", cwd=lab)
    assert result.returncode == 0, result.stderr
    assert "lambada" in result.stdout and "ppl" in result.stdout
    assert "mean centred score over 1 tasks" in result.stdout and "per million parameters" in result.stdout


@pytest.mark.parametrize("args, words", [
    (["--tasks", "piqaa"], "Did you mean 'piqa'"),
    ([], "No benchmark tasks named"),
    (["--tasks", "missing.toml"], "missing.toml"),
])
def test_bad_eval_inputs_exit_2_with_one_sentence(trained, args, words):
    lab, run_id = trained
    result = run_cli("eval", run_id[:6], *args, cwd=lab)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_benchmark_data_names_ablab_data(trained, tmp_path):
    lab, run_id = trained
    result = run_cli("eval", run_id[:6], "--tasks", "piqa", cwd=lab, env=_env(ABLAB_DATA=str(tmp_path)))
    assert result.returncode == 2 and "ABLAB_DATA" in result.stderr and "Traceback" not in result.stderr


def _env(**changes: str) -> dict:
    import os

    return {**os.environ, **changes}


def test_export_hf_refuses_an_architecture_llama_lacks(tmp_path):
    outcome = start_run(C.load(None, [*BYTE, "train.max_steps=2", "model.mlp=gelu"]), tmp_path)
    result = run_cli("export-hf", outcome.run_id, str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "model.mlp" in result.stderr and "Traceback" not in result.stderr


def test_export_and_import_carry_the_benchmark_results(trained, shared_data, tmp_path):
    lab, run_id = trained
    eval_json(lab, run_id, "--tasks", "siqa", "--limit", "6")
    archive = tmp_path / "runs.tar.gz"
    assert run_cli("export", run_id, "--out", str(archive), cwd=lab).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    assert run_cli("import", str(archive), cwd=other).returncode == 0
    with Ledger(lab) as a, Ledger(other) as b:
        assert b.evals([run_id]) == a.evals([run_id]) and len(b.evals([run_id])) >= 1


# -- during training ------------------------------------------------------------------------------
def test_benchmarks_every_n_steps_give_a_training_dynamics_curve(tmp_path, shared_data):
    cfg = C.load(None, [*BYTE, "train.max_steps=10", "eval.tasks=piqa,lambada", "eval.tasks_every=5",
                        "eval.tasks_limit=8"])
    outcome = start_run(cfg, tmp_path)
    with Ledger(tmp_path) as ledger:
        rows = ledger.evals([outcome.run_id])
    assert sorted({(e["step"], e["task"]) for e in rows}) == [
        (0, "lambada"), (0, "piqa"), (5, "lambada"), (5, "piqa"), (10, "lambada"), (10, "piqa")]
    lambada_ppl = [e["metrics"]["ppl"] for e in rows if e["task"] == "lambada"]
    assert lambada_ppl[-1] < lambada_ppl[0]  # ten steps of training already make the targets likelier
    final = outcome.result["final"]["benchmarks"]
    assert set(final) == {"piqa", "lambada", "centered_mean"}


def test_an_unknown_training_benchmark_fails_before_any_run_is_recorded(tmp_path):
    result = run_cli("run", *BYTE, "eval.tasks=hellaswg", cwd=tmp_path)
    assert result.returncode == 2 and "hellaswag" in result.stderr
    assert not (tmp_path / ".ablab" / "runs").exists() or not any((tmp_path / ".ablab" / "runs").iterdir())


# -- aggregate, suites, tiers ---------------------------------------------------------------------
def test_aggregate_is_the_mean_of_centred_scores_with_combined_error():
    results = [{"metrics": {"centered": 0.2, "centered_stderr": 0.03}},
               {"metrics": {"centered": -0.1, "centered_stderr": 0.04}}]
    agg = aggregate(results)
    assert agg["centered"] == pytest.approx(0.05) and agg["centered_stderr"] == pytest.approx(0.05 / 2)
    assert per_budget(0.05, 1800, 2_000_000) == (pytest.approx(0.1), pytest.approx(0.025))
    assert per_budget(0.05, None, 0) == (None, None)


def test_suites_expand_and_repeats_drop():
    assert task_names("choice,piqa") == ["hellaswag", "piqa", "siqa", "arc_easy"]
    assert task_names("plan")[-2:] == ["squad", "arithmetic"]


def test_tier_check_names_the_tasks_that_break_the_criteria():
    tiers = [TaskTiers("good", 0.25, {10: [0.30, 0.31], 100: [0.40, 0.41]}),
             TaskTiers("noisy", 0.5, {10: [0.50, 0.60], 100: [0.70, 0.71]}),
             TaskTiers("flat", 0.5, {10: [0.55, 0.55], 100: [0.52, 0.53]}),
             TaskTiers("below", 0.5, {10: [0.45, 0.45], 100: [0.60, 0.60]}),
             TaskTiers("text", unmeasurable="no encodable examples")]
    report = TierReport("b@2026-01-01", (10, 100), [0, 1], tiers)
    check(report)
    assert report.inconsistent == ["noisy"] and report.not_monotone == ["flat", "below"]
    assert report.consistent and not report.monotone and report.scaled_down  # 2 of 4 measured is not "most"


def test_baseline_tiers_from_the_command_line(tmp_path, shared_data):
    cfg = C.load(None, [*BYTE, "train.max_steps=50"])
    baselines.create(tmp_path, baselines.Baseline("tb", "2026-11-01", cfg, [0, 1]))
    result = run_cli("baseline", "tiers", "tb@2026-11-01", "--steps", "2,30", "--tasks", "lambada,piqa",
                     "--limit", "16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "scaled down from the plan's 100 and 1000" in result.stdout
    assert "trained > untrained > chance" in result.stdout
    stored = baselines.listing(tmp_path)[0]["tiers"]
    assert stored["steps"] == [2, 30] and set(stored["tasks"]) == {"lambada", "piqa"}
    assert all(len(v) == 2 for v in stored["tasks"]["piqa"]["acc"].values())  # both seeds, both tiers
    with Ledger(tmp_path) as ledger:
        assert len(ledger.runs()) == 4 and len(ledger.evals()) == 8


def test_a_task_a_char_model_cannot_read_is_reported_and_the_rest_kept(tmp_path, shared_data):
    outcome = start_run(C.load(None, [*TINY, "eval.every=0", "train.max_steps=2"]), tmp_path)  # char tokenizer
    result = run_cli("eval", outcome.run_id, "--tasks", "arithmetic,piqa", "--limit", "40", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "arithmetic     not measured" in result.stdout and "mean centred score over 1 tasks" in result.stdout
    with Ledger(tmp_path) as ledger:
        stored = ledger.evals([outcome.run_id])
    assert [e["task"] for e in stored] == ["piqa"] and 0 < stored[0]["n"] + stored[0]["skipped"] == 40
    only = run_cli("eval", outcome.run_id, "--tasks", "arithmetic", cwd=tmp_path)
    assert only.returncode == 2 and "data.tokenizer = 'byte' or 'bpe'" in only.stderr
    before = run_cli("run", *TINY, "eval.tasks=arithmetic", cwd=tmp_path)  # refused before training starts
    assert before.returncode == 2 and "drop it from eval.tasks" in before.stderr


def test_correlate_gives_the_task_and_loss_matrix_and_a_heatmap(tmp_path, shared_data):
    import numpy as np
    from scipy import stats as sps

    from ablab.analysis.crossrun import benchmark_columns, correlations

    for steps in (2, 6, 12, 20):
        run = start_run(C.load(None, [*BYTE, f"train.max_steps={steps}", "eval.tasks=piqa,lambada",
                                      "eval.tasks_limit=24"]), tmp_path)
        assert run.status == "finished"
    table = correlations(tmp_path, method="spearman")
    assert table.names == ["val_loss", "lambada", "piqa"] and table.runs == 4
    columns = benchmark_columns(tmp_path)
    expected = sps.spearmanr(columns["val_loss"], columns["piqa"]).statistic
    assert table.r[0, 2] == pytest.approx(expected) or (np.isnan(expected) and np.isnan(table.r[0, 2]))
    result = run_cli("correlate", "--out", str(tmp_path / "corr.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "spearman correlations over 4 runs" in result.stdout
    assert (tmp_path / "corr.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "corr.svg").exists()
    few = run_cli("correlate", "--tag", "nothing", cwd=tmp_path)
    assert few.returncode == 2 and "at least 3 runs" in few.stderr
