"""Score a model on a task, as lm-evaluation-harness does for these task types.

    result = evaluate_task(model, tokenizer, TASKS["piqa"], limit=500)
    result.metrics["acc"], result.metrics["acc_stderr"], result.metrics["centered"]

Multiple choice: the choice with the highest summed log-probability is the answer (`acc`); `acc_norm`
divides each sum by the choice's length in characters (the harness's acc_norm), `acc_per_byte` by the
UTF-8 bytes scored and `acc_per_token` by the tokens scored. The harness's acc_norm leaves the target
delimiter out of the length but not out of the sum, so a near-uniform (untrained) model prefers the
longer choice by it; the per-byte and per-token scores count what they sum. Every result carries all four;
`TaskResult.metric` names the one reports read (the task's `metric`), and `centered` is computed from
it. Under partial scoring every choice scores the same continuation, so the four agree. Last word: `acc` is
the fraction of targets whose every token is the greedy prediction, and `ppl` is lm-eval's
perplexity, exp(-mean over examples of the target's summed log-probability). Generation: greedy
decoding until a stop string, scored by SQuAD v1.1's exact match and token F1 (`acc` = exact match).

Examples the tokenizer cannot encode (a char tokenizer meets a character outside its corpus) are
skipped and counted in `TaskResult.skipped`; the metrics are over the rest.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ablab.data.tokenizer import Tokenizer
from ablab.errors import DataError, UserError
from ablab.evals.generation import bootstrap_stderr, exact_match, generate_until, token_f1
from ablab.evals.loglik import encode_pair, loglikelihood
from ablab.evals.packing import choice_loglikelihoods
from ablab.evals.tasks import METRICS, Example, TaskSpec, load_examples


@dataclass
class TaskResult:
    task: str
    version: int
    n: int  # examples scored
    num_fewshot: int
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: int = 0  # drawn examples left out because the tokenizer cannot encode their text
    metric: str = "acc"  # the metric reports read; `centered` is computed from it

    def to_dict(self) -> dict:
        return asdict(self)


def fewshot_prefixes(spec: TaskSpec, pool: list[Example], indices: list[int], num_fewshot: int,
                     seed: int) -> list[str]:
    """What precedes each example's context: num_fewshot solved examples of the same split (never
    itself), drawn with one random.Random(seed) in order as lm-eval's sampler does, each followed by
    the few-shot delimiter; "" at zero-shot."""
    if num_fewshot == 0:
        return [""] * len(indices)
    if num_fewshot >= len(pool):
        raise UserError(f"Task '{spec.name}' has {len(pool)} examples, too few for {num_fewshot}-shot; "
                        "lower num_fewshot.")
    rng = random.Random(seed)
    prefixes = []
    for i in indices:
        shots = [j for j in rng.sample(range(len(pool)), num_fewshot + 1) if j != i][:num_fewshot]
        solved = [pool[j].context + pool[j].continuations[pool[j].gold] for j in shots]
        prefixes.append("".join(shot + spec.fewshot_delimiter for shot in solved))
    return prefixes


def fewshot_contexts(spec: TaskSpec, pool: list[Example], indices: list[int], num_fewshot: int,
                     seed: int) -> list[str]:
    """Each example's context after its few-shot prefix (fewshot_prefixes)."""
    prefixes = fewshot_prefixes(spec, pool, indices, num_fewshot, seed)
    return [prefix + pool[i].context for prefix, i in zip(prefixes, indices)]


def mean_stderr(values: np.ndarray) -> float:
    """lm-eval's stderr of a mean: sample standard deviation / sqrt(n); sqrt(p(1-p)/(n-1)) for 0/1."""
    n = len(values)
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def _accuracy(name: str, correct: list[float]) -> dict[str, float]:
    return {name: float(np.mean(correct)), f"{name}_stderr": mean_stderr(np.array(correct))}


def _multiple_choice_metrics(examples: list[Example], scores: list[float], tokens: list[int] | None = None,
                             metric: str = "acc") -> dict[str, float]:
    """acc, acc_norm, acc_bytes and acc_per_token (with `tokens`, the tokens scored per choice), each
    with its stderr; chance from the data, and the centred score of `metric`."""
    picks: dict[str, list[float]] = {name: [] for name in METRICS if tokens is not None or name != "acc_per_token"}
    chance, k = [], 0
    for ex in examples:
        ll = np.array(scores[k : k + len(ex.choices)])
        divisors = {"acc": np.ones(len(ex.choices)),
                    "acc_norm": np.array([max(len(c), 1) for c in ex.choices], dtype=float),
                    "acc_per_byte": np.array([len(c.encode("utf-8")) for c in ex.continuations], dtype=float)}
        if tokens is not None:
            divisors["acc_per_token"] = np.array(tokens[k : k + len(ex.choices)], dtype=float)
        k += len(ex.choices)
        for name, correct in picks.items():
            correct.append(float(np.argmax(ll / divisors[name]) == ex.gold))
        chance.append(1.0 / len(ex.choices))
    metrics: dict[str, float] = {}
    for name, correct in picks.items():
        metrics.update(_accuracy(name, correct))
    p0, score = float(np.mean(chance)), metrics[metric]
    return {**metrics, "chance": p0, "centered": (score - p0) / (1 - p0),
            "centered_stderr": metrics[f"{metric}_stderr"] / (1 - p0)}


def _last_word_metrics(results: list[tuple[float, bool]]) -> dict[str, float]:
    ll = np.array([s for s, _ in results])
    greedy = np.array([float(g) for _, g in results])
    ppl = math.exp(-ll.mean())
    # Delta method: d exp(-m) = exp(-m) dm (lm-eval bootstraps this; the delta method needs no resampling).
    return {"acc": float(greedy.mean()), "acc_stderr": mean_stderr(greedy),
            "ppl": ppl, "ppl_stderr": ppl * mean_stderr(ll), "chance": 0.0, "centered": float(greedy.mean())}


def generation_metrics(references: list[tuple[str, ...]], completions: list[str],
                       seed: int = 0) -> dict[str, float]:
    """Exact match with its closed-form stderr, and token F1 with a bootstrap stderr seeded by `seed`
    (F1 is not 0/1, and the harness bootstraps what has no simple formula)."""
    em = np.array([exact_match(c, refs) for c, refs in zip(completions, references)])
    f1 = np.array([token_f1(c, refs) for c, refs in zip(completions, references)])
    score = float(em.mean())
    return {"exact_match": score, "exact_match_stderr": mean_stderr(em),
            "f1": float(f1.mean()), "f1_stderr": bootstrap_stderr(f1, seed=seed),
            "acc": score, "acc_stderr": mean_stderr(em), "chance": 0.0, "centered": score}


class TaskNotEncodable(DataError):
    """A task none of whose drawn examples the model's tokenizer can encode (a char vocabulary)."""


def encodable(tokenizer: Tokenizer, example: Example) -> bool:
    try:
        for text in (example.context, *example.contexts, *example.continuations):
            tokenizer.encode(text)
    except DataError:
        return False
    return True


def _prompts(spec: TaskSpec, tokenizer: Tokenizer, pool: list[Example], indices: list[int],
             num_fewshot: int, seed: int) -> tuple[list[int], list[str]]:
    """The drawn indices whose text the tokenizer can encode, and their few-shot prefixes; few-shot
    examples come only from encodable ones too, so a shot never brings in a character the model lacks."""
    readable = [i for i in (range(len(pool)) if num_fewshot else indices) if encodable(tokenizer, pool[i])]
    allowed = set(readable)
    kept = [i for i in indices if i in allowed]
    if not kept:
        raise TaskNotEncodable(f"Task '{spec.name}': none of the task's {len(indices)} examples can be encoded by "
                        f"this model's {tokenizer.kind} tokenizer; evaluate a model trained with "
                        "data.tokenizer = 'byte' or 'bpe'.")
    if not num_fewshot:
        return kept, [""] * len(kept)
    # With every example encodable the positions are the indices, so the draws match an unfiltered pool.
    position = {i: k for k, i in enumerate(readable)}
    shots_pool = [pool[i] for i in readable]
    return kept, fewshot_prefixes(spec, shots_pool, [position[i] for i in kept], num_fewshot, seed)


def choice_requests(examples: list[Example], prefixes: list[str]) -> list[list[tuple[str, str]]]:
    """Each example's (context, continuation) pairs, one per choice, as lm-eval requests them."""
    return [[(prefix + c, ex.continuations[0]) for c in ex.contexts] if ex.contexts
            else [(prefix + ex.context, cont) for cont in ex.continuations]
            for ex, prefix in zip(examples, prefixes)]


def score_choices(model: torch.nn.Module, tokenizer: Tokenizer, requests: list[list[tuple[str, str]]],
                  batch_size: int = 16) -> list[list[float]]:
    """Each choice's log P(continuation | context): choices after one shared context packed into a
    row (packing.py), and a context per choice (partial scoring) scored pair by pair."""
    shared = [g for g, pairs in enumerate(requests) if len({ctx for ctx, _ in pairs}) == 1]
    scores: list[list[float]] = [[] for _ in requests]
    groups = [(requests[g][0][0], [cont for _, cont in requests[g]]) for g in shared]
    for g, group in zip(shared, choice_loglikelihoods(model, tokenizer, groups, batch_size)):
        scores[g] = [s for s, _ in group]
    apart = sorted(set(range(len(requests))) - set(shared))
    flat = iter(loglikelihood(model, tokenizer, [pair for g in apart for pair in requests[g]], batch_size))
    for g in apart:
        scores[g] = [next(flat)[0] for _ in requests[g]]
    return scores


BATCHES_PER_PART = 8  # examples are scored this many batches at a time, so progress can be told between parts


def _in_parts(items: list, score: Callable[[list], list], size: int,
              progress: Callable[[int, int], None] | None) -> list:
    """score(items), `size` items at a time (each item's result does not depend on the others in its
    part), telling `progress(done, total)` after each part."""
    results: list = []
    for start in range(0, len(items), size):
        results += score(items[start : start + size])
        if progress is not None:
            progress(len(results), len(items))
    return results


def evaluate_task(model: torch.nn.Module, tokenizer: Tokenizer, spec: TaskSpec, limit: int | None = None,
                  num_fewshot: int = 0, seed: int = 0, batch_size: int = 16,
                  progress: Callable[[int, int], None] | None = None) -> TaskResult:
    """Score `limit` examples of the task (a subset drawn with `seed`; all when None). Deterministic
    for a seed: the subset, the few-shot draws and the F1 bootstrap all come from it. `progress(done,
    total)` hears of the examples scored, every BATCHES_PER_PART batches."""
    pool = load_examples(spec)
    if limit is None or limit >= len(pool):
        indices = list(range(len(pool)))
    else:
        indices = sorted(random.Random(seed).sample(range(len(pool)), limit))
    kept, prefixes = _prompts(spec, tokenizer, pool, indices, num_fewshot, seed)
    examples = [pool[i] for i in kept]
    contexts = [prefix + ex.context for prefix, ex in zip(prefixes, examples)]
    part = batch_size * BATCHES_PER_PART
    if progress is not None:
        progress(0, len(examples))
    if spec.type == "generation":
        completions = _in_parts(contexts, lambda some: generate_until(model, tokenizer, some, spec.until,
                                                                      spec.max_gen_tokens, batch_size), part, progress)
        metrics = generation_metrics([ex.choices for ex in examples], completions, seed)
    elif spec.type == "last_word":
        requests = [(ctx, ex.continuations[ex.gold]) for ctx, ex in zip(contexts, examples)]
        metrics = _last_word_metrics(_in_parts(requests, lambda some: loglikelihood(model, tokenizer, some, batch_size),
                                               part, progress))
    else:
        requests = choice_requests(examples, prefixes)
        per_example = _in_parts(requests, lambda some: score_choices(model, tokenizer, some, batch_size), part, progress)
        scores = [s for group in per_example for s in group]
        tokens = [len(encode_pair(tokenizer, ctx, cont)[1]) for pairs in requests for ctx, cont in pairs]
        metrics = _multiple_choice_metrics(examples, scores, tokens, spec.metric)
    return TaskResult(spec.name, spec.version, len(examples), num_fewshot, seed, metrics,
                      skipped=len(indices) - len(kept), metric=spec.metric)
