"""Scaling ladders: the current baseline at several model sizes and training budgets, run like a
study (reused, resumed, linked in the ledger), then fitted, with the law stored under the
baseline's date.

A size is `d_model x n_layers`; heads keep the baseline's head width and the MLP its ratio to
d_model. Budgets are an IsoFLOP grid (each size gets the tokens D = C / 6N that spend compute C)
or plain token counts (every size at every count).

    plan = plan_ladder(lab, "plan@2026-11-21", sizes=[(256, 4), (384, 6)], flops=[1e15, 3e15])
    run_ladder(lab, plan)      # trains what is missing
    fits = fit_ladder(lab, plan)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ablab import config as config_mod
from ablab.config import Config
from ablab.data.prepare import prepare_data
from ablab.errors import UserError
from ablab.executors import base as executors
from ablab.model.gpt import GPT
from ablab.store.ledger import Ledger
from ablab.study import baselines
from ablab.study.runner import train_cells
from ablab.study.spec import Arm

MIN_STEPS = 10  # a rung shorter than this learns too little to place on a curve


@dataclass
class Rung:
    size: str  # e.g. "d256L4"
    changes: dict[str, Any]  # model shape and token budget against the baseline
    config: Config
    non_embedding_params: int
    tokens: int
    flops: float | None  # the IsoFLOP budget it belongs to

    @property
    def name(self) -> str:
        return f"{self.size}@{self.tokens:.3g}"


@dataclass
class Ladder:
    baseline: baselines.Baseline
    rungs: list[Rung]
    seeds: list[int]
    skipped: list[str] = field(default_factory=list)  # (size, budget) pairs left out, with why

    @property
    def study(self) -> str:
        return f"ladder-{self.baseline.ref}"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'128x4,192x6' -> [(128, 4), (192, 6)]."""
    try:
        sizes = [tuple(int(v) for v in part.lower().split("x")) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 or min(s) <= 0 for s in sizes):
        raise UserError(f"--sizes {text!r} is not a list of d_model x n_layers; write e.g. --sizes 64x2,128x4,192x6.")
    return sizes  # type: ignore[return-value]


def shape_changes(baseline: Config, d_model: int, n_layers: int) -> dict[str, Any]:
    head_dim = baseline.model.d_model // baseline.model.n_heads
    if d_model % head_dim:
        raise UserError(f"d_model {d_model} is not a multiple of the baseline's head width {head_dim}; "
                        f"pick sizes whose d_model divides by {head_dim}.")
    ff_ratio = baseline.model.d_ff / baseline.model.d_model
    return {"model.d_model": d_model, "model.n_layers": n_layers, "model.n_heads": d_model // head_dim,
            "model.d_ff": int(round(d_model * ff_ratio))}


def non_embedding_params(cfg: Config, vocab_size: int) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return GPT(cfg.model, vocab_size, cfg.data.seq_len).n_params(non_embedding=True)


def plan_ladder(lab: Path, ref: str, sizes: list[tuple[int, int]], flops: list[float] | None = None,
                tokens: list[int] | None = None, seeds: list[int] | None = None) -> Ladder:
    if bool(flops) == bool(tokens):
        raise UserError("Give the ladder's budgets as --flops (an IsoFLOP grid) or --tokens, one of the two.")
    baseline = baselines.load(lab, ref)
    vocab = prepare_data(baseline.config.data).tokenizer.vocab_size
    per_step = baseline.config.tokens_per_step
    ladder = Ladder(baseline, [], seeds or baseline.seeds[:1])
    for d_model, n_layers in sizes:
        shape = shape_changes(baseline.config, d_model, n_layers)
        n = non_embedding_params(config_mod.replace(baseline.config, shape), vocab)
        budgets = [(c, c / (6 * n)) for c in flops] if flops else [(None, float(t)) for t in tokens or []]
        for c, wanted in budgets:
            steps = int(round(wanted / per_step))
            label = f"d{d_model}L{n_layers} at {'%.3g FLOPs' % c if c else '%d tokens' % wanted}"
            if steps < MIN_STEPS:
                ladder.skipped.append(f"{label}: {steps} steps, fewer than {MIN_STEPS}")
                continue
            changes = {**shape, "train.max_tokens": steps * per_step, "train.max_steps": 0,
                       "train.max_seconds": 0.0, "schedule.warmup_steps": min(baseline.config.schedule.warmup_steps,
                                                                               max(steps // 10, 1))}
            cfg = config_mod.replace(baseline.config, changes)
            ladder.rungs.append(Rung(f"d{d_model}L{n_layers}", changes, cfg, n, steps * per_step, c))
    if not ladder.rungs:
        raise UserError("Every rung of this ladder would train fewer than "
                        f"{MIN_STEPS} steps; raise the --flops or --tokens budgets.")
    return ladder


def run_ladder(lab: Path, ladder: Ladder, progress_for: Callable | None = None, say: Callable = print,
               executor: str | executors.Executor = "inline", on_cell: Callable | None = None) -> str:
    """Train every (seed, rung) not finished yet on `executor`, as a study trains its cells (with
    run_study's `progress_for` and `on_cell`); 'finished', 'failed' (some run raised; the others
    went on) or 'interrupted'."""
    runner = executor if isinstance(executor, executors.Executor) else executors.get(executor, lab=lab)
    with Ledger(lab) as ledger:
        ledger.save_study(ladder.study, ladder.baseline.ref, {
            "kind": "ladder", "name": ladder.study, "seeds": ladder.seeds, "metric": "val_loss", "read_at": "final",
            "arms": {r.name: r.changes for r in ladder.rungs}, "skipped": ladder.skipped})
        rungs = [Arm(rung.name, rung.changes, rung.config) for rung in ladder.rungs]
        states = train_cells(lab, ledger, ladder.study, ladder.seeds, rungs, runner, progress_for, say, on_cell)
    return next((state for state in ("interrupted", "failed") if state in states), "finished")
