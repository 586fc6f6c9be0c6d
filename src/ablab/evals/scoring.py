"""Score a model on a task, as lm-evaluation-harness does for these task types.

    result = evaluate_task(model, tokenizer, TASKS["piqa"], limit=500)
    result.metrics["acc"], result.metrics["acc_stderr"], result.metrics["centered"]

Multiple choice: the choice with the highest summed log-probability is the answer (`acc`); `acc_norm`
divides each sum by the choice's length in characters (the harness's acc_norm). Last word: `acc` is
the fraction of targets whose every token is the greedy prediction, and `ppl` is lm-eval's
perplexity, exp(-mean over examples of the target's summed log-probability). Generation: greedy
decoding until a stop string, scored by SQuAD v1.1's exact match and token F1 (`acc` = exact match).

Examples the tokenizer cannot encode (a char tokenizer meets a character outside its corpus) are
skipped and counted in `TaskResult.skipped`; the metrics are over the rest.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ablab.data.tokenizer import Tokenizer
from ablab.errors import DataError, UserError
from ablab.evals.generation import bootstrap_stderr, exact_match, generate_until, token_f1
from ablab.evals.loglik import loglikelihood
from ablab.evals.packing import choice_loglikelihoods
from ablab.evals.tasks import Example, TaskSpec, load_examples


@dataclass
class TaskResult:
    task: str
    version: int
    n: int  # examples scored
    num_fewshot: int
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: int = 0  # drawn examples left out because the tokenizer cannot encode their text

    def to_dict(self) -> dict:
        return asdict(self)


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
        for text in (example.context, *example.continuations):
            tokenizer.encode(text)
    except DataError:
        return False
    return True


def _prompts(spec: TaskSpec, tokenizer: Tokenizer, pool: list[Example], indices: list[int],
             num_fewshot: int, seed: int) -> tuple[list[int], list[str]]:
    """The drawn indices whose text the tokenizer can encode, and their contexts; few-shot examples
    come only from encodable ones too, so a shot never brings in a character the model lacks."""
    readable = [i for i in (range(len(pool)) if num_fewshot else indices) if encodable(tokenizer, pool[i])]
    allowed = set(readable)
    kept = [i for i in indices if i in allowed]
    if not kept:
        raise TaskNotEncodable(f"Task '{spec.name}': none of the task's {len(indices)} examples can be encoded by "
                        f"this model's {tokenizer.kind} tokenizer; evaluate a model trained with "
                        "data.tokenizer = 'byte' or 'bpe'.")
    if not num_fewshot:
        return kept, [pool[i].context for i in kept]
    # With every example encodable the positions are the indices, so the draws match an unfiltered pool.
    position = {i: k for k, i in enumerate(readable)}
    shots_pool = [pool[i] for i in readable]
    return kept, fewshot_contexts(spec, shots_pool, [position[i] for i in kept], num_fewshot, seed)


def evaluate_task(model: torch.nn.Module, tokenizer: Tokenizer, spec: TaskSpec, limit: int | None = None,
                  num_fewshot: int = 0, seed: int = 0, batch_size: int = 16) -> TaskResult:
    """Score `limit` examples of the task (a subset drawn with `seed`; all when None). Deterministic
    for a seed: the subset, the few-shot draws and the F1 bootstrap all come from it."""
    pool = load_examples(spec)
    if limit is None or limit >= len(pool):
        indices = list(range(len(pool)))
    else:
        indices = sorted(random.Random(seed).sample(range(len(pool)), limit))
    kept, contexts = _prompts(spec, tokenizer, pool, indices, num_fewshot, seed)
    examples = [pool[i] for i in kept]
    if spec.type == "generation":
        completions = generate_until(model, tokenizer, contexts, spec.until, spec.max_gen_tokens, batch_size)
        metrics = generation_metrics([ex.choices for ex in examples], completions, seed)
    elif spec.type == "last_word":
        requests = [(ctx, ex.continuations[ex.gold]) for ctx, ex in zip(contexts, examples)]
        metrics = _last_word_metrics(loglikelihood(model, tokenizer, requests, batch_size))
    else:
        groups = [(ctx, list(ex.continuations)) for ctx, ex in zip(contexts, examples)]
        results = choice_loglikelihoods(model, tokenizer, groups, batch_size)
        metrics = _multiple_choice_metrics(examples, [s for group in results for s, _ in group])
    return TaskResult(spec.name, spec.version, len(examples), num_fewshot, seed, metrics,
                      skipped=len(indices) - len(kept))
