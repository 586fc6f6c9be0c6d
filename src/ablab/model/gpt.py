"""A decoder-only transformer: pre-norm RMSNorm, rotary positions, SwiGLU, causal SDPA, no biases.

Every option a research plan ablates is a field of ModelConfig: norm kind and position, positions,
MLP kind, QK-norm, tied embeddings, ProRes residual warmup, LayerNorm scaling, checkpointing.
Single device, no I/O, no logging.

Initialisation: every Linear and Embedding weight ~ N(0, init_std); the two projections that write
into the residual stream (attention output, MLP down) use init_std / sqrt(2 * n_layers), as GPT-2
does, so the residual stream's variance does not grow with depth. Norm gains start at one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ablab.config import ModelConfig
from ablab.model.kernels import rotate


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-6)
    if kind == "layernorm":
        return nn.LayerNorm(dim, bias=False)
    return nn.Identity()


def rotary_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, head_dim // 2) for rotating (first half, second half) pairs."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, nh, hs); cos, sin: (T, 1, hs/2) for the positions of x's T tokens, or (B, T, 1, hs/2)
    return rotate(x, cos.to(x.dtype), sin.to(x.dtype))


class KVCache:
    """The keys and values of every token generated so far, per layer: each new token then costs one
    position of compute instead of a forward pass over the whole sequence. `length` is the number of
    positions held, so the next token's position."""

    def __init__(self, n_layers: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.length = 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's keys and values (B, nh, length + T, hs) with the new ones (B, nh, T, hs) appended."""
        held = self.layers[layer]
        if held is not None:
            k, v = torch.cat((held[0], k), dim=2), torch.cat((held[1], v), dim=2)
        self.layers[layer] = (k, v)
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.rotary = cfg.positions == "rope"
        self.dropout = cfg.dropout
        # Diagnostics only (ablab.train.diagnostics): attend through an explicit (T x T) softmax and keep
        # its mean entropy in `entropy`. Off, the layer stays on SDPA, which never builds that matrix.
        self.keep_entropy = False
        self.entropy: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                mask: torch.Tensor | None = None, cache: tuple[KVCache, int] | None = None) -> torch.Tensor:
        """`cache` = (the cache, this block's index): x holds only the new positions, and attends to
        the cached ones too (a prefill of several new positions needs an empty cache)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # (B, T, nh, hs) each
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:  # before the transpose, where each head's row is contiguous
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        dropout = self.dropout if self.training else 0.0
        causal = True
        if cache is not None:
            past = cache[0].length
            k, v = cache[0].extend(cache[1], k, v)
            causal = past == 0  # one new token after cached ones attends to all of them
        if self.keep_entropy:
            y = self._attend_explicitly(q, k, v, causal, mask)
        elif mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal and T > 1, dropout_p=dropout)
        else:  # (B, 1, T, T) booleans, True where a query may attend
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def _attend_explicitly(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                           mask: torch.Tensor | None) -> torch.Tensor:
        """SDPA's output (without dropout) from the probabilities themselves, whose entropy in nats per
        query, averaged over batch, heads and positions, goes to self.entropy (each query's is in
        [0, log(keys it may see)])."""
        T, S = q.size(-2), k.size(-2)
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.size(-1))  # (B, nh, T, S)
        if mask is None and causal and T > 1:  # query i sees the S - T cached keys and keys up to its own
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(dim=-1)
        self.entropy = -torch.special.xlogy(probs, probs).sum(dim=-1).mean()
        return probs.to(v.dtype) @ v


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.mlp
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False) if cfg.mlp == "swiglu" else None
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            h = F.silu(self.gate(x)) * self.up(x)
        elif self.kind == "gelu":
            h = F.gelu(self.up(x))
        elif self.kind == "silu":  # SwiGLU without the gate, the CS336 ablation
            h = F.silu(self.up(x))
        else:  # relu2: squared ReLU
            h = F.relu(self.up(x)).square()
        return self.down(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.norm1, self.norm2 = make_norm(cfg.norm, cfg.d_model), make_norm(cfg.norm, cfg.d_model)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        # LayerNorm scaling (1/sqrt(l), 1-based l) damps the deeper layers' contributions.
        self.norm_scale = 1.0 / math.sqrt(layer) if cfg.layernorm_scaling else None

    def _scaled_norm(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return norm(x) if self.norm_scale is None else norm(x) * self.norm_scale

    def forward(self, x, cos, sin, alpha: float = 1.0, mask: torch.Tensor | None = None,
                cache: tuple[KVCache, int] | None = None) -> torch.Tensor:
        # alpha is the ProRes residual-branch scale of this layer at this step (1.0 when off);
        # identity scales are skipped rather than multiplied, which costs a pass over the activations.
        def branch(y: torch.Tensor) -> torch.Tensor:
            y = self.drop(y)
            return y if alpha == 1.0 else alpha * y

        if self.pre_norm:
            x = x + branch(self.attn(self._scaled_norm(self.norm1, x), cos, sin, mask, cache))
            return x + branch(self.mlp(self._scaled_norm(self.norm2, x)))
        x = self._scaled_norm(self.norm1, x + branch(self.attn(x, cos, sin, mask, cache)))
        return self._scaled_norm(self.norm2, x + branch(self.mlp(x)))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int):
        super().__init__()
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        self.wte = nn.Embedding(vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(seq_len, cfg.d_model) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(1, cfg.n_layers + 1))
        # A post-norm stack already ends in a norm; a pre-norm stack needs one before the head.
        self.norm_f = make_norm(cfg.norm, cfg.d_model) if cfg.norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.wte.weight
        cos, sin = rotary_tables(seq_len, cfg.d_model // cfg.n_heads, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, std=out_std)
            nn.init.normal_(block.mlp.down.weight, std=out_std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)

    def residual_scales(self, step: int | None) -> list[float]:
        """ProRes: alpha(l, t) = clip(t / (l * T_w), 0, 1) for 1-based layer l; all ones when off."""
        T_w = self.cfg.prores_steps
        if T_w == 0 or step is None:
            return [1.0] * self.cfg.n_layers
        return [min(max(step / (layer * T_w), 0.0), 1.0) for layer in range(1, self.cfg.n_layers + 1)]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, step: int | None = None):
        """Logits (B, T, vocab), or the mean cross-entropy when targets are given. `step` drives ProRes."""
        logits = self.head(self.hidden_states(idx, step))  # (B, T, vocab)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def hidden_states(self, idx: torch.Tensor, step: int | None = None, positions: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """The final normed residual stream (B, T, C), which the head maps to logits; scoring applies
        the head only where a token is predicted. `positions` (B, T) and `mask` (B, 1, T, T), both or
        neither, let several sequences share a row (evaluation packs answer choices after their context).
        With a `cache`, idx holds the tokens after the cached ones, at positions cache.length onwards."""
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, C)
        start = cache.length if cache is not None else 0
        if positions is not None:
            cos, sin = self.rope_cos[positions][:, :, None], self.rope_sin[positions][:, :, None]  # (B, T, 1, hs/2)
        else:
            cos, sin = self.rope_cos[start:start + T, None], self.rope_sin[start:start + T, None]  # (T, 1, hs/2)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device) if positions is None else positions)
        x = self.drop(x)
        for layer, (block, alpha) in enumerate(zip(self.blocks, self.residual_scales(step))):
            if self.cfg.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, alpha, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, alpha, mask, None if cache is None else (cache, layer))
        if cache is not None:
            cache.length += T
        return self.norm_f(x)

    def n_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once each; non_embedding leaves out the token and position embeddings
        (Kaplan et al.'s N). An untied output head is counted in both."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.wte.weight.numel()
            if self.wpe is not None:
                total -= self.wpe.weight.numel()
        return total

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 * (parameters used in matmuls, output head included)
        + the attention term 12 * n_layers * d_model * seq_len (as in the PaLM / nanoGPT MFU)."""
        matmul_params = self.n_params(non_embedding=True)
        if self.cfg.tie_embeddings:
            matmul_params += self.wte.weight.numel()
        return 6 * matmul_params + 12 * self.cfg.n_layers * self.cfg.d_model * self.seq_len

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T); temperature 0 means greedy. With
        `use_cache`, keys and values are kept while the sequence fits in seq_len (the same ids as
        without); past seq_len each token sees only the last seq_len, so it is a full forward again."""
        cache = KVCache(self.cfg.n_layers) if use_cache else None
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) <= self.seq_len:
                logits = self.head(self.hidden_states(idx[:, cache.length:], cache=cache)[:, -1, :]).float()
            else:
                logits = self(idx[:, -self.seq_len:])[:, -1, :].float()
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat((idx, next_id), dim=1)
        return idx
