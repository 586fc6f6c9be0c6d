"""Scaling fits from the ledger and from CSV files, compute-efficiency gains of runs, ladders, and the
fits in the lab report: through the command line, on real (tiny) runs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ablab import config as C
from ablab.analysis import runs
from ablab.analysis.scaling_data import Points, frontier
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.train.launch import start_run

from conftest import TINY, run_cli

BYTE = [*TINY, "data.tokenizer=byte", "eval.every=0"]


def test_the_frontier_keeps_the_points_no_cheaper_point_beats():
    points = Points()
    for c, loss in [(1, 5.0), (2, 4.0), (2, 4.5), (3, 4.2), (4, 3.0), (5, 3.5)]:
        points.add(1.0, 1.0, c, loss, str(c))
    assert [points.labels[i] for i in frontier(points)] == ["1", "2", "4"]


def test_a_csv_of_published_points_is_fitted_stored_and_plotted(tmp_path):
    # Compute and loss columns only: the L(C) law (Chinchilla's grid fit is tested in test_scaling.py).
    rng = np.random.default_rng(3)
    path = tmp_path / "published.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["flops", "loss"])
        for c in np.geomspace(1e15, 1e21, 12):
            writer.writerow([c, (1.7 + 2e3 * c ** -0.25) * np.exp(rng.normal(0, 0.003))])
    run_cli("init", ".", "--no-examples", cwd=tmp_path)
    result = run_cli("scaling", "fit", "--csv", str(path), "--compute-column", "flops", "--name", "pub",
                     cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "L(C) = E + A C^-alpha over" in result.stdout and "chinchilla: not fitted" in result.stdout
    with Ledger(tmp_path) as ledger:
        law = ledger.fits(name="pub", kind="compute")[0]
    assert law["fit"]["alpha"] == pytest.approx(0.25, abs=0.03) and law["fit"]["E"] == pytest.approx(1.7, abs=0.1)
    assert law["convention"] == "6ND" and len(law["points"]["loss"]) == 12
    assert (tmp_path / "reports" / "scaling" / "pub-loss-vs-compute.png").read_bytes()[:4] == b"\x89PNG"
    missing = run_cli("scaling", "fit", "--csv", str(path), "--n-column", "params", cwd=tmp_path)
    assert missing.returncode == 2 and "no column 'params'" in missing.stderr


def test_runs_fit_a_law_and_a_run_on_it_gains_about_one(tmp_path):
    ids = {}
    for steps in (8, 12, 16, 24, 40):
        outcome = start_run(C.load(None, [*BYTE, f"train.max_steps={steps}", "schedule.warmup_steps=4"]), tmp_path)
        ids[steps] = outcome.run_id
        runs.add_tag(tmp_path, outcome.run_id, "curve")  # in-process: `ablab tag` is tested in test_runs.py
    fitted = run_cli("scaling", "fit", "--tag", "curve", "--name", "tiny", cwd=tmp_path, timeout=600)
    assert fitted.returncode == 0, fitted.stderr
    assert "L(C) = E + A C^-alpha over 5 points" in fitted.stdout and "chinchilla: not fitted" in fitted.stdout
    gain = run_cli("scaling", "gain", "--run", ids[16], "--law", "tiny", cwd=tmp_path)
    assert gain.returncode == 0, gain.stderr
    value = float(gain.stdout.split(f"{ids[16]}: gain ")[1].split("x")[0])
    assert 0.5 < value < 2.0  # a run the law was fitted through needs about its own compute
    report = run_cli("report", "--no-plots", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "Scaling fits" in page and ">tiny<" in page
    no_law = run_cli("scaling", "gain", "--run", ids[8], "--law", "nope", cwd=tmp_path)
    assert no_law.returncode == 2 and "No compute law" in no_law.stderr


def test_a_ladder_runs_its_grid_once_and_stores_what_it_can_fit(tmp_path):
    cfg = C.load(None, [*BYTE, "train.max_steps=50"])
    baselines.create(tmp_path, baselines.Baseline("lad", "2026-11-01", cfg, [0]))
    args = ["ladder", "lad@2026-11-01", "--sizes", "32x1,64x2", "--tokens", "16384,49152", "--yes"]
    first = run_cli(*args, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "4 rungs x 1 seeds = 4 runs" in first.stdout and "chinchilla: not fitted" in first.stdout
    with Ledger(tmp_path) as ledger:
        links = ledger.study_runs("ladder-lad@2026-11-01")
        assert len(links) == 4 and all(ledger.run(r).status == "finished" for r in links.values())
        shapes = {ledger.run(r).config["model"]["d_model"] for r in links.values()}
        tokens = {ledger.run(r).result["tokens_seen"] for r in links.values()}
    assert shapes == {32, 64} and tokens == {16384, 49152}
    again = run_cli(*args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0 and "run " not in again.stdout.replace("rungs", "")  # nothing trained again
    status = run_cli("study", "status", "ladder-lad@2026-11-01", cwd=tmp_path)
    assert status.returncode == 0 and "d64L2@4.92e+04" in status.stdout
    sheet = run_cli("study", "conclude", "ladder-lad@2026-11-01", "--decision", "x", cwd=tmp_path)
    assert sheet.returncode == 2 and "scaling ladder" in sheet.stderr
    bad = run_cli("ladder", "lad@2026-11-01", "--sizes", "33x1", "--tokens", "16384", "--yes", cwd=tmp_path)
    assert bad.returncode == 2 and "head width" in bad.stderr


def test_dynamics_of_a_run_fit_the_curve_and_show_benchmarks_over_training(tmp_path, shared_data):
    from ablab.analysis.crossrun import dynamics
    from ablab.analysis.scaling import tokens_to_fraction

    outcome = start_run(C.load(None, [*TINY, "data.tokenizer=byte", "train.max_steps=60", "eval.every=6",
                                      "eval.tasks=lambada", "eval.tasks_every=30", "eval.tasks_limit=16"]), tmp_path)
    d = dynamics(tmp_path, outcome.run_id)
    assert len(d.tokens) == 11 and d.fit is not None and d.fit.name == "tokens"
    assert d.fractions == tokens_to_fraction(d.tokens, d.val_loss)
    assert [step for step, _, _ in d.benchmarks["lambada"]] == [0, 30, 60]
    result = run_cli("dynamics", outcome.run_id, "--out", str(tmp_path / "dyn"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "90% of the final improvement" in result.stdout and "lambada: step 0" in result.stdout
    assert (tmp_path / "dyn.png").exists() and (tmp_path / "dyn-benchmarks.png").exists()
