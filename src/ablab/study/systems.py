"""The memory / systems addendum of a memory study: each arm measured as `ablab profile` measures it.

A study of category "memory" asks where memory goes, which a run's peak alone does not say. After
its runs, each arm is profiled at the micro-batch its runs trained with (an "auto" batch as chosen
for them): weights, gradients and optimizer state from their tensors' bytes, activations from the
bytes autograd saves, the measured peak (CUDA max allocated; on a CPU the RSS rise), step time,
tokens/s and MFU (ablab.train.profile). The rows are kept with the study in the ledger, so that the
sheet, which imports no torch, prints them; profiling again replaces them.
"""

from __future__ import annotations

from pathlib import Path

from ablab.config import Config
from ablab.data.prepare import prepare_data
from ablab.store.ledger import Ledger
from ablab.train import autobatch
from ablab.train.profile import profile

PROFILE_STEPS = 2  # timed steps per arm: the addendum's step time is a small-sample median


def profile_arms(lab: Path, study: str, arm_configs: dict[str, Config]) -> dict[str, dict]:
    """Profile each arm once at its runs' per-process micro-batch; stored as the study's `profile`."""
    rows = {}
    for arm, cfg in arm_configs.items():
        vocab = prepare_data(cfg.data).tokenizer.vocab_size
        cfg, _ = autobatch.resolve(cfg, vocab, lab, cfg.train.nproc)
        row, = profile(cfg, vocab, [max(1, cfg.data.batch_size // cfg.train.nproc)], steps=PROFILE_STEPS)
        rows[arm] = row.as_dict()
    with Ledger(lab) as ledger:
        ledger.update_study_data(study, {"profile": rows})
    return rows
