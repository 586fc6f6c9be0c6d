import math

import pytest
import torch

from ablab.config import ModelConfig, OptimConfig, ScheduleConfig
from ablab.model.gpt import GPT
from ablab.model.optim import build_optimizer, lr_factor, orthogonalize, set_lr


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


def test_schedules_have_their_shapes():
    cos = ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cos, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(cos, 9, 0.01) == pytest.approx(1.0, abs=1e-3)
    assert lr_factor(cos, 500, 0.5) == pytest.approx(0.55)
    assert lr_factor(cos, 999, 1.0) == pytest.approx(0.1)
    lin = ScheduleConfig(name="linear", warmup_steps=0, min_lr_ratio=0.0)
    assert [lr_factor(lin, 0, p) for p in (0, 0.25, 1)] == pytest.approx([1, 0.75, 0])
    wsd = ScheduleConfig(name="wsd", warmup_steps=0, min_lr_ratio=0.0, decay_fraction=0.2)
    assert [lr_factor(wsd, 0, p) for p in (0.1, 0.79, 0.9, 1.0)] == pytest.approx([1, 1, 0.5, 0])
    const = ScheduleConfig(name="constant", warmup_steps=4)
    assert [lr_factor(const, s, 0.9) for s in (0, 3, 100)] == pytest.approx([0.25, 1, 1])


def test_set_lr_scales_every_group_from_its_own_peak():
    opt = build_optimizer(tiny_model(), OptimConfig(lr=0.02, adamw_lr=0.004), "cpu")
    set_lr(opt, 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.002, 0.01, 0.01])
