"""Text from a trained run: rebuild its model from the last checkpoint and continue a prompt."""

from __future__ import annotations

from pathlib import Path

import torch

from ablab import checkpoint
from ablab.data import prepare_data
from ablab.errors import CheckpointError, UserError
from ablab.model import GPT
from ablab.record import RunRecord


def sample(lab: Path, run_id: str, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int | None = 50, seed: int = 0) -> str:
    record = RunRecord.open(lab, run_id)
    cfg = record.config()
    data = prepare_data(cfg.data)
    model = GPT(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len)
    path, _ = checkpoint.latest_valid(record.checkpoints_dir)
    if path is None:
        raise CheckpointError(f"Run {record.run_id} has no intact checkpoint to sample from; resume or rerun it.")
    checkpoint.load(path, model)
    model.eval()
    ids = data.tokenizer.encode(prompt)
    if not ids:
        raise UserError("The prompt encodes to no tokens; give a non-empty --prompt.")
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(torch.tensor([ids]), max_new_tokens, temperature, top_k, generator)
    return data.tokenizer.decode(out[0].tolist())
