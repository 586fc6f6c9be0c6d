"""Training-step throughput of ablab's GPT against a plain reference GPT, on this machine.

For the research plan's small (d256 L4 H4 ff1024) and medium (d384 L6 H8 ff1536) models at
sequence length 256, times a full training step (forward, backward, gradient clipping, optimizer
step) of:
  ablab-default    ablab's default architecture (RMSNorm, RoPE, SwiGLU) with Muon + AdamW
  ablab-as-ref     ablab configured like a plain GPT (LayerNorm, GELU, learned positions, AdamW)
  reference        that plain GPT written below in the simplest standard PyTorch way
ablab-as-ref and reference do the same arithmetic. ablab's contenders run in a process set up the
way `ablab run` sets up its own (glibc keeps freed memory instead of page-faulting it back every
step); the reference runs in a plain process. The three are timed in interleaved rounds, in
rotating order, so that machine noise hits all of them alike. MFU is against
the fp32 matmul peak measured here. Target: ablab-as-ref / reference >= 1.0.

Control: ABLAB_BENCH_NO_TUNING=1 runs ablab's contenders without that process setup. The ratio then
measured 1.011 in one run and 1.274 in another: without the setup, glibc's adaptive mmap threshold
depends on what the process allocated before (ablab's worker also holds ablab-default), so the
same arithmetic runs at different speeds. In one process with identical allocator settings the
two models measured 0.3095 vs 0.3100 s per step: the model code itself adds no overhead.

Run: .venv/bin/python benchmarks/throughput.py [--rounds 5] [--steps 4] [--batch 8] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from ablab.config import ModelConfig, OptimConfig
from ablab.model.gpt import GPT
from ablab.model.optim import build_optimizer
from ablab.train.hardware import keep_freed_memory, measured_peak_flops

SIZES = {"small": (256, 4, 4, 1024), "medium": (384, 6, 8, 1536)}
SEQ_LEN = 256


class RefBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, d_ff, bias=False), nn.Linear(d_ff, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class RefGPT(nn.Module):
    """A plain GPT-2-style model (nanoGPT's shape, no biases), standard PyTorch only."""

    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, d_ff: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(SEQ_LEN, d)
        self.blocks = nn.ModuleList(RefBlock(d, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f, self.head = nn.LayerNorm(d, bias=False), nn.Linear(d, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def build(name: str, size: str, vocab: int):
    """(model, optimizer, FLOPs per token) of one contender."""
    d, L, H, ff = SIZES[size]
    plain_cfg = ModelConfig(d_model=d, n_layers=L, n_heads=H, d_ff=ff, norm="layernorm", mlp="gelu",
                            positions="learned")
    flops = GPT(plain_cfg, vocab, SEQ_LEN).flops_per_token()
    if name == "reference":
        model = RefGPT(vocab, d, L, H, ff)
        return model, torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95)), flops
    if name == "ablab-as-ref":
        model = GPT(plain_cfg, vocab, SEQ_LEN)
        return model, build_optimizer(model, OptimConfig(name="adamw", lr=3e-4), "cpu"), flops
    model = GPT(ModelConfig(d_model=d, n_layers=L, n_heads=H, d_ff=ff), vocab, SEQ_LEN)
    return model, build_optimizer(model, OptimConfig(name="muon"), "cpu"), model.flops_per_token()


def time_steps(model, optimizer, batch, steps: int) -> float:
    """Seconds per training step: forward, backward, clip to norm 1, optimizer step."""
    x, y = batch
    start = time.perf_counter()
    for _ in range(steps):
        model(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def worker(conn, names: list[str], size: str, args, as_ablab: bool) -> None:
    """A process holding some contenders; times `steps` steps of the one it is asked for.

    ablab's contenders run in a process set up as `ablab run` sets up its own (keep_freed_memory);
    the reference runs in a plain Python process, as a script written the standard way would.
    """
    if as_ablab and not os.environ.get("ABLAB_BENCH_NO_TUNING"):
        keep_freed_memory()
    torch.manual_seed(0)
    models = {name: build(name, size, args.vocab) for name in names}
    batch = (torch.randint(0, args.vocab, (args.batch, SEQ_LEN)), torch.randint(0, args.vocab, (args.batch, SEQ_LEN)))
    for model, opt, _ in models.values():  # warm-up: allocator, optimizer state, thread pools
        time_steps(model, opt, batch, 2)
    conn.send({name: (sum(p.numel() for p in m.parameters()), flops) for name, (m, _, flops) in models.items()})
    while (name := conn.recv()) is not None:
        model, opt, _ = models[name]
        conn.send(time_steps(model, opt, batch, args.steps))


def bench(size: str, args, peak: float) -> None:
    context = multiprocessing.get_context("spawn")
    groups = {"ablab": (["ablab-default", "ablab-as-ref"], True), "plain": (["reference"], False)}
    pipes, facts = {}, {}
    for group, (names, as_ablab) in groups.items():
        here, there = context.Pipe()
        context.Process(target=worker, args=(there, names, size, args, as_ablab), daemon=True).start()
        pipes.update({name: here for name in names})
    for conn in set(pipes.values()):
        facts.update(conn.recv())
    names = list(facts)
    times = {name: [] for name in names}
    for round_ in range(args.rounds):  # rotate the order so no contender always runs first or last
        for name in names[round_ % 3:] + names[:round_ % 3]:
            time.sleep(1.0)  # let the previous process's idle OpenMP threads stop spinning
            pipes[name].send(name)
            times[name].append(pipes[name].recv())
    for conn in set(pipes.values()):
        conn.send(None)
    tokens = args.batch * SEQ_LEN
    print(f"\n{size}: d{SIZES[size][0]} L{SIZES[size][1]} H{SIZES[size][2]} ff{SIZES[size][3]}, "
          f"seq {SEQ_LEN}, batch {args.batch}, vocab {args.vocab}")
    print(f"  {'model':<14} {'params':>9} {'tokens/s':>10} {'MFU':>6}  step s (median of {args.rounds})")
    for name in names:
        median = statistics.median(times[name])
        params, flops = facts[name]
        print(f"  {name:<14} {params / 1e6:>8.2f}M {tokens / median:>10,.0f} {flops * tokens / median / peak:>6.1%}  {median:.4f}")
    ratios = [r / a for a, r in zip(times["ablab-as-ref"], times["reference"])]
    print(f"  ratio ablab-as-ref / reference tokens/s: {statistics.median(ratios):.3f} "
          f"(per round: {', '.join(f'{r:.3f}' for r in ratios)})")
    default_ratio = statistics.median(times["reference"]) / statistics.median(times["ablab-default"])
    print(f"  ratio ablab-default / reference tokens/s: {default_ratio:.3f} (different architecture and optimizer)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--sizes", default="small,medium")
    args = parser.parse_args()
    peak = measured_peak_flops("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048^3, best of 6)")
    for size in args.sizes.split(","):
        bench(size, args, peak)


if __name__ == "__main__":
    main()
