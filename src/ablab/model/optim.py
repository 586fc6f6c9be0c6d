"""Optimizers and learning-rate schedules.

Muon (momentum orthogonalised by a Newton-Schulz iteration, Nesterov) updates the 2-D hidden
matrices; AdamW updates embeddings, the output head and norm gains. Both live in one
`CombinedOptimizer` with one state dict and per-group learning rates, so checkpoints and schedules
treat them as a single optimizer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ablab.config import OptimConfig, ScheduleConfig

# Quintic Newton-Schulz coefficients chosen (Jordan et al., 2024) to push singular values towards 1
# in few iterations, trading exact convergence for speed.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(G: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximate U V^T of G = U S V^T for a (..., rows, cols) batch of matrices.

    Each iteration is X <- a X + (b A + c A A) X with A = X X^T, as in Jordan et al.'s Muon. It
    runs on the wide orientation (rows <= cols, transposed when needed), so A is the smaller Gram
    matrix: a 1024 x 256 matrix iterates on a 256 x 256 A, not a 1024 x 1024 one. The two updates
    are fused matmul-adds (addmm / baddbmm), which write b A + c A A and a X + B X in one kernel
    each instead of four elementwise passes and their temporaries; the arithmetic is the same up
    to rounding (tests/test_optim.py holds it to the plain form). bf16 on CUDA, as the reference
    implementations run it (the iteration tolerates its rounding); fp32 on a CPU, which has no fast
    bf16 matmul."""
    a, b, c = NS_COEFFS
    X = G.bfloat16() if G.is_cuda else G.float()
    transposed = X.size(-2) > X.size(-1)
    if transposed:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    if X.ndim == 2:
        for _ in range(steps):
            A = X @ X.mT
            B = torch.addmm(A, A, A, beta=b, alpha=c)
            X = torch.addmm(X, B, X, beta=a)
    else:
        batch_shape = X.shape[:-2]
        X = X.reshape(-1, *X.shape[-2:])
        for _ in range(steps):
            A = X @ X.mT
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)
            X = torch.baddbmm(X, B, X, beta=a)
        X = X.view(*batch_shape, *X.shape[-2:])
    if transposed:
        X = X.mT
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weights. A group's `splits` > 1 orthogonalises a fused matrix (e.g. q, k, v
    stacked by rows) as that many separate blocks, as if they were separate parameters.

    The Newton-Schulz work of a step is batched: every block of the same shape in a group goes
    through one chain of batched matmuls (a model's n_layers MLP matrices are one call, not
    n_layers), which is what makes Muon cheap on a GPU, where each small matmul would otherwise be
    its own kernel launch. Each matrix is still orthogonalised on its own (orthogonalize normalises
    and iterates per matrix of the batch), so the update equals the per-matrix one up to rounding.
    `batched` None batches on CUDA only: on a CPU the copy into one batch measured ~5% slower than a
    chain per matrix (small and medium presets, 2 cores)."""

    def __init__(self, params, lr: float, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, weight_decay: float = 0.0, batched: bool | None = None):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        weight_decay=weight_decay, splits=1)
        super().__init__(params, defaults)
        self.batched = batched

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            k = group["splits"]
            by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                blocks = g.view(k, g.size(0) // k, g.size(1))
                by_shape.setdefault((blocks.size(1), blocks.size(2)), []).append((p, blocks))
            for (rows, cols), items in by_shape.items():
                batch = self.batched if self.batched is not None else items[0][1].is_cuda
                if batch and len(items) > 1:
                    updates = orthogonalize(torch.cat([b for _, b in items]), group["ns_steps"]).split(k)
                else:
                    updates = [orthogonalize(blocks, group["ns_steps"]) for _, blocks in items]
                # Scale so the update's RMS does not depend on the matrix's aspect ratio.
                alpha = -group["lr"] * max(1.0, rows / cols) ** 0.5
                for (p, _), update in zip(items, updates):
                    if group["weight_decay"]:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update.view_as(p), alpha=alpha)


class CombinedOptimizer:
    """Several torch optimizers stepped together, exposed as one: param_groups, step, zero_grad,
    and a single state dict keyed by the inner optimizer's name."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def split_parameters(model: nn.Module) -> tuple[list, list, list]:
    """(fused qkv matrices, other hidden 2-D matrices, everything else) of a GPT."""
    qkv, matrices, rest = [], [], []
    hidden = {id(p) for block in model.blocks for p in block.parameters() if p.ndim == 2}
    for name, p in model.named_parameters():
        if id(p) not in hidden:
            rest.append(p)
        elif name.endswith("attn.qkv.weight"):
            qkv.append(p)
        else:
            matrices.append(p)
    return qkv, matrices, rest


def build_optimizer(model: nn.Module, cfg: OptimConfig, device_type: str) -> CombinedOptimizer:
    """Muon + AdamW (cfg.name == 'muon') or AdamW alone, with a `peak_lr` on every group."""
    qkv, matrices, rest = split_parameters(model)
    adam_kwargs = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    # Fused AdamW is the fastest CUDA path. On CPU torch's default (a per-tensor loop) measured
    # faster than foreach: 0.042 s vs 0.056 s per step for the 17M-parameter medium model.
    if device_type == "cuda":
        adam_kwargs["fused"] = True
    optimizers: dict[str, torch.optim.Optimizer] = {}
    if cfg.name == "muon":
        muon_groups = [{"params": ps, "splits": k} for ps, k in ((qkv, 3), (matrices, 1)) if ps]
        optimizers["muon"] = Muon(muon_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                  ns_steps=cfg.ns_steps, weight_decay=cfg.weight_decay)
        optimizers["adamw"] = torch.optim.AdamW(
            [{"params": rest, "weight_decay": 0.0}], lr=cfg.adamw_lr, **adam_kwargs)
    else:
        groups = [{"params": qkv + matrices, "weight_decay": cfg.weight_decay},
                  {"params": rest, "weight_decay": 0.0}]
        optimizers["adamw"] = torch.optim.AdamW(groups, lr=cfg.lr, **adam_kwargs)
    combined = CombinedOptimizer(optimizers)
    for group in combined.param_groups:
        group["peak_lr"] = group["lr"]
    return combined


def lr_factor(cfg: ScheduleConfig, step: int, progress: float) -> float:
    """Multiplier of each group's peak lr at optimizer step `step` (0-based), where `progress` in
    [0, 1] is the fraction of the run's budget (steps, tokens or seconds) used before this step.

    Warmup rises linearly to exactly 1 at step warmup_steps - 1; the decay then runs over the rest
    of the budget, from 1 at the end of warmup to min_lr_ratio at its end, as nanoGPT's schedule
    does (a decay that started at step 0 would cut the peak short: 0.55 with warmup 50 of 100)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p, floor = min(max(progress, 0.0), 1.0), cfg.min_lr_ratio
    # Warmup's share of the budget, as its share of the steps so far: exact for step and token budgets,
    # for a seconds budget an estimate that assumes the warmup's steps took the average step's time.
    warmup_share = p * cfg.warmup_steps / step if step else 0.0
    if cfg.name == "wsd":  # stable at peak, then linear over the last decay_fraction of the budget
        start = max(1 - cfg.decay_fraction, warmup_share)
        return 1 - (1 - floor) * (p - start) / (1 - start) if p > start else 1.0
    done = (p - warmup_share) / (1 - warmup_share) if warmup_share < 1 else 1.0  # of the decay, in [0, 1]
    if cfg.name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))
    if cfg.name == "linear":
        return 1 - (1 - floor) * done
    return 1.0  # constant


def set_lr(optimizer: CombinedOptimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
