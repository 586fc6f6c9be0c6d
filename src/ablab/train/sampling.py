"""A trained run's model, rebuilt from its newest intact checkpoint, and text continued from a prompt.

    model, tokenizer, step = load_run_model(lab, run_id)   # eval mode, on the CPU
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ablab.data.prepare import prepare_data
from ablab.data.tokenizer import Tokenizer
from ablab.errors import CheckpointError, UserError
from ablab.model.gpt import GPT
from ablab.store import checkpoint
from ablab.store.record import RunRecord


def load_run_model(lab: Path, run_id: str) -> tuple[GPT, Tokenizer, int]:
    """The run's model with the weights of its newest intact checkpoint, its tokenizer, and the step
    that checkpoint was written at."""
    record = RunRecord.open(lab, run_id)
    cfg = record.config()
    data = prepare_data(cfg.data)
    model = GPT(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len)
    path, _ = checkpoint.latest_valid(record.checkpoints_dir)
    if path is None:
        raise CheckpointError(f"Run {record.run_id} has no intact checkpoint to load; resume or rerun it.")
    loop = checkpoint.load(path, model)
    return model.eval(), data.tokenizer, loop.step


def sample(lab: Path, run_id: str, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int | None = 50, seed: int = 0) -> str:
    """`prompt` continued by `max_new_tokens` tokens sampled at `temperature` (0 = greedy) among the
    `top_k` most likely (None = all); the arguments are checked before the model is loaded."""
    if max_new_tokens < 1:
        raise UserError(f"Sampling needs at least one new token, not {max_new_tokens}; e.g. --tokens 200.")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"The temperature must be a finite number of 0 (greedy) or more, not {temperature}; "
                        "e.g. --temperature 0.8.")
    if top_k is not None and top_k < 0:
        raise UserError(f"top_k must be 0 (all tokens) or more, not {top_k}; e.g. --top-k 50.")
    model, tokenizer, _ = load_run_model(lab, run_id)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("The prompt encodes to no tokens; give a non-empty --prompt.")
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(torch.tensor([ids]), max_new_tokens, temperature, top_k, generator)
    return tokenizer.decode(out[0].tolist())
