"""Training diagnostics (`train.diagnostics`): what the inside of a run looked like at each evaluation.

At every step that ends with a validation evaluation (eval.every, or eval.points, and the end) the run's
metric row gets, for the diagnostics chosen:
- grad_norms: `diag/grad_norm/<part>`, the L2 norm of the gradients of each block (`blocks.0`, ...),
  the embeddings (`embed`), an untied head (`head`) and the final norm (`norm_f`), read after the
  backward pass and before clipping, as the run's own `grad_norm` is (the parts' norms add up, in
  squares, to it);
- gain_grad_norms: `diag/gain_grad_norm/<part>`, the same for the norm gains alone (RMSNorm /
  LayerNorm weights, QK-norm's included), per block and `norm_f`;
- update_ratio: `diag/update_ratio/<group>`, ||w_after - w_before|| / ||w_before|| of that step's
  optimizer update, per parameter group (`muon_qkv`, `muon_matrices`, `adamw_embed_head_gains`, ...);
- activation_rms: `diag/act_rms/first|mid|last`, the RMS of the first, middle and last block's output;
- attention_entropy: `diag/attn_entropy/layer<i>`, each layer's attention entropy in nats per query.
The last two come from one extra forward pass over the first validation batch, without gradients.

Why it stays cheap: the gradients are read where the step already holds them (no extra backward), the
weights are copied only at those steps, and the training step never leaves SDPA (only the diagnostic
pass builds the T x T attention probabilities, one layer at a time). The config key is cosmetic:
nothing here changes what the run computes (tests/test_diagnostics.py checks the losses bitwise).
"""

from __future__ import annotations

from typing import Callable, ContextManager

import torch
from torch import nn

from ablab.config import Config, canonical_diagnostics
from ablab.config_checks import DIAGNOSTICS
from ablab.model.gpt import GPT
from ablab.model.optim import CombinedOptimizer, split_parameters

PREFIX = "diag/"
# The diagnostic pass's attention probabilities are (rows, heads, T, T) floats, one layer at a time:
# it takes as many of the batch's rows as fit this (at least one).
ENTROPY_BYTES = 64 << 20


def chosen(cfg: Config) -> tuple[str, ...]:
    """The diagnostics train.diagnostics turns on, in DIAGNOSTICS order; () when off."""
    setting = canonical_diagnostics(cfg.train.diagnostics)
    return DIAGNOSTICS if setting is True else tuple(setting or ())


def part_of(name: str) -> str:
    """The part of a GPT a parameter belongs to, by its name: `blocks.3`, `embed`, `head` or `norm_f`."""
    if name.startswith("blocks."):
        return ".".join(name.split(".")[:2])
    if name.startswith(("wte.", "wpe.")):
        return "embed"
    return name.split(".")[0]


class Diagnostics:
    """The chosen diagnostics of one model and its optimizer. The loop calls `read_gradients` and
    `read_update` around the optimizer step of a step that ends at an evaluation, and `row` when it
    writes that evaluation's metric row."""

    def __init__(self, names: tuple[str, ...], model: GPT, optimizer: CombinedOptimizer):
        self.names, self.model = set(names), model
        named = list(model.named_parameters())  # a tied head is the embedding, listed once
        self.params = [p for _, p in named]
        self.parts = [part_of(name) for name, _ in named]
        gains = {id(m.weight) for m in model.modules()
                 if isinstance(m, (nn.RMSNorm, nn.LayerNorm)) and m.weight is not None}
        self.gain_index = [i for i, p in enumerate(self.params) if id(p) in gains]
        self.groups = _labelled_groups(model, optimizer)
        self.pending: dict = {}  # what the diagnosed step left: {"step": n, metric key: value, ...}
        self.before: list[torch.Tensor] = []

    def read_gradients(self, step: int) -> None:
        """Before clipping and the optimizer step that ends at `step`: the gradient norms, and a copy
        of the weights for update_ratio."""
        self.pending = {"step": step}
        if self.names & {"grad_norms", "gain_grad_norms"}:
            squares = torch.stack([p.grad.detach().float().square().sum() if p.grad is not None
                                   else torch.zeros((), device=p.device) for p in self.params]).tolist()
            if "grad_norms" in self.names:
                self.pending |= _by_part("grad_norm", self.parts, squares)
            if "gain_grad_norms" in self.names and self.gain_index:
                self.pending |= _by_part("gain_grad_norm", [self.parts[i] for i in self.gain_index],
                                         [squares[i] for i in self.gain_index])
        if "update_ratio" in self.names:
            self.before = [p.detach().clone() for _, params in self.groups for p in params]

    def read_update(self, step: int) -> None:
        """After the optimizer step that ends at `step`: each group's update against its weights."""
        if "update_ratio" not in self.names or self.pending.get("step") != step or not self.before:
            return
        before, sums = iter(self.before), []
        for _, params in self.groups:
            pairs = [(p.detach().float(), next(before).float()) for p in params]
            sums.append(torch.stack((sum((new - old).square().sum() for new, old in pairs),
                                     sum(old.square().sum() for _, old in pairs))))
        for (label, _), (change, weight) in zip(self.groups, torch.stack(sums).tolist()):
            self.pending[f"{PREFIX}update_ratio/{label}"] = (change / weight) ** 0.5 if weight > 0 else 0.0
        self.before = []

    def row(self, step: int, batch: torch.Tensor, autocast: Callable[[], ContextManager]) -> dict:
        """The diagnostics of the evaluation at `step`: what the step's gradients and update left
        (when that step was diagnosed), then the activation and attention pass over `batch` (B, T)."""
        found = {k: v for k, v in self.pending.items() if k != "step"} if self.pending.get("step") == step else {}
        self.pending, self.before = {}, []
        if self.names & {"activation_rms", "attention_entropy"}:
            found |= self.forward_pass(batch, autocast)
        return found

    @torch.no_grad()
    def forward_pass(self, batch: torch.Tensor, autocast: Callable[[], ContextManager]) -> dict:
        """Activation RMS of the first, middle and last block and each layer's attention entropy, from one
        forward pass in eval mode (no dropout) over `batch`; the model is left as it was."""
        blocks, found = self.model.blocks, {}
        if "attention_entropy" in self.names:
            heads = blocks[0].attn.n_heads
            batch = batch[:max(1, ENTROPY_BYTES // (heads * batch.size(1) ** 2 * 4))]
        watched = {"first": blocks[0], "mid": blocks[len(blocks) // 2], "last": blocks[-1]}
        hooks = []
        if "activation_rms" in self.names:
            def keep(where: str) -> Callable:
                def hook(module, inputs, output):
                    found[f"{PREFIX}act_rms/{where}"] = output.detach().float().square().mean().sqrt()
                return hook
            hooks = [block.register_forward_hook(keep(where)) for where, block in watched.items()]
        entropy = "attention_entropy" in self.names
        was_training = self.model.training
        self.model.eval()
        try:
            for block in blocks:
                block.attn.keep_entropy = entropy
            with autocast():
                self.model.hidden_states(batch.to(self.model.wte.weight.device))
            if entropy:
                found |= {f"{PREFIX}attn_entropy/layer{i}": block.attn.entropy for i, block in enumerate(blocks)}
        finally:
            for block in blocks:
                block.attn.keep_entropy, block.attn.entropy = False, None
            for hook in hooks:
                hook.remove()
            self.model.train(was_training)
        keys = list(found)
        values = torch.stack([found[k].float() for k in keys]).tolist() if keys else []
        return dict(zip(keys, values))


def _by_part(kind: str, parts: list[str], squares: list[float]) -> dict[str, float]:
    """{diag/<kind>/<part>: the L2 norm over the part's parameters} from each parameter's squared norm."""
    totals: dict[str, float] = {}
    for part, square in zip(parts, squares):
        totals[part] = totals.get(part, 0.0) + square
    return {f"{PREFIX}{kind}/{part}": total ** 0.5 for part, total in totals.items()}


def _labelled_groups(model: GPT, optimizer: CombinedOptimizer) -> list[tuple[str, list[torch.Tensor]]]:
    """(label, parameters) per optimizer parameter group: the optimizer's name and what the group holds
    (qkv, the other hidden matrices, or embeddings, head and gains), e.g. muon_qkv, adamw_embed_head_gains."""
    qkv, matrices, _ = split_parameters(model)
    qkv_ids, hidden_ids = {id(p) for p in qkv}, {id(p) for p in qkv + matrices}
    labelled: list[tuple[str, list[torch.Tensor]]] = []
    for name, opt in optimizer.optimizers.items():
        for group in opt.param_groups:
            ids = {id(p) for p in group["params"]}
            held = "qkv" if ids <= qkv_ids else "matrices" if ids <= hidden_ids else "embed_head_gains"
            label = f"{name}_{held}"
            if any(label == other for other, _ in labelled):  # two groups of one kind keep apart
                label = f"{label}_{len(labelled)}"
            labelled.append((label, list(group["params"])))
    return labelled


def diagnosed_next(training) -> bool:
    """Whether the step `training` is about to take ends at an evaluation (eval_due's rule, or the end
    of the budget, whose evaluation is finish's), asked before the step so that its gradients and
    update can be read. The loop's own rules answer, on its state advanced by one step and put back
    (a seconds budget assumes the step takes the run's mean step time so far)."""
    loop, cfg = training.loop, training.cfg
    saved = loop.step, loop.tokens_seen, loop.train_seconds
    loop.train_seconds += loop.train_seconds / loop.step if loop.step else 0.0
    loop.step += 1
    loop.tokens_seen += cfg.tokens_per_step
    try:
        if training.stop_reason() is not None:
            return True
        if cfg.eval.every:
            return loop.step % cfg.eval.every == 0
        return training._eval_mark() > training.eval_mark
    finally:
        loop.step, loop.tokens_seen, loop.train_seconds = saved
