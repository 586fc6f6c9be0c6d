"""ablab.model.kernels: the eager rotation gives the rotary formula's results and gradients, and the
model trains the same through it."""

import pytest
import torch

from ablab.config import ModelConfig
from ablab.model import gpt, kernels


def formula(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def tables(T, half, dtype):
    theta = torch.rand(T, 1, half, dtype=dtype) * 6.3
    return theta.cos(), theta.sin()


@pytest.mark.parametrize("per_token", [False, True])
def test_rotation_backward_is_the_exact_gradient(per_token):
    torch.manual_seed(0)
    cos, sin = tables(5, 3, torch.float64)
    if per_token:  # (B, T, 1, hs/2), as packed evaluation gathers them
        cos, sin = cos.expand(2, 5, 1, 3).clone(), sin.expand(2, 5, 1, 3).clone()
    x = torch.randn(2, 5, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: kernels.rotate(t, cos, sin), (x,))


def test_rotation_equals_the_formula_on_a_strided_input():
    torch.manual_seed(0)
    cos, sin = tables(7, 4, torch.float32)
    qkv = torch.randn(3, 7, 3, 2, 8, requires_grad=True)
    q = qkv.unbind(2)[0]  # (B, T, nh, hs), not contiguous, as Attention hands it over
    assert not q.is_contiguous()
    grad = torch.randn(3, 7, 2, 8)
    ours = kernels.rotate(q, cos, sin)
    (ours_grad,) = torch.autograd.grad(ours, qkv, grad)
    theirs = formula(q, cos, sin)
    (theirs_grad,) = torch.autograd.grad(theirs, qkv, grad)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=1e-6)
    assert ours.grad_fn.name() == "_RotationBackward"  # the fast path, not the formula


@pytest.mark.parametrize("options", [{}, {"qk_norm": True}])
def test_the_model_gives_the_same_loss_and_gradients_through_the_formula(options, monkeypatch, one_thread):
    torch.set_num_threads(1)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, **options)
    torch.manual_seed(0)
    model = gpt.GPT(cfg, 50, 16)
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))

    def loss_and_grads():
        model.zero_grad()
        loss = model(idx, targets)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    fast = loss_and_grads()
    monkeypatch.setattr(gpt, "rotate", formula)
    plain = loss_and_grads()
    torch.testing.assert_close(fast[0], plain[0], rtol=0, atol=1e-6)
    for a, b in zip(fast[1], plain[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
