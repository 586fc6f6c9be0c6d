"""GPU readiness in a few minutes: each check prints one line, PASS or FAIL, and the script exits 1
if any failed. Run through benchmarks/gpu_check.sh on a machine with a CUDA GPU; `--cpu` runs the
checks that make sense on a CPU (to catch a broken script before spending GPU time).

Checks: bf16 autocast (a forward in bf16 gives a finite loss near fp32's), torch.compile (compiled
training steps give the eager losses), fused AdamW (the CUDA optimizer is fused and steps), Muon's
batched Newton-Schulz (equals one chain per matrix), auto batch size (the chosen micro-batch's real
step stays within the budget), CUDA peak memory (recorded by a run), and the medium preset's
tokens/s and MFU over a short real `ablab run` (bf16, on the bundled corpus, byte tokens) whose
data.batch_size = "auto" holds the global batch within train.memory_budget_mb.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ablab import config as C
from ablab.config import OptimConfig
from ablab.model.gpt import GPT
from ablab.model.optim import build_optimizer, orthogonalize
from ablab.train import autobatch, hardware

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str):
    def wrap(fn):
        def run(*args):
            start = time.perf_counter()
            try:
                ok, detail = fn(*args)
            except Exception as err:  # a check that crashes is a failed check, with its reason
                ok, detail = False, f"{type(err).__name__}: {err}"
            RESULTS.append((name, ok, detail))
            print(f"{'PASS' if ok else 'FAIL'}  {name:<28} {detail}  ({time.perf_counter() - start:.1f} s)", flush=True)
        return run
    return wrap


def medium(device: str, extra: list[str] = ()) -> C.Config:
    return C.load("medium", [f"train.device={device}", "data.corpus=tiny-shakespeare", "data.tokenizer=byte",
                             "data.seq_len=256", *extra])


def batch(cfg: C.Config, device: str, n: int = 8):
    x = torch.randint(0, 256, (n, cfg.data.seq_len), device=device)
    return x, torch.roll(x, -1, dims=1)


@check("bf16 autocast")
def bf16(device: str):
    cfg = medium(device)
    torch.manual_seed(0)
    model = GPT(cfg.model, 256, cfg.data.seq_len).to(device)
    x, y = batch(cfg, device)
    with torch.no_grad():
        full = model(x, y).item()
        with torch.autocast(device, dtype=torch.bfloat16):
            half = model(x, y).item()
    return math.isfinite(half) and abs(half - full) < 0.05 * abs(full), f"loss fp32 {full:.4f}, bf16 {half:.4f}"


@check("torch.compile")
def compiled(device: str):
    cfg = medium(device)
    losses = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = GPT(cfg.model, 256, cfg.data.seq_len).to(device)
        forward = torch.compile(model) if mode == "compiled" else model
        opt = build_optimizer(model, OptimConfig(name="adamw", lr=1e-3), device)
        x, y = batch(cfg, device)
        out = []
        for _ in range(3):
            loss = forward(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            out.append(loss.item())
        losses[mode] = out
    close = all(abs(a - b) < 2e-2 * abs(a) for a, b in zip(losses["eager"], losses["compiled"]))
    return close, f"eager {[round(v, 4) for v in losses['eager']]}, compiled {[round(v, 4) for v in losses['compiled']]}"


@check("fused AdamW")
def fused(device: str):
    cfg = medium(device, ["optim.name=adamw"])
    model = GPT(cfg.model, 256, cfg.data.seq_len).to(device)
    opt = build_optimizer(model, cfg.optim, device)
    adamw = opt.optimizers["adamw"]
    x, y = batch(cfg, device)
    model(x, y).backward()
    opt.step()
    is_fused = bool(adamw.defaults.get("fused"))
    return is_fused == (device == "cuda"), f"fused={is_fused} on {device}"


@check("batched Newton-Schulz")
def newton_schulz(device: str):
    torch.manual_seed(0)
    stack = torch.randn(6, 384, 1536, device=device)
    together = orthogonalize(stack, 5).float()
    alone = torch.stack([orthogonalize(m, 5) for m in stack]).float()
    error = (together - alone).abs().max().item()
    return error < (2e-2 if device == "cuda" else 1e-4), f"max difference {error:.2e} (bf16 on CUDA)"


@check("auto batch size")
def auto_batch(device: str):
    cfg = medium(device)
    budget = 1024.0 if device == "cpu" else min(torch.cuda.mem_get_info()[0] / 2**20 * 0.5, 16_384.0)
    choice = autobatch.largest_batch(cfg, 256, budget)
    if device == "cuda":  # a real step at the chosen size, in this process: its peak within the budget
        torch.cuda.empty_cache()
        model = GPT(cfg.model, 256, cfg.data.seq_len).to(device)
        opt = build_optimizer(model, cfg.optim, device)
        hardware.reset_peak_memory(torch.device(device))
        x, y = batch(cfg, device, choice.batch_size)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, y)
        loss.backward()
        opt.step()
        peak = hardware.peak_memory_mb(torch.device(device))
    else:
        peak = choice.measured_mb
    return choice.batch_size > 1 and peak <= budget, (
        f"micro-batch {choice.batch_size} at budget {budget:,.0f} MB, its step {peak:,.0f} MB "
        f"({len(choice.probed)} probes)")


@check("run: auto batch, peak memory and MFU")
def real_run(device: str):
    """`ablab run` with data.batch_size = "auto" holding the preset's global batch within a budget."""
    budget, tokens = (4096, 16384) if device == "cuda" else (1024, 1024)  # a CPU: two sequences a step
    with tempfile.TemporaryDirectory() as lab:
        steps = 60 if device == "cuda" else 2
        argv = [sys.executable, "-m", "ablab", "run", "-c", "medium", f"train.device={device}",
                "data.corpus=tiny-shakespeare", "data.tokenizer=byte", f"train.max_steps={steps}",
                "schedule.warmup_steps=5", "eval.every=0", *([] if device == "cuda" else ["eval.tokens=2048"]),
                "data.batch_size=auto", "train.grad_accum=auto",
                f"train.global_batch_tokens={tokens}", f"train.memory_budget_mb={budget}", "--lab", lab]
        subprocess.run([sys.executable, "-m", "ablab", "init", lab], check=True, capture_output=True)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=420)
        if done.returncode != 0:
            return False, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        final = next(Path(lab).glob(".ablab/runs/*/result.json"))
        record = json.loads(final.read_text())
    result = record["final"]
    peak, mfu, speed = result.get("peak_memory_mb"), result.get("mfu"), result.get("tokens_per_s")
    held = record["batch_size"] * record["grad_accum"] * 512 == tokens
    within = device == "cpu" or peak <= budget  # on a CPU the peak is the whole process's RSS
    ok = bool(peak) and bool(mfu) and 0 < mfu < 1 and held and within and "auto_batch" in record
    return ok, (f"{speed:,.0f} tokens/s, MFU {100 * mfu:.1f}%, peak {peak:,.0f} MB over {steps} steps; auto chose "
                f"{record['batch_size']} x {record['grad_accum']} micro-batches for {tokens:,} tokens/step "
                f"within {budget:,} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run what makes sense on a CPU (a dry run)")
    args = parser.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("FAIL  no CUDA GPU is visible (torch.cuda.is_available() is False); run with --cpu for a dry run")
        sys.exit(1)
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {where}", flush=True)
    for run in (bf16, compiled if device == "cuda" else None, fused, newton_schulz, auto_batch, real_run):
        if run is not None:
            run(device)
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
