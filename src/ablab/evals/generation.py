"""Greedy generation with a stop rule, and the SQuAD v1.1 answer metrics (exact match, token F1).

    completions = generate_until(model, tokenizer, ["Question: ...\\nAnswer:"], until=["\\n"], max_gen_tokens=32)
    exact_match(completions[0], ["Denver Broncos"]), token_f1(completions[0], ["Denver Broncos"])

The metrics are those of the official `evaluate-v1.1.py`: both texts are normalized (lower case, no
punctuation, no articles a/an/the, single spaces), F1 is over the normalized words, and an answer's
score is its best over the reference answers. Scores are fractions in [0, 1], not the script's percent.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np
import torch

from ablab.data.tokenizer import Tokenizer
from ablab.errors import UserError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official script's normalize_answer, in its order: lower, drop punctuation, drop articles,
    collapse whitespace. Punctuation is deleted, not spaced: 'Denver-Broncos' becomes 'denverbroncos'."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(prediction: str, reference: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = collections.Counter(predicted) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:  # also when either side normalizes to nothing, as the official script does
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, references: list[str] | tuple[str, ...]) -> float:
    """1.0 when the normalized prediction equals some normalized reference, else 0.0."""
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(ref) for ref in references))


def token_f1(prediction: str, references: list[str] | tuple[str, ...]) -> float:
    """The best F1 over the references of the normalized words (counted with multiplicity)."""
    return max((_f1(prediction, ref) for ref in references), default=0.0)


def bootstrap_stderr(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> float:
    """The standard deviation of the mean over `n_resamples` resamples with replacement, drawn with
    numpy's generator seeded by `seed` (as lm-eval bootstraps metrics without a closed form)."""
    n = len(values)
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    means = np.asarray(values, dtype=float)[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    return float(means.std(ddof=1))


def _cut_at_stop(text: str, until: tuple[str, ...] | list[str]) -> int | None:
    """Where the first stop string begins in `text`, or None when none occurs."""
    found = [text.find(stop) for stop in until if stop]
    found = [i for i in found if i >= 0]
    return min(found) if found else None


def _next_tokens(model: torch.nn.Module, windows: list[list[int]], device: torch.device) -> list[int]:
    width = max(len(w) for w in windows)
    # Right padding: under a causal mask, pad tokens after a row's end cannot change its logits.
    idx = torch.zeros(len(windows), width, dtype=torch.long)
    for row, w in enumerate(windows):
        idx[row, : len(w)] = torch.tensor(w)
    logits = model(idx.to(device))  # (B, T, vocab)
    last = torch.tensor([len(w) - 1 for w in windows], device=logits.device)
    return logits[torch.arange(len(windows), device=logits.device), last].float().argmax(-1).tolist()


def _greedy_batch(model: torch.nn.Module, tokenizer: Tokenizer, prompts: list[list[int]],
                  until: tuple[str, ...] | list[str], max_gen_tokens: int, device: torch.device) -> list[str]:
    generated: list[list[int]] = [[] for _ in prompts]
    texts = [""] * len(prompts)
    active = list(range(len(prompts)))
    for _ in range(max_gen_tokens):
        if not active:
            break
        # Past seq_len the window slides, as GPT.generate does.
        windows = [(prompts[r] + generated[r])[-model.seq_len:] for r in active]
        still = []
        for r, token in zip(active, _next_tokens(model, windows, device)):
            generated[r].append(token)
            texts[r] = tokenizer.decode(generated[r])
            cut = _cut_at_stop(texts[r], until)
            if cut is None:
                still.append(r)
            else:
                texts[r] = texts[r][:cut]
        active = still
    return texts


@torch.no_grad()
def generate_until(model: torch.nn.Module, tokenizer: Tokenizer, contexts: list[str],
                   until: tuple[str, ...] | list[str] = ("\n",), max_gen_tokens: int = 32,
                   batch_size: int = 16) -> list[str]:
    """Each context's greedy continuation, cut before the first stop string in `until` and after at
    most max_gen_tokens tokens (lm-eval's generate_until with temperature 0)."""
    if max_gen_tokens < 1:
        raise UserError(f"max_gen_tokens is {max_gen_tokens}; give a generation task at least 1 token.")
    # lm-eval left-truncates the context to the window minus the generation length. A tiny model's
    # seq_len can be as short as the generation length, so the context keeps at least half the window.
    budget = model.seq_len - min(max_gen_tokens, model.seq_len // 2)
    prompts = [tokenizer.encode(c)[-budget:] for c in contexts]
    if any(not p for p in prompts):
        raise UserError("A context encodes to no tokens, so generation has nothing to continue; "
                        "give every example a non-empty context.")
    # Longest first, as lm-eval orders requests, so each batch pads little.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completions = [""] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            texts = _greedy_batch(model, tokenizer, [prompts[i] for i in chunk], until, max_gen_tokens, device)
            for i, text in zip(chunk, texts):
                completions[i] = text
    finally:
        model.train(was_training)
    return completions
