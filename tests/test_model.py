import math

import pytest
import torch

from ablab.config import ModelConfig
from ablab.model.gpt import GPT

V, T = 50, 16


def expected_params(cfg: ModelConfig, vocab: int, seq_len: int) -> int:
    """The parameter count written out from the architecture, independently of the module tree."""
    d, ff, L = cfg.d_model, cfg.d_ff, cfg.n_layers
    norm = 0 if cfg.norm == "none" else d  # one gain vector (no biases)
    attn = 3 * d * d + d * d + (2 * (d // cfg.n_heads) if cfg.qk_norm else 0)
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * ff
    block = attn + mlp + 2 * norm
    final_norm = norm if cfg.norm_position == "pre" else 0
    embeddings = vocab * d + (seq_len * d if cfg.positions == "learned" else 0)
    head = 0 if cfg.tie_embeddings else vocab * d
    return L * block + final_norm + embeddings + head


VARIANTS = [
    {},
    {"norm": "layernorm", "mlp": "gelu", "positions": "learned"},
    {"norm": "none", "positions": "none", "mlp": "relu2"},
    {"mlp": "silu"},
    {"norm_position": "post", "qk_norm": True, "tie_embeddings": True},
    {"prores_steps": 10, "layernorm_scaling": True, "activation_checkpointing": True, "dropout": 0.1},
]


@pytest.mark.parametrize("options", VARIANTS)
def test_parameter_counts_match_the_formula(options):
    cfg = ModelConfig(d_model=32, n_layers=3, n_heads=4, d_ff=64, **options)
    model = GPT(cfg, V, T)
    assert model.n_params() == expected_params(cfg, V, T)
    embedding = V * 32 + (T * 32 if cfg.positions == "learned" else 0)
    assert model.n_params(non_embedding=True) == expected_params(cfg, V, T) - embedding


@pytest.mark.parametrize("options", VARIANTS)
def test_every_variant_trains_a_step_and_is_causal(options):
    torch.manual_seed(0)
    model = GPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, **options), V, T).eval()
    x = torch.randint(0, V, (2, T))
    logits = model(x)
    assert logits.shape == (2, T, V)
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    assert torch.allclose(model(changed)[:, :-1], logits[:, :-1], atol=1e-6), "future token leaked"
    model.train()
    loss = model(x, x, step=3)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_flops_per_token_is_6n_plus_attention_term():
    cfg = ModelConfig(d_model=32, n_layers=3, n_heads=4, d_ff=64)
    model = GPT(cfg, V, T)
    assert model.flops_per_token() == 6 * model.n_params(non_embedding=True) + 12 * 3 * 32 * T
    tied = GPT(ModelConfig(d_model=32, n_layers=3, n_heads=4, d_ff=64, tie_embeddings=True), V, T)
    assert tied.flops_per_token() == model.flops_per_token()  # the head matmul costs the same


def test_prores_scales_follow_the_schedule():
    model = GPT(ModelConfig(d_model=16, n_layers=3, n_heads=2, d_ff=32, prores_steps=10), V, T)
    assert model.residual_scales(0) == [0.0, 0.0, 0.0]
    assert model.residual_scales(10) == pytest.approx([1.0, 0.5, 1 / 3])
    assert model.residual_scales(30) == [1.0, 1.0, 1.0]
    assert model.residual_scales(None) == [1.0, 1.0, 1.0]
    torch.manual_seed(0)
    x = torch.randint(0, V, (1, T))
    # With every residual branch scaled to zero, the output is the embedding through norm and head.
    expected = model.head(model.norm_f(model.wte(x)))
    assert torch.allclose(model(x, step=0), expected, atol=1e-6)


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = GPT(ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, activation_checkpointing=ckpt), V, T)
        x = torch.randint(0, V, (2, T))
        model(x, x).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_residual_projections_use_the_depth_scaled_init():
    torch.manual_seed(0)
    model = GPT(ModelConfig(d_model=256, n_layers=8, n_heads=4, d_ff=512), V, T)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
