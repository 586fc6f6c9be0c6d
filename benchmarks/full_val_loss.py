"""Validation loss over the WHOLE validation split at a fixed context length, the same windows for every
model, so that ablab's quickstart and nanoGPT's CPU recipe are scored by one evaluator.

A training run's own val loss is an estimate over a sample of windows at its own sequence length
(ablab: 32,768 tokens in evenly spaced windows; nanoGPT: 20 random batches). Here the validation text
is cut into consecutive windows of `context` characters; every character after the first is predicted
once, from the characters before it in its window. Both tools hold out the last 10% of Tiny
Shakespeare's characters (int(0.9 n)), so the text scored is the same.

    .venv/bin/python benchmarks/full_val_loss.py --lab LAB --run RUN_ID --context 64,128
    .venv/bin/python benchmarks/full_val_loss.py --nanogpt NANOGPT_DIR --out-dir out-shakespeare-char --context 64

The second form loads a nanoGPT checkpoint (`ckpt.pt`, written with --always_save_checkpoint=True so
that it holds the last iteration) with nanoGPT's own model.py, and its character table from
data/shakespeare_char/meta.pkl. How the README's comparison was measured: README.md, "Against the
best-known CPU recipe".
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

Logits = Callable[[torch.Tensor], torch.Tensor]  # (B, T) token ids -> (B, T, vocab) logits


@torch.no_grad()
def full_split_loss(logits_of: Logits, ids: list[int], context: int, batch: int = 64) -> tuple[float, int]:
    """(mean cross-entropy in nats, tokens predicted) over consecutive windows of `context` tokens."""
    data = torch.tensor(ids, dtype=torch.long)
    starts = range(0, len(data) - 1, context)
    full = [s for s in starts if s + context < len(data)]
    batches = [(full[i:i + batch], context) for i in range(0, len(full), batch)]
    if starts[-1] not in full:  # the last window, shorter than the context
        batches.append(([starts[-1]], len(data) - 1 - starts[-1]))
    total, count = 0.0, 0
    for group, n in batches:
        x = torch.stack([data[s:s + n] for s in group])
        y = torch.stack([data[s + 1:s + n + 1] for s in group])
        out = logits_of(x).float()
        total += F.cross_entropy(out.reshape(-1, out.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    return total / count, count


def ablab_model(lab: Path, run_id: str) -> tuple[Logits, str, Callable[[str], list[int]]]:
    from ablab.data.prepare import prepare_data
    from ablab.store.record import RunRecord
    from ablab.train.sampling import load_run_model

    model, tokenizer, step = load_run_model(lab, run_id)
    data = prepare_data(RunRecord.open(lab, run_id).config().data)
    val_text = tokenizer.decode(data.val.tolist())
    print(f"ablab run {run_id}: checkpoint at step {step}, {sum(p.numel() for p in model.parameters()):,} parameters")
    return (lambda x: model(x)), val_text, tokenizer.encode


def nanogpt_model(repo: Path, out_dir: Path) -> tuple[Logits, str, Callable[[str], list[int]]]:
    sys.path.insert(0, str(repo))
    from model import GPT, GPTConfig  # nanoGPT's own model.py

    ckpt = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    meta = pickle.loads((repo / "data" / "shakespeare_char" / "meta.pkl").read_bytes())
    text = (repo / "data" / "shakespeare_char" / "input.txt").read_text(encoding="utf-8")
    val_text = text[int(len(text) * 0.9):]
    print(f"nanoGPT {out_dir}: iteration {ckpt['iter_num']}, its own val estimate {float(ckpt['best_val_loss']):.4f}")
    return (lambda x: model(x, x)[0]), val_text, (lambda s: [meta["stoi"][c] for c in s])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", type=Path, default=Path("."), help="the lab holding --run")
    parser.add_argument("--run", help="an ablab run id (or unique prefix)")
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout, instead of --run")
    parser.add_argument("--out-dir", type=Path, default=Path("out-shakespeare-char"),
                        help="nanoGPT's out_dir, relative to --nanogpt")
    parser.add_argument("--context", default="64", help="context lengths, comma-separated (default 64)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.nanogpt:
        logits_of, text, encode = nanogpt_model(args.nanogpt, args.nanogpt / args.out_dir)
    elif args.run:
        logits_of, text, encode = ablab_model(args.lab, args.run)
    else:
        parser.error("give --run RUN_ID (with --lab) or --nanogpt DIR")
    ids = encode(text)
    print(f"validation split: {len(text):,} characters")
    for context in (int(c) for c in args.context.split(",")):
        start = time.perf_counter()
        loss, count = full_split_loss(logits_of, ids, context)
        print(f"context {context:4d}: val loss {loss:.4f} nats (perplexity {math.exp(loss):.3f}) over "
              f"{count:,} predicted characters, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
