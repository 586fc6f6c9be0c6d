"""Multiple-choice scoring with the context computed once: an example's answer choices packed into
one row after their common context.

A row is context + choice 1 + choice 2 + ... (each choice without its last token, which is only
predicted). A mask lets each choice's tokens see the context and the earlier tokens of the same
choice, never another choice, and each choice's positions start where the context ends, so every
choice is scored exactly as if it followed the context alone (lm-eval's request for it). The context,
often most of the tokens (hellaswag, few-shot prompts), is read once instead of once per choice, and
rows of several examples share a forward pass.

An example whose context plus its longest choice does not fit seq_len is scored the usual way
(scoring.loglikelihood, which left-truncates per choice), and so is one whose choices are longer
than its context (little to share, longer rows); both paths give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ablab.data.tokenizer import Tokenizer
from ablab.evals.loglik import encode_pair, loglikelihood, summed_logprobs


@dataclass
class PackedRow:
    tokens: list[int]  # model input: context, then each choice but its last token
    positions: list[int]
    segment: list[int]  # 0 for the context, j + 1 for choice j
    targets: list[list[tuple[int, int]]]  # per choice: (row index predicting it, token id)


def pack(context_ids: list[int], choice_ids: list[list[int]]) -> PackedRow:
    n_ctx = len(context_ids)
    tokens, positions, segment = list(context_ids), list(range(n_ctx)), [0] * n_ctx
    targets = []
    for j, ids in enumerate(choice_ids):
        start = len(tokens)
        # The first choice token is predicted by the context's last token; token t by token t - 1.
        predictors = [n_ctx - 1] + [start + t for t in range(len(ids) - 1)]
        targets.append(list(zip(predictors, ids)))
        tokens += ids[:-1]
        positions += range(n_ctx, n_ctx + len(ids) - 1)
        segment += [j + 1] * (len(ids) - 1)
    return PackedRow(tokens, positions, segment, targets)


def _mask(rows: list[PackedRow], width: int) -> torch.Tensor:
    """(B, 1, width, width): causal, and a choice token sees only the context and its own choice;
    padding sees itself only (a query row with nothing to attend to would give NaN)."""
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        segment[b, : len(row.segment)] = torch.tensor(row.segment)
    q, k = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = causal & ((k == 0) | (k == q)) & (q >= 0) & (k >= 0)
    return (visible | torch.eye(width, dtype=torch.bool))[:, None]


@torch.no_grad()
def _score_rows(model: torch.nn.Module, rows: list[PackedRow], device: torch.device) -> list[list[tuple[float, bool]]]:
    width = max(len(r.tokens) for r in rows)
    idx = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        idx[b, : len(row.tokens)] = torch.tensor(row.tokens)
        positions[b, : len(row.positions)] = torch.tensor(row.positions)
    hidden = model.hidden_states(idx.to(device), positions=positions.to(device),
                                 mask=_mask(rows, width).to(device))  # (B, T, C)
    choices = [targets for row in rows for targets in row.targets]
    batch = torch.tensor([b for b, row in enumerate(rows) for targets in row.targets for _ in targets])
    at = torch.tensor([i for targets in choices for i, _ in targets])
    ids = torch.tensor([t for targets in choices for _, t in targets])
    flat = iter(summed_logprobs(model, hidden[batch.to(device), at.to(device)], ids, [len(t) for t in choices]))
    return [[next(flat) for _ in row.targets] for row in rows]


def choice_loglikelihoods(model: torch.nn.Module, tokenizer: Tokenizer, groups: list[tuple[str, list[str]]],
                          batch_size: int = 16) -> list[list[tuple[float, bool]]]:
    """Per (context, continuations) group, (log P(continuation | context), greedy) of each
    continuation: packed rows where they fit the model's seq_len, per-choice windows otherwise."""
    results: list[list[tuple[float, bool]] | None] = [None] * len(groups)
    packed: list[tuple[int, PackedRow]] = []
    unpacked: list[int] = []
    for g, (context, continuations) in enumerate(groups):
        pairs = [encode_pair(tokenizer, context, c) for c in continuations]
        context_ids = pairs[0][0]
        fits = all(c == context_ids and 0 < len(k) and len(c) + len(k) <= model.seq_len + 1 for c, k in pairs)
        # Packing saves the repeated context but makes longer rows (attention grows with their
        # square); it pays when the context is at least as long as a choice on average.
        worth_it = len(context_ids) * len(pairs) >= sum(len(k) for _, k in pairs)
        if fits and context_ids and worth_it:
            packed.append((g, pack(context_ids, [k for _, k in pairs])))
        else:  # truncated per choice (or an encoding that differs per choice): the usual path
            unpacked.append(g)
    packed.sort(key=lambda item: -len(item[1].tokens))  # longest first: little padding per batch
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(packed), batch_size):
            chunk = packed[start : start + batch_size]
            for (g, _), scores in zip(chunk, _score_rows(model, [row for _, row in chunk], device)):
                results[g] = scores
    finally:
        model.train(was_training)
    if unpacked:
        requests = [(groups[g][0], c) for g in unpacked for c in groups[g][1]]
        flat = iter(loglikelihood(model, tokenizer, requests, batch_size))
        for g in unpacked:
            results[g] = [next(flat) for _ in groups[g][1]]
    return results
