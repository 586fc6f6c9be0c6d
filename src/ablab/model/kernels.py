"""Faster eager paths for the two elementwise parts of ablab's default architecture, same arithmetic.

Run eagerly, RMSNorm and rotary positions cost more than their arithmetic: PyTorch builds RMSNorm's
backward from about ten elementwise passes on a CPU, and autograd keeps and replays the six ops of a
rotation. On the research plan's small model (one thread, 2,048 tokens) they took 4.3 ms and 3.1 ms
of each forward and backward where LayerNorm takes 0.9 ms (benchmarks/throughput.py measures the whole
step). Here:
- RMSNorm on a CPU in fp32 runs ATen's fused forward and a backward of seven passes.
- A rotation is one autograd node whose backward is the inverse rotation (by -theta): it keeps only
  the cos and sin tables, not its input.
Under torch.compile both step aside: the compiler fuses the plain formulas itself, better.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.cache
def _has_fused_cpu_rms_norm() -> bool:
    """Whether this torch has ATen's fused RMSNorm forward on a CPU (2.13 does; its fused backward is
    CUDA-only, hence _CPURMSNorm's own)."""
    try:
        torch.ops.aten._fused_rms_norm(torch.ones(1, 2), [2], torch.ones(2), 1e-6)
    except (AttributeError, NotImplementedError, RuntimeError):
        return False
    return True


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (the same parameters, state dict and results to fp32 rounding), through
    _CPURMSNorm when the input is an fp32 CPU tensor and nothing is being compiled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and self.weight is not None and self.eps is not None and x.dtype == self.weight.dtype == torch.float32
                and not torch.compiler.is_compiling() and _has_fused_cpu_rms_norm()):
            return _CPURMSNorm.apply(x, self.weight, self.eps)
        return super().forward(x)


class _CPURMSNorm(torch.autograd.Function):
    """y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) over the last dimension."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.size(-1)], weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # With xhat = x * rstd and gh = grad * w: dx = rstd * (gh - xhat * mean(gh * xhat)), dw = sum(grad * xhat).
        x, weight, rstd = ctx.saved_tensors
        xhat = x * rstd
        grad_weight = (grad * xhat).flatten(0, -2).sum(0) if ctx.needs_input_grad[1] else None
        grad_hat = grad * weight
        mean = torch.linalg.vecdot(grad_hat, xhat, dim=-1).unsqueeze(-1).div_(x.size(-1))
        return torch.addcmul(grad_hat, xhat, mean, value=-1).mul_(rstd), grad_weight, None


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x rotated pairwise by position: (x1 * cos - x2 * sin, x1 * sin + x2 * cos) for x's (first half,
    second half) of the last dimension; cos and sin broadcast against either half."""
    if torch.compiler.is_compiling():
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return _Rotation.apply(x, cos, sin)


class _Rotation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotated(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors  # a rotation's transpose is the rotation by -theta
        return _rotated(grad, cos, sin, -1.0), None, None


def _rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """The rotation by sign * theta, written straight into a new contiguous tensor: four passes over
    half of x each, where the formula takes six and a concatenation."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    x1, x2 = x.chunk(2, dim=-1)
    out1, out2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=out1).addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=out2).addcmul_(x1, sin, value=sign)
    return out
