"""The overfit sanity check from the experiment-sheet template: train on one fixed batch and expect
the loss to go near zero with no NaN and finite gradients. A model or optimizer that cannot
memorise one batch has a bug, and no study on it means anything."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ablab.config import Config
from ablab.data.prepare import prepare_data
from ablab.data.sampler import BatchSampler
from ablab.errors import UserError
from ablab.model.gpt import GPT
from ablab.model.optim import build_optimizer
from ablab.train import hardware


@dataclass
class PreflightResult:
    steps: int
    batch_size: int
    seq_len: int
    initial_loss: float
    final_loss: float
    max_grad_norm: float
    finite: bool
    target: float

    @property
    def passed(self) -> bool:
        return self.finite and self.final_loss <= self.target


def preflight(cfg: Config, steps: int = 150, batch_size: int = 4, target: float = 0.1) -> PreflightResult:
    """Train `steps` optimizer steps on one batch of `batch_size` training sequences at the
    config's peak learning rates (no schedule); pass when the final loss is at most `target`."""
    if steps < 1 or batch_size < 1:
        raise UserError(f"Preflight needs at least one step on at least one sequence, not {steps} steps of "
                        f"{batch_size}; e.g. --steps 150 --batch-size 4.")
    if not (math.isfinite(target) and target >= 0):
        raise UserError(f"The preflight target is a loss, so a finite number of 0 or more, not {target}; e.g. --target 0.1.")
    device = hardware.pick_device(cfg.train.device)
    data = prepare_data(cfg.data)
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len).to(device)
    optimizer = build_optimizer(model, cfg.optim, device.type)
    x, y = BatchSampler(data.train, cfg.data.seq_len, batch_size, cfg.seed).batch(0)
    x, y = x.to(device), y.to(device)
    losses, max_grad_norm, finite = [], 0.0, True
    for _ in range(steps):
        loss = model(x, y)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf")).item()
        losses.append(loss.item())
        max_grad_norm = max(max_grad_norm, grad_norm)
        if not (math.isfinite(losses[-1]) and math.isfinite(grad_norm)):
            finite = False
            break
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        final = model(x, y).item() if finite else float("nan")
    return PreflightResult(len(losses), batch_size, cfg.data.seq_len, losses[0], final, max_grad_norm, finite, target)
