"""The study sheet, the lab log and the report files from a tiny real study: every seed's numbers,
train and val loss, the zoomed per-seed panel, parameters and events per run, one LOG row per arm,
and report files the group can read (the umask honoured)."""

import math
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from ablab import config as C
from ablab.analysis import stats
from ablab.analysis.verdicts import analyze
from ablab.report import figures
from ablab.report.html import build_report, write_research_report
from ablab.report.sheets import write_sheet
from ablab.store.ledger import Ledger
from ablab.store.record import now_iso
from ablab.study import baselines
from ablab.study.runner import make_plan, run_study

from conftest import TINY

BASE = "tiny@2026-11-01"
# One arm that ties the embeddings (fewer parameters) and doubles the learning rate (a lower loss).
STUDY = """[meta]
name = "tied"
category = "architecture"
date = "2026-11-21"
[objective]
question = "Do tied embeddings at a doubled learning rate beat the baseline?"
[hypothesis]
mechanism = "fewer parameters to fit, bigger steps"
prediction = "val_loss falls by at least 0.01"
falsification = "val_loss does not fall"
metric = "val_loss"
direction = "decrease"
min_effect = 0.01
read_at = "final"
[design]
baseline = "tiny@2026-11-01"
axis = "steps"
budget = 20
seeds = [0, 1]
[design.arms.tied]
"model.tie_embeddings" = true
"optim.lr" = 0.04
"""
SPIKE = {"kind": "loss_spike", "step": 15, "message": "train loss 9.1 is 3.2x the running median 2.8"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A 2-seed baseline and a 2-arm x 2-seed study of 20 steps, evaluated every 5; one run has a
    loss-spike event in the ledger."""
    lab = tmp_path_factory.mktemp("sheet-lab")
    cfg = C.load(None, [*TINY, "train.max_steps=20", "train.max_tokens=0", "train.max_seconds=0", "eval.every=5"])
    baselines.create(lab, baselines.Baseline("tiny", "2026-11-01", cfg, [0, 1]))
    (lab / "studies").mkdir()
    (lab / "studies" / "tied.toml").write_text(STUDY)
    assert run_study(lab, make_plan(lab, lab / "studies" / "tied.toml", probe=False), say=lambda s: None) == "finished"
    with Ledger(lab) as ledger:
        ledger.log_event(ledger.study_runs("tied")[("tied", 1)], {**SPIKE, "time": now_iso()})
    return lab


@pytest.fixture(scope="module")
def sheet(lab) -> str:
    return write_sheet(lab, "tied").read_text(encoding="utf-8")


def study_runs(lab: Path) -> dict:
    with Ledger(lab) as ledger:
        return {cell: ledger.run(run_id) for cell, run_id in ledger.study_runs("tied").items()}


def section(text: str, title: str) -> str:
    return text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def test_per_seed_table_has_every_seed_with_its_numbers(lab, sheet):
    table = section(sheet, "Per-seed Runs")
    for (arm, seed), run in study_runs(lab).items():
        final = run.result["final"]
        row = f"| {arm} | {seed} | {run.id} | finished | {final['train_loss']:.4f} | {final['val_loss']:.4f} | "
        assert row in table, row
    assert re.search(r"\| tied \| 1 \| \w+ \| finished \|.*\| 1 \|$", table, re.M)  # the spike, counted


def test_sheet_gives_each_arm_its_parameters_and_lists_events(lab, sheet):
    runs = study_runs(lab)
    base, tied = runs[("baseline", 0)].result, runs[("tied", 0)].result
    assert base["params"] - tied["params"] == base["vocab_size"] * 64  # the tied head is the embedding
    summary = section(sheet, "Quantitative Summary")
    assert f"| baseline | {base['params']:,} ({base['non_embedding_params']:,}) |" in summary
    assert f"| tied | {tied['params']:,} ({tied['non_embedding_params']:,}) |" in summary
    observations = section(sheet, "Raw Observations")
    assert "1 events (loss spikes, divergence, resumes) recorded" in observations
    assert f"- tied, seed 1 (run {runs[('tied', 1)].id}), step 15: loss_spike: {SPIKE['message']}" in observations


def test_verdict_shows_the_adjustment_and_why_there_is_no_bootstrap(lab, sheet):
    _, arms, _ = analyze(lab, "tied")
    tied = next(r for r in arms if r.arm == "tied")
    verdict = section(sheet, "Verdict")
    assert f"**{tied.verdict.outcome}**. Rule: {tied.verdict.reason}." in verdict
    assert tied.comparison.boot_note and tied.comparison.boot_note in verdict  # 2 seeds: no bootstrap, with the reason
    assert "bootstrap -" not in verdict and tied.verdict.adjustment in verdict


def test_sheet_embeds_train_and_val_loss_and_the_per_seed_panel(lab, sheet):
    folder = lab / "reports" / "studies"
    for stem in ("tied-loss-steps", "tied-loss-tokens", "tied-loss-time", "tied-val_loss-by-seed"):
        assert f"![{stem}]({stem}.png)" in sheet
        assert (folder / f"{stem}.png").read_bytes()[:4] == b"\x89PNG" and (folder / f"{stem}.svg").exists()


def curves(lab: Path, x: str, metric: str) -> dict[str, list[figures.Series]]:
    """Each arm's runs as the study's figures draw them."""
    with Ledger(lab) as ledger:
        found = {}
        for (arm, seed), run in study_runs(lab).items():
            found.setdefault(arm, []).append(figures.series_from_rows(ledger.metrics(run.id), x=x, metric=metric,
                                                                       label=f"seed {seed}"))
    return found


def test_time_curve_mean_ends_at_the_final_mean(lab):
    val, train = curves(lab, "elapsed", "val_loss"), curves(lab, "elapsed", "train_loss")
    ax = figures._build_loss_bands(val, x="elapsed", train=train).axes[0]
    runs = study_runs(lab)
    for arm in ("baseline", "tied"):
        finals = [runs[(arm, s)].result["final"] for s in (0, 1)]
        solid, dashed = (next(ln for ln in ax.lines if ln.get_label() == f"{arm} {m} (mean of 2 seeds)")
                         for m in ("val_loss", "train_loss"))
        assert solid.get_ydata()[-1] == pytest.approx(np.mean([f["val_loss"] for f in finals]), abs=1e-9)
        assert dashed.get_ydata()[-1] == pytest.approx(np.mean([f["train_loss"] for f in finals]), abs=1e-9)
        assert dashed.get_linestyle() == "--"
        last = [curves(lab, "elapsed", "val_loss")[arm][s].x[-1] for s in (0, 1)]
        assert solid.get_xdata()[-1] == pytest.approx(np.mean(last))  # placed at the seeds' mean end time


def test_per_seed_panel_zooms_onto_the_final_values(lab):
    _, arms, _ = analyze(lab, "tied")
    values = {r.arm: dict(zip((0, 1), r.values)) for r in arms}
    ax = figures._build_final_values(values).axes[0]
    finals = [v for seeds in values.values() for v in seeds.values()]
    low, high = ax.get_ylim()
    spread = max(finals) - min(finals)
    assert low <= min(finals) and high >= max(finals)
    assert low >= min(finals) - 0.2 * spread and high <= max(finals) + 0.2 * spread
    start = curves(lab, "steps", "val_loss")["baseline"][0].values[0]  # the step-0 loss, far above
    assert start > high + 5 * spread


def test_log_has_a_row_per_arm_with_its_own_mean(lab, sheet):
    log = (lab / "reports" / "LOG.md").read_text(encoding="utf-8")
    runs = study_runs(lab)
    _, arms, _ = analyze(lab, "tied")
    verdict = next(r.verdict.outcome for r in arms if r.arm == "tied")
    for arm, says in (("baseline", "the reference arm"), ("tied", verdict)):
        s = stats.summarize([runs[(arm, seed)].result["final"]["val_loss"] for seed in (0, 1)])
        assert f"| 1 | tied | 2026-11-21 | {arm} | 2/2 | {s.mean:.4f} ± {s.std:.4f} |" in log
        assert re.search(rf"\| {arm} \|.*\| {says} \|$", log, re.M)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_report_files_honour_the_umask(lab, tmp_path, umask, mode):
    shutil.rmtree(lab / "reports")  # a file that exists keeps its mode; the umask applies to new ones
    old = os.umask(umask)
    try:
        out = tmp_path / "out"
        written = [write_sheet(lab, "tied"), lab / "reports" / "LOG.md", build_report(lab, out),
                   write_research_report(lab)]
        written += sorted((lab / "reports" / "studies").glob("tied-*"))
    finally:
        os.umask(old)
    assert len(written) > 8
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_finite_metric_is_what_the_panel_draws(lab):
    """A run without the metric (not finished) is left out of the panel, not drawn at NaN."""
    _, arms, _ = analyze(lab, "tied")
    values = {r.arm: dict(zip((0, 1), r.values)) for r in arms}
    values["tied"][1] = math.nan
    ax = figures._build_final_values(values).axes[0]
    drawn = [y for line in ax.lines for y in line.get_ydata()]
    assert len(drawn) == 3 and all(math.isfinite(y) for y in drawn)
