"""ablab.model.kernels: the eager RMSNorm and rotation give nn.RMSNorm's and the rotary formula's
results and gradients, and the model trains the same through them."""

import pytest
import torch
import torch.nn.functional as F

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


def test_rmsnorm_backward_is_the_exact_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kernels._CPURMSNorm.apply(a, b, 1e-6), (x, w))


@pytest.mark.parametrize("strided", [False, True])
def test_rmsnorm_equals_torchs_in_fp32(strided):
    if not kernels._has_fused_cpu_rms_norm():
        pytest.skip("this torch has no fused RMSNorm on a CPU; RMSNorm is nn.RMSNorm itself")
    torch.manual_seed(0)
    ours, theirs = kernels.RMSNorm(16, eps=1e-6), torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    base = torch.randn(4, 9, 2, 16, requires_grad=True)
    x = base.unbind(2)[1] if strided else base[:, :, 0].contiguous()
    grad = torch.randn(x.shape)
    y = ours(x)
    assert y.grad_fn.name() == "_CPURMSNormBackward"
    ours_grads = torch.autograd.grad(y, (base, ours.weight), grad)
    theirs_grads = torch.autograd.grad(theirs(x), (base, theirs.weight), grad)
    torch.testing.assert_close(y, F.rms_norm(x, (16,), theirs.weight, 1e-6), rtol=0, atol=2e-6)
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_rmsnorm_leaves_other_dtypes_to_torch():
    norm = kernels.RMSNorm(8).double()
    assert norm(torch.randn(2, 8, dtype=torch.float64, requires_grad=True)).grad_fn.name() != "_CPURMSNormBackward"


@pytest.mark.parametrize("options", [{}, {"qk_norm": True}])
def test_the_model_gives_the_same_loss_and_gradients_without_the_kernels(options, monkeypatch, one_thread):
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
    monkeypatch.setattr(kernels, "_has_fused_cpu_rms_norm", lambda: False)
    plain = loss_and_grads()
    torch.testing.assert_close(fast[0], plain[0], rtol=0, atol=1e-6)
    for a, b in zip(fast[1], plain[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
