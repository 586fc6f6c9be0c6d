import json
import os
import signal
from pathlib import Path

import pytest

from ablab import config as C
from ablab.analysis.verdicts import analyze
from ablab.errors import UserError
from ablab.report.sheets import write_sheet
from ablab.store.ledger import Ledger
from ablab.study import baselines, runner
from ablab.study.runner import make_plan, run_study
from ablab.study.spec import parse

from conftest import TINY, run_cli

BASE = "tiny@2026-11-01"


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A lab with a tiny dated baseline (3 seeds) that studies run against at 20 steps."""
    lab = tmp_path_factory.mktemp("study-lab")
    cfg = C.load(None, [*TINY, "train.max_steps=20", "eval.every=10"])
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1, 2]))
    return lab


def write_study(lab: Path, name: str, design: str, direction: str = "decrease", seeds: str = "[0, 1, 2]",
                budget: int = 20480, axis: str = "tokens", read_at: str = "final", baseline: str = BASE,
                category: str = "optimizer", question: str = "Does it matter?", min_effect: float = 0.01) -> Path:
    path = lab / "studies" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'''[meta]
name = "{name}"
category = "{category}"
date = "2026-11-21"
[objective]
question = "{question}"
[hypothesis]
mechanism = "m"
prediction = "p"
falsification = "f"
metric = "val_loss"
direction = "{direction}"
min_effect = {min_effect}
read_at = "{read_at}"
[design]
baseline = "{baseline}"
axis = "{axis}"
budget = {budget}
seeds = {seeds}
{design}
''')
    return path


@pytest.mark.parametrize("design, extra, words", [
    ('variables = { "optim.momentm" = [0.9] }', {}, "'optim.momentm' is not a config key. Did you mean 'optim.momentum'"),
    ('variables = { "optim.lr" = [0.01] }\nfrozen = ["optim.lr"]', {}, "Frozen key optim.lr differs between arms"),
    ('variables = { "data.seq_len" = [48] }', {"budget": 10000}, "Under the equal-tokens axis every arm must see the same tokens"),
    ('variables = { "optim.lr" = [0.01] }', {"seeds": "[]"}, "design.seeds is empty"),
])
def test_plan_refuses_designs_that_break_themselves(lab, design, extra, words):
    path = write_study(lab, "bad", design, **extra)
    with pytest.raises(UserError) as err:
        make_plan(lab, path, probe=False)
    assert words in str(err.value)


def test_unknown_baseline_is_refused_from_the_command_line(lab):
    path = write_study(lab, "orphan", 'variables = { "optim.lr" = [0.01] }')
    path.write_text(path.read_text().replace(BASE, "nope@2026-01-01"))
    result = run_cli("study", "plan", str(path), "--no-probe", "--lab", str(lab), cwd=lab)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Unknown baseline nope@2026-01-01" in result.stderr and BASE in result.stderr


def test_every_shipped_study_loads_and_plans(tmp_path, shared_data):
    created = baselines.install_examples(tmp_path)
    studies = sorted((tmp_path / "studies").glob("*.toml"))
    assert len(studies) == 14 and len(created) == 18
    names = set()
    for path in studies:
        plan = make_plan(tmp_path, path, probe=False)
        names.add(plan.spec.name)
        assert len(plan.rows) >= 2 and plan.rows[0].arm.name == "baseline"
        if plan.spec.axis == "tokens":
            assert len({row.tokens for row in plan.rows}) == 1
        for row in plan.rows[1:]:
            assert {k for k, _, _ in row.diff} <= set(plan.spec.variables)
    assert {"arch-scaling", "muon-lr", "seq-len", "dynamics", "cs336-ablations"} <= names
    assert parse(tmp_path / "studies" / "arch-scaling.toml").benchmarks == ["choice", "lambada", "arithmetic"]


def test_plan_probe_measures_time_and_memory(lab):
    plan = make_plan(lab, write_study(lab, "probe", 'variables = { "model.d_ff" = [256] }'))
    for row in plan.rows:
        assert 0 < row.pace.low <= row.pace.mid <= row.pace.high and row.pace.peak_memory_mb > 0
        assert row.est_seconds[1] == pytest.approx(row.pace.mid * row.steps * 3)
    assert plan.total_runs == 6


def verdicts(lab, name):
    return {r.arm: r.verdict.outcome for r in analyze(lab, name)[1] if r.verdict}


def test_verdicts_follow_the_evidence(lab):
    same = write_study(lab, "same", 'variables = { "optim.lr" = [0.02] }')  # the baseline's own value
    assert run_study(lab, make_plan(lab, same, probe=False), say=lambda s: None) == "finished"
    assert verdicts(lab, "same") == {"optim.lr=0.02": "inconclusive"}
    frozen_lr = '[design.arms.frozen]\n"optim.lr" = 1e-6\n"optim.adamw_lr" = 1e-6'
    for name, direction, expected in (("tiny-lr-up", "increase", "supported"), ("tiny-lr-down", "decrease", "refuted")):
        path = write_study(lab, name, frozen_lr, direction=direction)
        run_study(lab, make_plan(lab, path, probe=False), say=lambda s: None)
        assert verdicts(lab, name) == {"frozen": expected}
    with Ledger(lab) as ledger:  # the second study reused the first's runs (same content keys)
        links = [ledger.study_runs(n) for n in ("tiny-lr-up", "tiny-lr-down")]
    assert links[0] == links[1]


def test_the_prediction_can_be_read_at_a_token_count(lab):
    path = write_study(lab, "early", 'variables = { "model.d_ff" = [96] }', seeds="[0, 1]", read_at="tokens:10240")
    run_study(lab, make_plan(lab, path, probe=False), say=lambda s: None)
    _, results, _ = analyze(lab, "early")
    with Ledger(lab) as ledger:
        links = ledger.study_runs("early")
        at_step_10 = [next(r["val_loss"] for r in ledger.metrics(links[("baseline", seed)]) if r["step"] == 10)
                      for seed in (0, 1)]
        final = [ledger.run(links[("baseline", seed)]).final["val_loss"] for seed in (0, 1)]
    assert results[0].values == at_step_10  # eval every 10 steps of 1,024 tokens: step 10 is token 10,240
    assert results[0].values != final


def test_interrupted_study_finishes_only_what_is_missing(lab):
    path = write_study(lab, "resumable", 'variables = { "model.d_ff" = [192] }', seeds="[5, 6]")
    plan = make_plan(lab, path, probe=False)
    calls = {"runs": 0}

    def progress_for(arm, seed):
        calls["runs"] += 1
        if calls["runs"] == 3:  # the third run: interrupt it half way
            return lambda step, row: os.kill(os.getpid(), signal.SIGINT) if step == 12 else None
        return None

    assert run_study(lab, plan, progress_for, say=lambda s: None) == "interrupted"
    with Ledger(lab) as ledger:
        before = ledger.study_runs("resumable")
        assert len(before) == 3 and ledger.run(before[("baseline", 6)]).status == "interrupted"
        runs_before = len(ledger.runs())
    assert run_study(lab, plan, say=lambda s: None) == "finished"
    with Ledger(lab) as ledger:
        after = ledger.study_runs("resumable")
        assert all(after[key] == run_id for key, run_id in before.items())  # resumed, not retrained
        assert len(ledger.runs()) == runs_before + 1  # only the missing run was new
        assert all(ledger.run(r).status == "finished" for r in after.values())


def test_sheet_log_and_conclusion(lab):
    path = write_study(lab, "sheet", 'variables = { "optim.lr" = [0.04] }', seeds="[0, 1]")
    run_study(lab, make_plan(lab, path, probe=False), say=lambda s: None)
    sheet = write_sheet(lab, "sheet").read_text()
    for section in range(12):
        assert f"## {section}. " in sheet
    assert "| optim.lr=0.04 |" in sheet and "Rule:" in sheet and "☑ Equal tokens seen" in sheet
    assert (lab / "reports" / "studies" / "sheet-loss-steps.png").read_bytes()[:4] == b"\x89PNG"
    assert (lab / "reports" / "studies" / "sheet-loss-steps.svg").read_text().lstrip().startswith("<?xml")
    assert "![sheet-val_loss-vs-variable](sheet-val_loss-vs-variable.png)" in sheet  # lr 0.02 and 0.04
    result = run_cli("study", "conclude", "sheet", "--decision", "keep 0.02", "--lab", str(lab), cwd=lab)
    assert result.returncode == 0, result.stderr
    write_sheet(lab, "sheet")  # regenerating keeps the researcher's words
    sheet = (lab / "reports" / "studies" / "sheet.md").read_text()
    assert "## 10. Decision\n\nkeep 0.02" in sheet
    assert "| sheet |" in (lab / "reports" / "LOG.md").read_text()
    editor = lab / "editor.sh"  # no options: the sections are written in $EDITOR
    editor.write_text('#!/bin/sh\nsed -i "s/## follow_up/## follow_up\\nlonger runs/" "$1"\n')
    editor.chmod(0o755)
    result = run_cli("study", "conclude", "sheet", "--lab", str(lab), cwd=lab,
                     env={**os.environ, "EDITOR": str(editor), "VISUAL": ""})
    assert result.returncode == 0, result.stderr
    sheet = (lab / "reports" / "studies" / "sheet.md").read_text()
    assert "longer runs" in sheet and "keep 0.02" in sheet  # the new part added, the earlier one kept


def test_promotion_adds_the_arm_diff_and_keeps_old_studies(lab):
    path = write_study(lab, "promo", 'variables = { "model.d_ff" = [96] }', seeds="[0]")
    run_study(lab, make_plan(lab, path, probe=False), say=lambda s: None)
    result = run_cli("baseline", "promote", "promo", "--arm", "model.d_ff=96", "--date", "2026-11-22",
                     "--lab", str(lab), cwd=lab)
    assert result.returncode == 0, result.stderr
    old, new = baselines.load(lab, BASE), baselines.load(lab, "tiny@2026-11-22")
    assert C.diff(old.config, new.config) == [("model.d_ff", 128, 96)]
    assert new.parent == BASE and new.justified_by == ["promo"]
    current = {b["ref"]: b.get("current") for b in baselines.listing(lab)}
    assert current == {BASE: False, "tiny@2026-11-22": True}
    with Ledger(lab) as ledger:
        assert ledger.study("promo")["baseline"] == BASE


def test_baseline_run_measures_the_noise_floor(tmp_path):
    cfg = C.load(None, [*TINY, "train.max_steps=15", "eval.every=0"])
    baselines.create(tmp_path, baselines.Baseline("nf", "2026-11-01", cfg, [0, 1]))
    floor = runner.run_baseline(tmp_path, "nf@2026-11-01", say=lambda s: None)
    stored = baselines.listing(tmp_path)[0]["noise_floor"]
    assert floor["val_loss"] > 0 and stored["val_loss"] == pytest.approx(floor["val_loss"])


def test_study_benchmarks_score_every_run_and_fill_the_sheet(lab):
    rows = [{"q": f"is {w} a {k}?", "options": ["yes", "no"], "answer": i % 2}
            for i, (w, k) in enumerate([("oak", "tree"), ("cod", "fish"), ("ash", "tree"), ("eel", "fish")] * 3)]
    (lab / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (lab / "toy.toml").write_text('name = "toy"\nversion = 2\ntype = "multiple_choice"\ndata_file = "toy.jsonl"\n'
                                  'context = "{q}"\nchoices = "options"\nlabel = "answer"\n')
    path = write_study(lab, "bench", 'variables = { "optim.lr" = [0.04] }\nbenchmarks = ["../toy.toml"]\n'
                       'benchmark_limit = 0', seeds="[0, 1]")
    said = []
    run_study(lab, make_plan(lab, path, probe=False), say=said.append)
    with Ledger(lab) as ledger:
        runs = ledger.study_runs("bench")
        stored = ledger.evals(list(runs.values()), task="toy")
    assert len(stored) == 4 and {e["task_version"] for e in stored} == {2} and all(e["n"] == 12 for e in stored)
    assert sum("scored toy" in line for line in said) == 4
    said.clear()
    run_study(lab, make_plan(lab, path, probe=False), say=said.append)  # nothing left to train or score
    assert not any("scored" in line for line in said)
    sheet = write_sheet(lab, "bench").read_text()
    assert "### Benchmarks" in sheet and "| toy | optim.lr=0.04 |" in sheet and "| toy | baseline |" in sheet
    assert "![bench-benchmarks](bench-benchmarks.png)" in sheet
