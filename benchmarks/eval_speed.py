"""Multiple-choice scoring speed: ablab's batched scorer against scoring one example at a time.

The same examples of each task, the same model, three ways:
  one-at-a-time   a loop over examples and their choices, one forward pass per (context, choice),
                  log-softmax over the whole output, as a first evaluation script is written;
  ablab batch 1   ablab's loglikelihood with one request per pass (isolates what batching adds);
  ablab batched   evaluate_task as `ablab eval` runs it (--batch-size, default 16): requests batched
                  longest first, the head applied only where a choice token is predicted, and an
                  example's choices packed after their shared context when that saves tokens.
All three must give the same accuracies (checked). Rounds alternate the order; medians are
reported, with examples per second and the ratios. Target: batched at least 3x one-at-a-time on CPU.

The model is the quickstart shape (d128 L4 H4 ff512) with seq_len 256 and a 4,096-token BPE
trained on TinyStories text, as a small benchmark model would be; its weights are random because
speed does not depend on them. glibc is told to keep freed memory, as `ablab eval` does.

Run: ABLAB_DATA=../shared/data .venv/bin/python benchmarks/eval_speed.py [--tasks piqa,hellaswag,arc_easy]
     [--examples 200] [--batch-size 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ablab import config as config_mod
from ablab.data.tokenizer import train_bpe
from ablab.evals import TASKS, evaluate_task, load_examples, loglikelihood
from ablab.evals.loglik import encode_pair
from ablab.model.gpt import GPT
from ablab.train import hardware

TARGET_RATIO = 3.0


@torch.no_grad()
def one_at_a_time(model: GPT, tokenizer, examples) -> float:
    """Accuracy from one forward pass per (context, choice), as a plain loop writes it."""
    correct = 0
    for ex in examples:
        scores = []
        for continuation in ex.continuations:
            context_ids, choice_ids = encode_pair(tokenizer, ex.context, continuation)
            ids = (context_ids + choice_ids)[-(model.seq_len + 1):]
            logprobs = F.log_softmax(model(torch.tensor([ids[:-1]])).float(), dim=-1)[0]
            n = len(choice_ids)
            scores.append(logprobs[-n:].gather(1, torch.tensor(ids[-n:])[:, None]).sum().item())
        correct += max(range(len(scores)), key=scores.__getitem__) == ex.gold
    return correct / len(examples)


def ablab_batch_one(model: GPT, tokenizer, examples) -> float:
    requests = [(ex.context, c) for ex in examples for c in ex.continuations]
    scores = iter(s for s, _ in loglikelihood(model, tokenizer, requests, batch_size=1))
    correct = 0
    for ex in examples:
        ll = [next(scores) for _ in ex.continuations]
        correct += max(range(len(ll)), key=ll.__getitem__) == ex.gold
    return correct / len(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="piqa,hellaswag,arc_easy")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    hardware.keep_freed_memory()
    stories = Path(os.environ.get("ABLAB_DATA", "../shared/data")) / "tinystories" / "TinyStories-train-first2MiB.txt"
    tokenizer = train_bpe(stories.read_text(encoding="utf-8")[:1_000_000], 4096)
    cfg = config_mod.load("quickstart")
    torch.manual_seed(0)
    model = GPT(cfg.model, tokenizer.vocab_size, 256).eval()
    print(f"model d{cfg.model.d_model} L{cfg.model.n_layers}, seq_len 256, BPE {tokenizer.vocab_size}, "
          f"{model.n_params():,} parameters, {torch.get_num_threads()} threads, {args.examples} examples per task")
    print(f"{'task':<11}{'one-at-a-time':>15}{'ablab batch 1':>15}{'ablab batched':>15}   examples/s   "
          f"batched / one-at-a-time   batched / batch 1")
    ratios = []
    for name in args.tasks.split(","):
        spec = TASKS[name]
        examples = load_examples(spec, limit=args.examples)
        contenders = {
            "naive": lambda: one_at_a_time(model, tokenizer, examples),
            "batch1": lambda: ablab_batch_one(model, tokenizer, examples),
            "batched": lambda: evaluate_task(model, tokenizer, spec, limit=args.examples,
                                             batch_size=args.batch_size).metrics["acc"],
        }
        contenders["batched"]()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in contenders}
        accs: dict[str, float] = {}
        for round_ in range(args.rounds):
            order = list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]
            for key in order:
                start = time.perf_counter()
                accs[key] = contenders[key]()
                times[key].append(time.perf_counter() - start)
        assert abs(accs["naive"] - accs["batched"]) < 1e-9 and abs(accs["batch1"] - accs["batched"]) < 1e-9, accs
        t = {k: statistics.median(v) for k, v in times.items()}
        ratio = t["naive"] / t["batched"]
        ratios.append(ratio)
        print(f"{name:<11}{t['naive']:>14.2f}s{t['batch1']:>14.2f}s{t['batched']:>14.2f}s"
              f"{args.examples / t['naive']:>7.0f} ->{args.examples / t['batched']:>5.0f}"
              f"{ratio:>14.2f}x{t['batch1'] / t['batched']:>22.2f}x")
    mean = statistics.geometric_mean(ratios)
    print(f"geometric mean, batched / one-at-a-time: {mean:.2f}x (target {TARGET_RATIO:.0f}x: "
          f"{'met' if mean >= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
