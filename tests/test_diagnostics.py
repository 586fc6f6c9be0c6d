"""Training diagnostics (train.diagnostics): in the metric rows at exactly the evaluation steps, none
when off, the training itself unchanged; gradient norms and update ratios equal to torch's own
numbers at that step; attention entropy equal to a hand-written softmax's; a list selects; an
unknown name is one sentence; a study sheet shows one figure per diagnostic."""

import importlib.util
import math

import pytest
import torch

from ablab import config as C
from ablab.model.optim import CombinedOptimizer
from ablab.report.sheets import write_sheet
from ablab.store.ledger import Ledger
from ablab.store.record import RunRecord
from ablab.study import baselines
from ablab.study.runner import make_plan, run_study
from ablab.train import diagnostics
from ablab.train.launch import start_run

from conftest import TINY, run_cli
from test_study import write_study

FAMILIES = {"grad_norms": "diag/grad_norm/", "gain_grad_norms": "diag/gain_grad_norm/",
            "activation_rms": "diag/act_rms/", "attention_entropy": "diag/attn_entropy/",
            "update_ratio": "diag/update_ratio/"}
FORWARD_ONLY = {"activation_rms", "attention_entropy"}  # step 0 has an evaluation but no step before it


def tiny(*extra: str) -> C.Config:
    return C.load(None, [*TINY, "train.max_steps=12", "eval.every=5", *extra])


def metric_rows(lab, cfg):
    outcome = start_run(cfg, lab)
    assert outcome.status == "finished"
    return RunRecord.open(lab, outcome.run_id).metrics()


def families(row: dict) -> set[str]:
    return {name for name, prefix in FAMILIES.items() if any(k.startswith(prefix) for k in row)}


def test_every_diagnostic_is_in_the_rows_of_the_eval_steps_and_training_is_unchanged(tmp_path, one_thread):
    on = metric_rows(tmp_path / "on", tiny("train.diagnostics=true", "name=on"))
    off = metric_rows(tmp_path / "off", tiny("name=off"))
    assert [r["step"] for r in on if "val_loss" in r] == [0, 5, 10, 12]  # the end's evaluation too
    for row in on:
        expected = (set(FAMILIES) - ({"grad_norms", "gain_grad_norms", "update_ratio"} if row["step"] == 0 else set())
                    if "val_loss" in row else set())
        assert families(row) == expected, row["step"]
    eval_row = next(r for r in on if r["step"] == 10)
    assert {k for k in eval_row if k.startswith("diag/grad_norm/")} == {
        "diag/grad_norm/blocks.0", "diag/grad_norm/blocks.1", "diag/grad_norm/embed", "diag/grad_norm/head",
        "diag/grad_norm/norm_f"}
    assert {k for k in eval_row if k.startswith("diag/update_ratio/")} == {
        "diag/update_ratio/muon_qkv", "diag/update_ratio/muon_matrices", "diag/update_ratio/adamw_embed_head_gains"}
    assert {k for k in eval_row if k.startswith("diag/act_rms/")} == {
        "diag/act_rms/first", "diag/act_rms/mid", "diag/act_rms/last"}
    # The parts' gradient norms add up, in squares, to the run's own grad_norm (both before clipping).
    parts = [v for k, v in eval_row.items() if k.startswith("diag/grad_norm/")]
    assert math.sqrt(sum(v * v for v in parts)) == pytest.approx(eval_row["grad_norm"], rel=1e-4)
    assert not any(families(row) for row in off)
    # Cosmetic, so left out of the config hash: the run computes exactly what it computes without them.
    strip = [{k: v for k, v in r.items() if k.endswith("_loss")} for r in on]
    assert strip == [{k: v for k, v in r.items() if k.endswith("_loss")} for r in off]
    assert C.config_hash(tiny("train.diagnostics=true")) == C.config_hash(tiny())


def test_a_list_selects_only_those_and_an_unknown_name_is_one_sentence(tmp_path, one_thread):
    # Under eval.points (the default spacing) too, the step before each evaluation is the one diagnosed.
    rows = metric_rows(tmp_path, tiny("train.diagnostics=update_ratio,grad_norms", "eval.every=0", "eval.points=4"))
    assert [(r["step"], families(r)) for r in rows if families(r)] == [
        (step, {"grad_norms", "update_ratio"}) for step in (4, 8, 12)]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 4, 8, 12]
    assert C.load(None, ["train.diagnostics=attention_entropy,grad_norms,grad_norms"]).train.diagnostics == [
        "grad_norms", "attention_entropy"]
    result = run_cli("run", "-c", "quickstart", "train.diagnostics=grad_norms,atention_entropy", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'atention_entropy'" in lines[0] and "Did you mean 'attention_entropy'?" in lines[0]
    with pytest.raises(C.ConfigError, match="must be true, false or a list of names"):
        C.from_dict({"train": {"diagnostics": 3}})


def test_gradient_norms_and_update_ratios_equal_torchs_own_at_that_step(tmp_path, monkeypatch, one_thread):
    """The optimizer step is watched (not replaced): each step's per-parameter gradient norms, and the
    weights before and after, computed here with torch's own norms."""
    seen = {}
    real_step = CombinedOptimizer.step

    def watched_step(self):
        params = [p for group in self.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        grads = {id(p): torch.linalg.vector_norm(p.grad).item() for p in params if p.grad is not None}
        real_step(self)
        ratios, olds_in_order = [], iter(before)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                olds = [next(olds_in_order) for _ in group["params"]]
                change = sum(torch.linalg.vector_norm(p.detach() - old) ** 2 for p, old in zip(group["params"], olds))
                ratios.append(math.sqrt(change / sum(torch.linalg.vector_norm(old) ** 2 for old in olds)))
        seen[len(seen) + 1] = (grads, ratios)

    monkeypatch.setattr(CombinedOptimizer, "step", watched_step)
    cfg = tiny("train.diagnostics=true", "optim.grad_clip=0", "model.qk_norm=true")
    outcome = start_run(cfg, tmp_path)
    rows = {r["step"]: r for r in RunRecord.open(tmp_path, outcome.run_id).metrics()}
    order = _optimizer_order(cfg)
    for step in (5, 10, 12):
        grads, ratios = seen[step]
        norms = list(grads.values())  # in the order the optimizer's groups hold the parameters
        by_part = {}
        for name, norm in zip(order, norms):
            by_part.setdefault(diagnostics.part_of(name), []).append(norm)
        for part, part_norms in by_part.items():
            assert rows[step][f"diag/grad_norm/{part}"] == pytest.approx(math.hypot(*part_norms), rel=1e-5)
        gains = [norm for name, norm in zip(order, norms) if "norm" in name.split(".")[-2]]
        gain_rows = [v for k, v in rows[step].items() if k.startswith("diag/gain_grad_norm/")]
        assert math.hypot(*gain_rows) == pytest.approx(math.hypot(*gains), rel=1e-5)
        assert len(gain_rows) == 3  # blocks.0 and blocks.1 (norm1, norm2, q_norm, k_norm each) and norm_f
        assert [rows[step][f"diag/update_ratio/{g}"] for g in ("muon_qkv", "muon_matrices", "adamw_embed_head_gains")] \
            == pytest.approx(ratios, rel=1e-4)


def _optimizer_order(cfg: C.Config) -> list[str]:
    """The parameter names of the tiny GPT in the order its optimizer's groups hold them."""
    from ablab.model.gpt import GPT
    from ablab.model.optim import build_optimizer

    model = GPT(cfg.model, 65, cfg.data.seq_len)
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in build_optimizer(model, cfg.optim, "cpu").param_groups for p in group["params"]]


def test_attention_entropy_is_a_hand_written_softmaxs_and_within_0_and_log_t(one_thread):
    from ablab.model.gpt import GPT
    from ablab.model.optim import build_optimizer

    cfg = C.load(None, ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64"])
    torch.manual_seed(0)
    T = 16
    model = GPT(cfg.model, 40, T)
    with torch.no_grad():  # sharpen the first layer's attention so its entropy is far from uniform's
        model.blocks[0].attn.qkv.weight.mul_(8)
    batch = torch.randint(0, 40, (3, T))
    found = diagnostics.Diagnostics(("attention_entropy",), model, build_optimizer(model, cfg.optim, "cpu")) \
        .forward_pass(batch, lambda: torch.autocast("cpu", enabled=False))
    assert set(found) == {"diag/attn_entropy/layer0", "diag/attn_entropy/layer1"}
    assert all(0 <= v <= math.log(T) for v in found.values())
    with torch.no_grad():  # layer 0 by hand: norm, q and k, rotary, scaled scores, causal softmax
        attn, x = model.blocks[0].attn, model.blocks[0].norm1(model.wte(batch))
        q, k, _ = attn.qkv(x).split(32, dim=2)
        q, k = (t.view(3, T, 2, 16).transpose(1, 2) for t in (q, k))
        cos, sin = model.rope_cos[:T], model.rope_sin[:T]  # each (first half, second half) pair by its angle
        q, k = (torch.cat((t[..., :8] * cos - t[..., 8:] * sin, t[..., :8] * sin + t[..., 8:] * cos), -1) for t in (q, k))
        scores = (q @ k.transpose(-2, -1)) / 4.0
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        p = torch.softmax(scores, dim=-1)
        by_hand = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1).mean().item()
    assert found["diag/attn_entropy/layer0"] == pytest.approx(by_hand, rel=1e-5)
    uniform = sum(math.log(t) for t in range(1, T + 1)) / T  # what an unsharpened layer is close to
    assert by_hand < 0.9 * uniform
    # The pass leaves the model on SDPA and in the mode it found it in.
    assert model.training and not any(block.attn.keep_entropy for block in model.blocks)


def test_a_study_sheet_with_diagnostics_has_one_figure_per_diagnostic(tmp_path, one_thread):
    cfg = C.load(None, [*TINY, "train.max_steps=10", "eval.every=5", "train.diagnostics=true"])
    baselines.create(tmp_path, baselines.Baseline("diag", "2026-12-01", cfg, [0]))
    path = write_study(tmp_path, "diag", '[design.arms.fast]\n"optim.lr" = 0.04', seeds="[0]", budget=10,
                       axis="steps", baseline="diag@2026-12-01")
    plan = make_plan(tmp_path, path, probe=False)
    assert run_study(tmp_path, plan, say=lambda s: None) == "finished"
    sheet = write_sheet(tmp_path, "diag").read_text(encoding="utf-8")
    for kind in ("grad_norm", "gain_grad_norm", "update_ratio", "act_rms", "attn_entropy"):
        assert f"![diag-diag-{kind}](diag-diag-{kind}.png)" in sheet, kind
        assert (tmp_path / "reports" / "studies" / f"diag-diag-{kind}.png").stat().st_size > 1000
    from ablab.report.diagnostic_figures import build_diagnostic, seed_means
    with Ledger(tmp_path) as ledger:
        cells = {cell: ledger.run(run_id) for cell, run_id in ledger.study_runs("diag").items()}
        rows = {run.id: ledger.metrics(run.id) for run in cells.values()}
    per_arm = {arm: seed_means([rows[run.id] for (a, _), run in cells.items() if a == arm], "grad_norm")
               for arm in ("baseline", "fast")}
    figure = build_diagnostic(per_arm, "grad_norm")
    panels = figure.axes
    assert [ax.get_title() for ax in panels] == ["baseline", "fast"]  # arms side by side
    assert [line.get_label() for line in panels[0].lines] == ["embed", "blocks.0", "blocks.1", "norm_f", "head"]
    assert list(panels[1].lines[1].get_xdata()) == [5.0, 10.0]


def test_no_sheet_figure_without_diagnostic_rows(tmp_path):
    from ablab.report.diagnostic_figures import diagnostic_figures

    class Run:
        id = "r1"

    rows = {"r1": [{"step": 0, "val_loss": 4.0}, {"step": 5, "val_loss": 3.0, "train_loss": 3.1}]}
    assert diagnostic_figures(rows, {("baseline", 0): Run()}, ["baseline"], tmp_path, "s") == []
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install 'ablab[tensorboard]')")
def test_the_mirrors_get_the_diagnostics(tmp_path, one_thread):
    """Mirrors export every number of a metric row (ablab.train.mirrors), so they get the diagnostics;
    TensorBoard stands for all three here (MLflow's import alone takes seconds)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny("train.diagnostics=attention_entropy,update_ratio", "train.max_steps=5", "name=mirrored")
    outcome = start_run(cfg, tmp_path, log_to=["tensorboard"])
    rows = Ledger(tmp_path).metrics(outcome.run_id)
    events = EventAccumulator(str(tmp_path / ".ablab" / "tensorboard" / outcome.run_id))
    events.Reload()
    for key, steps in (("diag/attn_entropy/layer1", [0, 5]), ("diag/update_ratio/muon_qkv", [5])):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [
            (r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows if key in r]
        assert [e.step for e in events.Scalars(key)] == steps
