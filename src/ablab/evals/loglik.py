"""The log-likelihood core every scored task uses: a context and its continuation tokenized as
lm-evaluation-harness does, windows that fit the model's seq_len, and log P(continuation | context)
with whether greedy decoding would have produced it.

    scores = loglikelihood(model, tokenizer, [("The capital of France is", " Paris")])  # [(logp, greedy)]
"""

from __future__ import annotations

import torch

from ablab.data.tokenizer import Tokenizer
from ablab.errors import UserError


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


def _windows(context_ids: list[int], continuation_ids: list[int], seq_len: int) -> list[tuple[list[int], int]]:
    """(window, tokens scored) pieces covering the continuation: each window holds at most
    seq_len + 1 tokens, the model reads all but the last, and its last `scored` predictions are
    continuation tokens. A continuation longer than seq_len is scored in consecutive pieces, each
    token with as much left context as fits (as a rolling log-likelihood is), so a long choice is
    scored whole instead of refused or cut."""
    if not continuation_ids:
        raise UserError("A continuation encodes to no tokens; give every choice some text.")
    if not context_ids:
        raise UserError("A context encodes to no tokens, so its first continuation token has no "
                        "prediction; give every example a non-empty context.")
    tokens = context_ids + continuation_ids
    pieces, end, remaining = [], len(tokens), len(continuation_ids)
    while remaining:
        scored = min(remaining, seq_len)
        pieces.append((tokens[max(0, end - seq_len - 1) : end], scored))
        end, remaining = end - scored, remaining - scored
    return pieces


@torch.no_grad()
def _score_batch(model: torch.nn.Module, windows: list[list[int]], n_cont: list[int],
                 device: torch.device) -> list[tuple[float, bool]]:
    width = max(len(w) for w in windows) - 1
    # Right padding: under a causal mask, pad tokens after a row's end cannot change its logits.
    idx = torch.zeros(len(windows), width, dtype=torch.long)
    for row, w in enumerate(windows):
        idx[row, : len(w) - 1] = torch.tensor(w[:-1])
    hidden = model.hidden_states(idx.to(device))  # (B, T, C)
    # The head and softmax only where a continuation token is predicted: with a large vocabulary
    # they cost as much as the rest of the model, and the context's predictions are never read.
    rows = torch.tensor([row for row, n in enumerate(n_cont) for _ in range(n)])
    cols = torch.tensor([len(w) - 1 - n + i for w, n in zip(windows, n_cont) for i in range(n)])
    targets = torch.tensor([t for w, n in zip(windows, n_cont) for t in w[-n:]])
    return summed_logprobs(model, hidden[rows.to(device), cols.to(device)], targets, n_cont)


def summed_logprobs(model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                    counts: list[int]) -> list[tuple[float, bool]]:
    """Hidden states (N, C) of the positions predicting `targets` (N,), consecutive runs of `counts`
    belonging to one request: (sum of the targets' log-probabilities, whether all are the argmax) each."""
    logits = model.head(hidden).float().cpu()  # (N, vocab)
    chosen = logits.gather(1, targets[:, None])[:, 0]
    picked = chosen - torch.logsumexp(logits, dim=-1)  # log-softmax at the targets only
    # Greedy: the target is the argmax. amax is ~9x faster than argmax on CPU; argmax then settles
    # only the rows where the target reaches the max, so a tie goes to the first index as in lm-eval.
    hits = chosen >= logits.amax(dim=-1)
    rows = hits.nonzero()[:, 0]
    hits[rows] = logits[rows].argmax(dim=-1) == targets[rows]
    scores, start = [], 0
    for n in counts:
        scores.append((picked[start : start + n].sum().item(), bool(hits[start : start + n].all())))
        start += n
    return scores


def loglikelihood(model: torch.nn.Module, tokenizer: Tokenizer, requests: list[tuple[str, str]],
                  batch_size: int = 16) -> list[tuple[float, bool]]:
    """(sum of log P(continuation | context), whether every continuation token is the argmax) per
    request, with the context left-truncated so context + continuation fits model.seq_len (a longer
    continuation is scored in pieces, see _windows)."""
    windows, n_cont, owner = [], [], []
    for request, (ctx, cont) in enumerate(requests):
        for window, scored in _windows(*encode_pair(tokenizer, ctx, cont), model.seq_len):
            windows.append(window)
            n_cont.append(scored)
            owner.append(request)
    # Longest first, as lm-eval orders requests, so each batch pads little.
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals, greedy = [0.0] * len(requests), [True] * len(requests)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            scores = _score_batch(model, [windows[i] for i in chunk], [n_cont[i] for i in chunk], device)
            for i, (total, is_greedy) in zip(chunk, scores):
                totals[owner[i]] += total
                greedy[owner[i]] = greedy[owner[i]] and is_greedy
    finally:
        model.train(was_training)
    return list(zip(totals, greedy))
