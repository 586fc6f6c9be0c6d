"""Training batches drawn statelessly from (seed, step, micro), and fixed validation windows.

A batch is a function of the seed, the step and the micro-batch index only, so a resumed run sees
exactly the batches an uninterrupted run would, with no sampler state in the checkpoint.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ablab.errors import DataError


def _require_window(tokens: np.ndarray, seq_len: int, split: str) -> None:
    if seq_len < 1:
        raise DataError(f"data.seq_len must be positive, not {seq_len}.")
    if len(tokens) < seq_len + 1:
        raise DataError(
            f"The {split} split has {len(tokens)} tokens, too few for one sequence of data.seq_len={seq_len} "
            f"plus its target; lower data.seq_len to at most {max(len(tokens) - 1, 1)} or use a larger corpus."
        )


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, (len(starts), seq_len) int64 each, from windows of seq_len + 1."""
    index = starts[:, None] + np.arange(seq_len + 1)
    window = torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


class BatchSampler:
    """Random training windows: `batch(step, micro)` draws offsets from default_rng([seed, step, micro])."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int):
        _require_window(tokens, seq_len, "training")
        if batch_size < 1:
            raise DataError(f"data.batch_size must be positive, not {batch_size}.")
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        # SeedSequence takes non-negative integers only; a negative seed maps to its 64-bit two's complement.
        self.seed = seed % 2**64

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (batch_size, seq_len) int64 on the CPU; y[:, t] is the token after x[:, t]."""
        rng = np.random.default_rng([self.seed, step, micro])
        # Largest start leaves room for seq_len inputs plus the final target.
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        return _windows(self.tokens, starts, self.seq_len)


def val_windows(n_available: int, seq_len: int, n_tokens: int) -> np.ndarray:
    """Start offsets of evenly spaced, non-overlapping windows of seq_len + 1 tokens covering about
    `n_tokens` predicted tokens: ceil(n_tokens / seq_len) windows, at least one, at most as many as fit.
    The first starts at 0 and the last ends at the last token."""
    span = seq_len + 1
    count = max(1, min(-(-n_tokens // seq_len), n_available // span))
    if count == 1:
        return np.zeros(1, dtype=np.int64)
    # Integer spacing of at least `span`, since count * span <= n_available.
    return np.arange(count, dtype=np.int64) * (n_available - span) // (count - 1)


def val_batches(
    tokens: np.ndarray, seq_len: int, n_tokens: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same validation batches for every run on these tokens (the last batch may be smaller).
    Bad arguments raise here, at the call, not at the first iteration."""
    _require_window(tokens, seq_len, "validation")
    if batch_size < 1:
        raise DataError(f"data.batch_size must be positive, not {batch_size}.")
    starts = val_windows(len(tokens), seq_len, n_tokens)
    return (_windows(tokens, starts[i : i + batch_size], seq_len) for i in range(0, len(starts), batch_size))
