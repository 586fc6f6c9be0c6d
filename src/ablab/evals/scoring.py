"""Score a model on a task by log-likelihood, as lm-evaluation-harness does for these task types.

    result = evaluate_task(model, tokenizer, TASKS["piqa"], limit=500)
    result.metrics["acc"], result.metrics["acc_stderr"], result.metrics["centered"]

Multiple choice: the choice with the highest summed log-probability is the answer (`acc`); `acc_norm`
divides each sum by the choice's length in characters (the harness's acc_norm). Last word: `acc` is
the fraction of targets whose every token is the greedy prediction, and `ppl` is lm-eval's
perplexity, exp(-mean over examples of the target's summed log-probability).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ablab.data import Tokenizer
from ablab.errors import UserError
from ablab.evals.tasks import Example, TaskSpec, load_examples


@dataclass
class TaskResult:
    task: str
    version: int
    n: int  # examples scored
    num_fewshot: int
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids as lm-eval's `_encode_pair`: trailing spaces of the context move
    to the continuation, and the continuation's ids are the tail of encoding the joined text, so a
    BPE merge across the boundary is scored as the model would see it."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def _window(context_ids: list[int], continuation_ids: list[int], seq_len: int) -> list[int]:
    """The last seq_len + 1 tokens: the model reads the first seq_len and predicts the last seq_len."""
    if not continuation_ids:
        raise UserError("A continuation encodes to no tokens; give every choice some text.")
    if not context_ids:
        raise UserError("A context encodes to no tokens, so its first continuation token has no "
                        "prediction; give every example a non-empty context.")
    if len(continuation_ids) > seq_len:
        raise UserError(f"A continuation of {len(continuation_ids)} tokens does not fit the model's "
                        f"seq_len {seq_len}; evaluate a model with a longer seq_len or shorten the choices.")
    return (context_ids + continuation_ids)[-(seq_len + 1):]


@torch.no_grad()
def _score_batch(model: torch.nn.Module, windows: list[list[int]], n_cont: list[int],
                 device: torch.device) -> list[tuple[float, bool]]:
    width = max(len(w) for w in windows) - 1
    # Right padding: under a causal mask, pad tokens after a row's end cannot change its logits.
    idx = torch.zeros(len(windows), width, dtype=torch.long)
    for row, w in enumerate(windows):
        idx[row, : len(w) - 1] = torch.tensor(w[:-1])
    logprobs = F.log_softmax(model(idx.to(device)).float(), dim=-1).cpu()  # (B, T, vocab)
    scores = []
    for row, (w, n) in enumerate(zip(windows, n_cont)):
        end = len(w) - 1
        target = torch.tensor(w[-n:])
        rows = logprobs[row, end - n : end]  # (n, vocab): position i predicts token i + 1
        total = rows.gather(1, target[:, None]).sum().item()
        scores.append((total, bool((rows.argmax(-1) == target).all())))
    return scores


def loglikelihood(model: torch.nn.Module, tokenizer: Tokenizer, requests: list[tuple[str, str]],
                  batch_size: int = 16) -> list[tuple[float, bool]]:
    """(sum of log P(continuation | context), whether every continuation token is the argmax) per
    request, with the context left-truncated so context + continuation fits model.seq_len."""
    pairs = [encode_pair(tokenizer, ctx, cont) for ctx, cont in requests]
    windows = [_window(c, k, model.seq_len) for c, k in pairs]
    n_cont = [len(k) for _, k in pairs]
    # Longest first, as lm-eval orders requests, so each batch pads little.
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: list[tuple[float, bool]] = [(0.0, False)] * len(windows)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            scores = _score_batch(model, [windows[i] for i in chunk], [n_cont[i] for i in chunk], device)
            for i, score in zip(chunk, scores):
                results[i] = score
    finally:
        model.train(was_training)
    return results


def fewshot_contexts(spec: TaskSpec, pool: list[Example], indices: list[int], num_fewshot: int,
                     seed: int) -> list[str]:
    """Each example's context preceded by num_fewshot solved examples of the same split (never
    itself), drawn with one random.Random(seed) in order, as lm-eval's sampler does."""
    if num_fewshot == 0:
        return [pool[i].context for i in indices]
    if num_fewshot >= len(pool):
        raise UserError(f"Task '{spec.name}' has {len(pool)} examples, too few for {num_fewshot}-shot; "
                        "lower num_fewshot.")
    rng = random.Random(seed)
    contexts = []
    for i in indices:
        shots = [j for j in rng.sample(range(len(pool)), num_fewshot + 1) if j != i][:num_fewshot]
        solved = [pool[j].context + pool[j].continuations[pool[j].gold] for j in shots]
        contexts.append(spec.fewshot_delimiter.join(solved + [pool[i].context]))
    return contexts


def mean_stderr(values: np.ndarray) -> float:
    """lm-eval's stderr of a mean: sample standard deviation / sqrt(n); sqrt(p(1-p)/(n-1)) for 0/1."""
    n = len(values)
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def _multiple_choice_metrics(examples: list[Example], scores: list[float]) -> dict[str, float]:
    correct, correct_norm, chance, k = [], [], [], 0
    for ex in examples:
        ll = np.array(scores[k : k + len(ex.choices)])
        k += len(ex.choices)
        lengths = np.array([max(len(c), 1) for c in ex.choices], dtype=float)
        correct.append(float(np.argmax(ll) == ex.gold))
        correct_norm.append(float(np.argmax(ll / lengths) == ex.gold))
        chance.append(1.0 / len(ex.choices))
    acc, acc_norm, p0 = float(np.mean(correct)), float(np.mean(correct_norm)), float(np.mean(chance))
    return {"acc": acc, "acc_stderr": mean_stderr(np.array(correct)),
            "acc_norm": acc_norm, "acc_norm_stderr": mean_stderr(np.array(correct_norm)),
            "chance": p0, "centered": (acc - p0) / (1 - p0),
            "centered_stderr": mean_stderr(np.array(correct)) / (1 - p0)}


def _last_word_metrics(results: list[tuple[float, bool]]) -> dict[str, float]:
    ll = np.array([s for s, _ in results])
    greedy = np.array([float(g) for _, g in results])
    ppl = math.exp(-ll.mean())
    # Delta method: d exp(-m) = exp(-m) dm (lm-eval bootstraps this; the delta method needs no resampling).
    return {"acc": float(greedy.mean()), "acc_stderr": mean_stderr(greedy),
            "ppl": ppl, "ppl_stderr": ppl * mean_stderr(ll), "chance": 0.0, "centered": float(greedy.mean())}


def evaluate_task(model: torch.nn.Module, tokenizer: Tokenizer, spec: TaskSpec, limit: int | None = None,
                  num_fewshot: int = 0, seed: int = 0, batch_size: int = 16) -> TaskResult:
    """Score `limit` examples of the task (a subset drawn with `seed`; all when None). Deterministic
    for a seed: the subset and the few-shot draws both come from it."""
    pool = load_examples(spec)
    if limit is None or limit >= len(pool):
        indices = list(range(len(pool)))
    else:
        indices = sorted(random.Random(seed).sample(range(len(pool)), limit))
    examples = [pool[i] for i in indices]
    contexts = fewshot_contexts(spec, pool, indices, num_fewshot, seed)
    requests = [(ctx, cont) for ctx, ex in zip(contexts, examples) for cont in ex.continuations]
    results = loglikelihood(model, tokenizer, requests, batch_size)
    if spec.type == "last_word":
        metrics = _last_word_metrics(results)
    else:
        metrics = _multiple_choice_metrics(examples, [s for s, _ in results])
    return TaskResult(spec.name, spec.version, len(examples), num_fewshot, seed, metrics)
