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
the fp32 matmul peak measured here. Targets: ablab-as-ref / reference >= 1.0; ablab-default /
ablab-as-ref >= 0.95 (issue 17).

Two modes, in the same rounds. micro-batch: one micro-batch of --batch x 256 tokens per optimizer
step. accumulated: --tokens-per-step (default the presets' data.batch_size x data.seq_len, 16,384),
reached by accumulating those micro-batches, alike for all three. The mode matters for Muon:
Newton-Schulz costs the same per optimizer step whatever the batch (5 iterations of 3 matmuls per
hidden matrix: ~26 GFLOP for small, ~130 for medium) while forward and backward grow with the tokens.
The "optim s" column is the optimizer step's own time. Last, two real ablab runs (the training loop,
its data and evaluation) of ablab-default and ablab-as-ref at equal steps, tokens and seed print
their val losses (--val-steps 0 skips them; ABLAB_DATA must point at the corpus).

On this project's 2-core machine (2026-12-06, idle, --threads 1, --val-steps 0; 3 rounds eager, 2
with --compile), ablab-default / ablab-as-ref at 16,384 tokens per step:
  equal d_ff, eager           0.798 small  0.756 medium  (micro-batch mode 0.662, 0.524)
  equal d_ff, --compile       0.828        0.793
  --swiglu-equal-flops, eager 0.958        0.908         (micro-batch mode 0.797, 0.663)
  --swiglu-equal-flops, --compile 0.973    0.935
At equal d_ff SwiGLU's gate makes ablab-default do 1.18x (small) and 1.24x (medium) the FLOPs per
token, so equal MFU would give 0.846 and 0.809: 0.95 at the research plan's dims needs SwiGLU's
smaller matmuls to beat the plain MLP's MFU. At equal FLOPs, small meets the target eagerly; medium is
short by Muon's step, 6.2% of its step (3.2% small; 21% and 34% in micro-batch mode), whose
Newton-Schulz is ~130 GFLOP of fp32 matmuls per step. Eager ablab-default runs the
rotation through ablab.model.kernels; these figures include an RMSNorm fast path since withdrawn (it hid divergence).
ablab-as-ref / reference: 1.158 and 1.095 eager, 1.040 and 1.014 compiled. This CPU has AMX:
Newton-Schulz of a 1536 x 384 matrix in bf16 ran 2.5x faster than in fp32 (0.059 vs 0.151 s, one
thread), but its result differs from fp32's by 2.7% (relative Frobenius norm), far beyond the
tolerance the tests hold Muon's update to, so Muon keeps fp32 on a CPU. Val loss at equal steps (the
small preset on tiny-shakespeare, char, 150 steps x 2,048 tokens, seed 0): ablab-default 2.1625,
ablab-as-ref 2.4979 (155 s and 85 s of training).

Control: ABLAB_BENCH_NO_TUNING=1 runs ablab's contenders without that process setup. The ratio then
measured 1.011 in one run and 1.274 in another: without the setup, glibc's adaptive mmap threshold
depends on what the process allocated before (ablab's worker also holds ablab-default), so the
same arithmetic runs at different speeds. In one process with identical allocator settings the
two models measured 0.3095 vs 0.3100 s per step: the model code itself adds no overhead.

Run: ABLAB_DATA=... .venv/bin/python benchmarks/throughput.py [--rounds 3] [--steps 3] [--batch 8]
     [--tokens-per-step 16384] [--modes micro-batch,accumulated] [--threads 0] [--val-steps 150]
     [--swiglu-equal-flops] [--compile]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import tomllib

import torch
import torch.nn.functional as F
from torch import nn

from ablab.config import PRESETS_DIR, ModelConfig, OptimConfig
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


def build(name: str, size: str, vocab: int, default_d_ff: int = 0):
    """(model, optimizer, FLOPs per token) of one contender; `default_d_ff` gives ablab-default another
    MLP width (e.g. 2/3 of d_ff: SwiGLU at the plain GPT's FLOPs per token)."""
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
    model = GPT(ModelConfig(d_model=d, n_layers=L, n_heads=H, d_ff=default_d_ff or ff), vocab, SEQ_LEN)
    return model, build_optimizer(model, OptimConfig(name="muon"), "cpu"), model.flops_per_token()


def time_steps(model, optimizer, batches, steps: int) -> tuple[float, float]:
    """(seconds per optimizer step, of which the optimizer's step): each step accumulates the
    gradients of every micro-batch in `batches` (the loss scaled by 1/len, as ablab's loop does),
    clips to norm 1 and steps."""
    optimizer_seconds, start = 0.0, time.perf_counter()
    for _ in range(steps):
        for x, y in batches:
            (model(x, y) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        before = time.perf_counter()
        optimizer.step()
        optimizer_seconds += time.perf_counter() - before
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps, optimizer_seconds / steps


def worker(conn, names: list[str], size: str, args, as_ablab: bool) -> None:
    """A process holding some contenders; times `steps` optimizer steps of `accum` micro-batches
    each for the one it is asked for.

    ablab's contenders run in a process set up as `ablab run` sets up its own (keep_freed_memory);
    the reference runs in a plain Python process, as a script written the standard way would.
    """
    if as_ablab and not os.environ.get("ABLAB_BENCH_NO_TUNING"):
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: build(name, size, args.vocab, _default_d_ff(size, args)) for name in names}
    if args.compile:  # each model's forward and backward compiled, the optimizer step left eager
        models = {name: (torch.compile(model), opt, flops) for name, (model, opt, flops) in models.items()}
    shape = (args.batch, SEQ_LEN)
    batches = [(torch.randint(0, args.vocab, shape), torch.randint(0, args.vocab, shape))
               for _ in range(max(accumulation(size, args), 1))]
    for model, opt, _ in models.values():  # warm-up: allocator, optimizer state, thread pools, compilation
        time_steps(model, opt, batches[:1], 2)
    conn.send({name: (sum(p.numel() for p in m.parameters()), flops) for name, (m, _, flops) in models.items()})
    while (request := conn.recv()) is not None:
        name, accum, steps = request
        model, opt, _ = models[name]
        conn.send(time_steps(model, opt, batches[:accum], steps))


def accumulation(size: str, args) -> int:
    """Micro-batches per optimizer step in the accumulated mode: --tokens-per-step (default: the
    preset's data.batch_size x data.seq_len) over the micro-batch's --batch x SEQ_LEN tokens."""
    tokens = args.tokens_per_step
    if tokens is None:
        preset = tomllib.loads((PRESETS_DIR / f"{size}.toml").read_text())["data"]
        tokens = preset["batch_size"] * preset["seq_len"]
    return tokens // (args.batch * SEQ_LEN)


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
    modes = {"micro-batch": (1, args.steps), "accumulated": (accumulation(size, args), args.accum_steps)}
    modes = {mode: modes[mode] for mode in args.modes.split(",")}
    times = {(mode, name): [] for mode in modes for name in names}
    for round_ in range(args.rounds):  # rotate the order so no contender always runs first or last
        for mode, (accum, steps) in modes.items():
            for name in names[round_ % 3:] + names[:round_ % 3]:
                time.sleep(1.0)  # let the previous process's idle OpenMP threads stop spinning
                pipes[name].send((name, accum, steps))
                times[mode, name].append(pipes[name].recv())
    for conn in set(pipes.values()):
        conn.send(None)
    print(f"\n{size}: d{SIZES[size][0]} L{SIZES[size][1]} H{SIZES[size][2]} ff{SIZES[size][3]}, "
          f"seq {SEQ_LEN}, micro-batch {args.batch}, vocab {args.vocab}"
          + (f"; ablab-default at ff{_default_d_ff(size, args)} (--swiglu-equal-flops)" if args.swiglu_equal_flops else "")
          + ("; every model under torch.compile (--compile)" if args.compile else ""))
    for mode, (accum, _) in modes.items():
        report(mode, accum, {name: times[mode, name] for name in names}, facts, args, peak)


def report(mode: str, accum: int, times: dict[str, list[tuple[float, float]]], facts: dict, args, peak: float) -> None:
    """One mode's table and ratios; each ratio is the median over rounds of that round's ratio."""
    tokens = accum * args.batch * SEQ_LEN
    print(f"  {mode}: {tokens:,} tokens per optimizer step ({accum} x {args.batch} x {SEQ_LEN})")
    print(f"    {'model':<14} {'params':>9} {'tokens/s':>10} {'MFU':>6}  {'step s':>8} {'optim s':>8}"
          f"  (medians of {args.rounds})")
    for name, rows in times.items():
        step, optim = (statistics.median(column) for column in zip(*rows))
        params, flops = facts[name]
        print(f"    {name:<14} {params / 1e6:>8.2f}M {tokens / step:>10,.0f} {flops * tokens / step / peak:>6.1%}"
              f"  {step:>8.4f} {optim:>8.4f}")

    def ratio(fast: str, slow: str) -> str:
        per_round = [s[0] / f[0] for f, s in zip(times[fast], times[slow])]
        return f"{statistics.median(per_round):.3f} (per round: {', '.join(f'{r:.3f}' for r in per_round)})"

    print(f"    ablab-default / ablab-as-ref tokens/s: {ratio('ablab-default', 'ablab-as-ref')}  [target >= 0.95]")
    print(f"    ablab-as-ref / reference tokens/s:     {ratio('ablab-as-ref', 'reference')}  [target >= 1.0]")
    print(f"    ablab-default / reference tokens/s:    {ratio('ablab-default', 'reference')}")
    flops_ratio = facts["ablab-default"][1] / facts["ablab-as-ref"][1]
    optim_share = statistics.median(o / s for s, o in times["ablab-default"])
    why = "SwiGLU at 2/3 of d_ff" if args.swiglu_equal_flops else "SwiGLU's gate at equal d_ff"
    print(f"    ablab-default does {flops_ratio:.3f}x ablab-as-ref's FLOPs per token ({why}), "
          f"so equal MFU would be a ratio of {1 / flops_ratio:.3f}; its optimizer step (Muon + AdamW) is "
          f"{optim_share:.1%} of its step")


def val_losses(args) -> None:
    """Val loss at equal steps and tokens of ablab-default and ablab-as-ref: two real ablab runs
    (the training loop, its data pipeline and evaluation) from the same seed in a scratch lab."""
    from ablab.api import Lab  # here, not at the top: only this part needs the lab machinery

    common = [f"data.corpus={args.val_corpus}", "data.tokenizer=char", f"data.seq_len={SEQ_LEN}",
              f"data.batch_size={args.batch}", f"train.grad_accum={args.val_accum}",
              f"train.max_steps={args.val_steps}", f"schedule.warmup_steps={max(args.val_steps // 10, 1)}",
              "train.device=cpu", f"train.threads={args.threads}", "eval.points=2", f"eval.tokens={args.val_tokens}",
              "seed=0",
              f"train.checkpoint_every={args.val_steps}"]
    arms = {"ablab-default": [],
            "ablab-as-ref": ["model.norm=layernorm", "model.mlp=gelu", "model.positions=learned", "optim.name=adamw",
                             f"optim.lr={args.val_adamw_lr}"]}
    tokens = args.val_accum * args.batch * SEQ_LEN
    print(f"\nval loss at equal steps: the {args.val_size} preset, {args.val_corpus} (char), {args.val_steps} steps x "
          f"{tokens:,} tokens ({args.val_accum} x {args.batch} x {SEQ_LEN}), seed 0, cosine schedule, "
          f"warmup {max(args.val_steps // 10, 1)}; Muon lr and AdamW lr of the preset for ablab-default, "
          f"AdamW lr {args.val_adamw_lr} on every parameter for ablab-as-ref")
    with tempfile.TemporaryDirectory() as folder:
        lab = Lab.init(folder, examples=False)
        for name, overrides in arms.items():
            result = lab.run(args.val_size, *common, *overrides).result
            final = result["final"]
            print(f"  {name:<14} val loss {final['val_loss']:.4f} after {result['steps']} steps, "
                  f"{result['tokens_seen']:,} tokens, {result['train_seconds']:.0f} s of training")


def _default_d_ff(size: str, args) -> int:
    """ablab-default's d_ff under --swiglu-equal-flops: 2/3 of the size's, to a multiple of 8."""
    return int(round(SIZES[size][3] * 2 / 3 / 8) * 8) if args.swiglu_equal_flops else 0


def refuse(sentence: str) -> None:
    """A user error: one sentence on stderr, exit code 2, no traceback."""
    print(sentence, file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timing, micro-batch mode")
    parser.add_argument("--accum-steps", type=int, default=1, help="optimizer steps per timing, accumulated mode")
    parser.add_argument("--batch", type=int, default=8, help="sequences per micro-batch")
    parser.add_argument("--tokens-per-step", type=int, default=None,
                        help="tokens per optimizer step in the accumulated mode (default: the preset's "
                             "data.batch_size x data.seq_len, 16,384)")
    parser.add_argument("--modes", default="micro-batch,accumulated")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in every process; 0 = torch's default (one per core). 1 is steadier "
                             "on a machine other work also loads: idle OpenMP threads spin")
    parser.add_argument("--swiglu-equal-flops", action="store_true",
                        help="give ablab-default 2/3 of d_ff, so that SwiGLU costs the plain GPT's FLOPs per token")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile all three models (as train.compile=true does); the first steps compile")
    parser.add_argument("--val-steps", type=int, default=150, help="steps of each val-loss run; 0 = none")
    parser.add_argument("--val-size", default="small")
    parser.add_argument("--val-accum", type=int, default=1, help="micro-batches per step of the val-loss runs")
    parser.add_argument("--val-corpus", default="tiny-shakespeare")
    parser.add_argument("--val-tokens", type=int, default=32768, help="validation tokens per evaluation")
    parser.add_argument("--val-adamw-lr", type=float, default=0.003)
    args = parser.parse_args()
    unknown = set(args.modes.split(",")) - {"micro-batch", "accumulated"}
    micro_tokens = args.batch * SEQ_LEN
    if unknown:
        refuse(f"--modes takes micro-batch and/or accumulated, not {', '.join(sorted(unknown))}.")
    if args.tokens_per_step is not None and (args.tokens_per_step % micro_tokens or args.tokens_per_step <= 0):
        refuse(f"--tokens-per-step must be a positive multiple of the micro-batch's {micro_tokens:,} tokens "
                 f"(--batch {args.batch} x {SEQ_LEN}).")
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = measured_peak_flops("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048^3, best of 6)")
    for size in args.sizes.split(","):
        bench(size, args, peak)
    if args.val_steps:
        val_losses(args)


if __name__ == "__main__":
    main()
