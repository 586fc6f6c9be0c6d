import math

import pytest
import torch

from ablab.config import ModelConfig, OptimConfig, ScheduleConfig
from ablab.model.gpt import GPT
from ablab.model.optim import NS_COEFFS, build_optimizer, lr_factor, orthogonalize, set_lr, split_parameters


def plain_newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz written the straightforward way: one fp32 matrix, separate products and sums,
    no fused kernels, no batching. The reference the optimised orthogonalize must equal."""
    a, b, c = NS_COEFFS
    X = G.double().float()  # a fresh fp32 copy
    if X.size(0) > X.size(1):
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if G.size(0) > G.size(1) else X


# The optimised path may differ from the plain one by fp32 rounding only. The updates' entries are
# ~1/sqrt(cols) in size (0.03 to 0.3 here); 1e-5 absolute is ~100 fp32 ulps of them, while a real change
# to the iteration (a coefficient, a step, the orientation) moves entries by 1e-3 or more.
NS_TOLERANCE = dict(atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", [(32, 32), (48, 16), (16, 48), (3, 24, 8), (2, 2, 8, 24)])
def test_fused_newton_schulz_equals_the_plain_per_matrix_form(shape):
    torch.manual_seed(0)
    G = torch.randn(*shape) * 3
    fast = orthogonalize(G, steps=5)
    assert fast.shape == G.shape and fast.dtype == torch.float32
    plain = torch.stack([plain_newton_schulz(m) for m in G.reshape(-1, *shape[-2:])]).view(shape)
    assert torch.allclose(fast, plain, **NS_TOLERANCE), (fast - plain).abs().max()
    # The tolerance is tight enough to catch a real change: one step fewer is far outside it.
    fewer = torch.stack([plain_newton_schulz(m, steps=4) for m in G.reshape(-1, *shape[-2:])]).view(shape)
    assert not torch.allclose(fast, fewer, **NS_TOLERANCE)


def test_newton_schulz_orthogonalises_any_shape():
    torch.manual_seed(0)
    for shape in [(64, 32), (32, 64), (3, 16, 16)]:
        G = torch.randn(*shape) * 5
        S = torch.linalg.svdvals(orthogonalize(G, steps=5))
        # The quintic iteration is tuned for speed: singular values land near 1, not exactly on it.
        assert S.min() > 0.5 and S.max() < 1.3, (shape, S.min(), S.max())


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64), 16, 32)


def fixed_batch():
    g = torch.Generator().manual_seed(1)
    pattern = torch.randint(0, 16, (8,), generator=g)
    x = pattern.repeat(4, 5)[:, :33]  # a periodic sequence a model can learn to continue
    return x[:, :-1], x[:, 1:]


def train(name: str, steps: int = 40) -> tuple[float, float]:
    model = tiny_model()
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.02 if name == "muon" else 3e-3), "cpu")
    x, y = fixed_batch()
    first = None
    for _ in range(steps):
        loss = model(x, y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return first, model(x, y).item()


def test_muon_lowers_loss_on_a_small_problem():
    first, last = train("muon")
    assert first == pytest.approx(math.log(16), rel=0.1)
    assert last < 0.2 * first


def per_matrix_muon_step(model, lr: float, momentum: float, buffers: dict) -> None:
    """One Muon step written the plain way, one Newton-Schulz chain per matrix (and per q, k, v
    block): the reference the batched step must equal."""
    qkv, matrices, _ = split_parameters(model)
    with torch.no_grad():
        for splits, params in ((3, qkv), (1, matrices)):
            for p in params:
                buf = buffers.setdefault(id(p), torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - momentum)
                g = p.grad.lerp(buf, momentum)
                blocks = g.view(splits, g.size(0) // splits, g.size(1))
                update = torch.stack([plain_newton_schulz(b, 5) for b in blocks]).view_as(p)
                p.add_(update, alpha=-lr * max(1.0, blocks.size(1) / blocks.size(2)) ** 0.5)


@pytest.mark.parametrize("batch_shapes", [True, False])
def test_muon_steps_equal_the_plain_per_matrix_steps(batch_shapes):
    # True: the CUDA path (one batched chain per shape), here on the CPU; False: the CPU's chain per matrix.
    batched, reference = tiny_model(), tiny_model()
    muon = build_optimizer(batched, OptimConfig(name="muon", lr=0.02), "cpu").optimizers["muon"]
    muon.batched = batch_shapes
    x, y = fixed_batch()
    buffers: dict = {}
    for _ in range(3):
        for model in (batched, reference):
            model.zero_grad()
            model(x, y).backward()
        muon.step()
        per_matrix_muon_step(reference, 0.02, 0.95, buffers)
    qkv, matrices, _ = split_parameters(batched)
    assert len(matrices) > 2  # several same-shape matrices really went through one batched call
    for (name, a), b in zip(batched.named_parameters(), reference.parameters()):
        if a.ndim == 2 and "blocks" in name:
            assert torch.allclose(a, b, **NS_TOLERANCE), name


def test_muon_groups_hold_the_hidden_matrices_and_adamw_the_rest():
    model = tiny_model()
    opt = build_optimizer(model, OptimConfig(name="muon"), "cpu")
    muon = {id(p) for g in opt.optimizers["muon"].param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.optimizers["adamw"].param_groups for p in g["params"]}
    assert not muon & adamw and len(muon | adamw) == len(list(model.parameters()))
    assert id(model.wte.weight) in adamw and id(model.head.weight) in adamw
    assert id(model.blocks[0].attn.qkv.weight) in muon and id(model.blocks[1].mlp.down.weight) in muon
    assert all(p.ndim == 2 for g in opt.optimizers["muon"].param_groups for p in g["params"])


def test_one_state_dict_restores_the_combined_optimizer_exactly():
    x, y = fixed_batch()
    runs = []
    for reload in (False, True):
        model = tiny_model()
        opt = build_optimizer(model, OptimConfig(), "cpu")
        for step in range(6):
            if reload and step == 3:
                state = opt.state_dict()
                weights = {k: v.clone() for k, v in model.state_dict().items()}
                model = tiny_model(seed=1)
                model.load_state_dict(weights)
                opt = build_optimizer(model, OptimConfig(), "cpu")
                opt.load_state_dict(state)
            model(x, y).backward()
            opt.step()
            opt.zero_grad()
        runs.append(model(x, y).item())
    assert runs[0] == runs[1]


def factors(cfg: ScheduleConfig, steps: int) -> list[float]:
    """The lr factor at each step of a `steps`-step budget, as the loop asks for it (progress before the step)."""
    return [lr_factor(cfg, step, step / steps) for step in range(steps)]


@pytest.mark.parametrize("name", ["cosine", "linear", "wsd", "constant"])
def test_warmup_reaches_the_peak_and_the_decay_runs_over_the_rest(name):
    # Warmup 50 of 100 steps: the case, where the old schedule peaked at 0.55 of optim.lr.
    cfg = ScheduleConfig(name=name, warmup_steps=50, min_lr_ratio=0.1, decay_fraction=0.2)
    lrs = factors(cfg, 100)
    assert lrs[:50] == pytest.approx([(s + 1) / 50 for s in range(50)])  # linear from 0 ...
    assert lrs[49] == 1.0 and max(lrs) == 1.0  # ... to exactly optim.lr at the end of warmup
    assert all(a >= b for a, b in zip(lrs[49:], lrs[50:]))  # then never rises again
    final = lr_factor(cfg, 100, 1.0)
    assert final == pytest.approx(1.0 if name == "constant" else 0.1)
    if name != "constant":
        assert lrs[-1] < 0.2 and lrs[50] == pytest.approx(1.0)  # the decay spans the rest of the budget


def test_decay_shapes_are_measured_from_the_end_of_warmup():
    cos = ScheduleConfig(name="cosine", warmup_steps=50, min_lr_ratio=0.1)
    assert lr_factor(cos, 75, 0.75) == pytest.approx(0.55)  # half way through the decay: half way down
    lin = ScheduleConfig(name="linear", warmup_steps=20, min_lr_ratio=0.0)
    assert lr_factor(lin, 60, 0.6) == pytest.approx(0.5)
    # wsd keeps its meaning: the decay is the last decay_fraction of the budget, after warmup or not.
    wsd = ScheduleConfig(name="wsd", warmup_steps=10, min_lr_ratio=0.0, decay_fraction=0.2)
    assert [lr_factor(wsd, s, s / 100) for s in (10, 79, 80, 90)] == pytest.approx([1, 1, 1, 0.5])
    long_warmup = ScheduleConfig(name="wsd", warmup_steps=90, min_lr_ratio=0.0, decay_fraction=0.2)
    assert [lr_factor(long_warmup, s, s / 100) for s in (89, 90, 95)] == pytest.approx([1, 1, 0.5])
    assert lr_factor(ScheduleConfig(name="cosine", warmup_steps=0), 0, 0.0) == 1.0


def test_a_token_budget_gets_the_same_schedule_as_the_equal_step_budget():
    cfg = ScheduleConfig(name="cosine", warmup_steps=30, min_lr_ratio=0.1)
    tokens_per_step, max_tokens = 4096, 4096 * 120
    by_tokens = [lr_factor(cfg, s, s * tokens_per_step / max_tokens) for s in range(120)]
    assert by_tokens == pytest.approx(factors(cfg, 120))


def test_a_seconds_budget_decays_from_the_peak_to_the_floor():
    # Steps that slow down half way: the warmup's share is estimated from the steps so far.
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    seconds = [0.1 if s < 50 else 0.3 for s in range(200)]
    elapsed, lrs, budget = 0.0, [], 40.0
    for step, took in enumerate(seconds):
        lrs.append(lr_factor(cfg, step, elapsed / budget))
        elapsed += took
        if elapsed >= budget:
            break
    assert lrs[9] == 1.0 and max(lrs) == 1.0
    assert all(a >= b - 1e-9 for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] < 0.11


def test_set_lr_scales_every_group_from_its_own_peak():
    opt = build_optimizer(tiny_model(), OptimConfig(lr=0.02, adamw_lr=0.004), "cpu")
    set_lr(opt, 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.002, 0.01, 0.01])
