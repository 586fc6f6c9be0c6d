"""The memory / systems addendum of a memory study: each arm profiled as `ablab profile` does it,
kept with the study, printed in its sheet (weights, gradients, optimizer state, activations, peak)."""

from __future__ import annotations

from ablab import config as C
from ablab.report.sheets import write_sheet
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study.runner import make_plan, run_study

from conftest import TINY
from test_study import write_study


def test_a_memory_study_sheet_splits_each_arm_s_memory_by_part(tmp_path, one_thread):
    cfg = C.load(None, [*TINY, "train.max_steps=4", "eval.points=2", "train.device=cpu"])
    baselines.create(tmp_path, baselines.Baseline("tiny", "2026-12-01", cfg, [0]))
    path = write_study(tmp_path, "ckpt", 'variables = { "model.activation_checkpointing" = [true] }', seeds="[0]",
                       budget=4 * 16 * 64, baseline="tiny@2026-12-01", category="memory")
    assert run_study(tmp_path, make_plan(tmp_path, path, probe=False), say=lambda s: None) == "finished"
    with Ledger(tmp_path) as ledger:
        rows = ledger.study("ckpt")["data"]["profile"]
    base, ckpt = rows["baseline"], rows["model.activation_checkpointing=True"]
    assert base["params"] == ckpt["params"] and base["weights_mb"] == ckpt["weights_mb"] == base["params"] * 4 / 2**20
    assert base["grads_mb"] == base["weights_mb"] and base["optimizer_mb"] > 0
    assert ckpt["activations_mb"] < base["activations_mb"]  # recomputed in backward: fewer saved activations
    assert base["batch_size"] == 16 and base["seq_len"] == 64  # the micro-batch the runs trained with
    sheet = write_sheet(tmp_path, "ckpt").read_text()
    addendum = sheet.split("### Memory / Systems Addendum")[1].split("###")[0]
    assert "Memory by part, measured as `ablab profile` measures it" in addendum
    assert f"| baseline | 16 x 64 | {base['params'] / 1e6:.2f}M | {base['weights_mb']:,.1f} |" in addendum
    assert f"{ckpt['activations_mb']:,.1f}" in addendum
