"""Packed multiple-choice scoring: an example's choices after one shared context give exactly the
scores of scoring each (context, choice) alone, and the fallback covers what does not fit."""

from __future__ import annotations

import pytest
import torch

from ablab.config import ModelConfig
from ablab.data.tokenizer import ByteTokenizer
from ablab.evals import TASKS, load_examples, loglikelihood
from ablab.evals.packing import choice_loglikelihoods, pack
from ablab.model.gpt import GPT


def random_gpt(seq_len: int, positions: str = "rope") -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, init_std=0.2, positions=positions)
    return GPT(cfg, 256, seq_len).eval()


def test_pack_lays_out_choices_after_the_context():
    row = pack([1, 2, 3], [[7, 8], [9]])
    assert row.tokens == [1, 2, 3, 7] and row.positions == [0, 1, 2, 3] and row.segment == [0, 0, 0, 1]
    assert row.targets == [[(2, 7), (3, 8)], [(2, 9)]]  # the context's last token predicts each first token


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_packed_scores_equal_scoring_each_choice_alone(positions):
    model, tok = random_gpt(64, positions), ByteTokenizer()
    groups = [("the cat sat on the", [" mat", " hat and", " dog"]), ("a b c d e f", [" g", " z"]),
              ("x", [" long answer here", " y"])]  # the last: choices longer than the context, not packed
    packed = choice_loglikelihoods(model, tok, groups, batch_size=2)
    alone = loglikelihood(model, tok, [(c, k) for c, ks in groups for k in ks], batch_size=1)
    flat = [score for group in packed for score in group]
    assert [g for _, g in flat] == [g for _, g in alone]
    for (a, _), (b, _) in zip(flat, alone):
        assert a == pytest.approx(b, abs=1e-4)


def test_real_task_scores_match_with_truncation_fallback(shared_data):
    tok = ByteTokenizer()
    examples = load_examples(TASKS["hellaswag"], limit=12)
    groups = [(ex.context, list(ex.continuations)) for ex in examples]
    for seq_len in (512, 96):  # everything packs / most contexts are left-truncated per choice
        model = random_gpt(seq_len)
        packed = [s for group in choice_loglikelihoods(model, tok, groups, batch_size=4) for s, _ in group]
        alone = [s for s, _ in loglikelihood(model, tok, [(c, k) for c, ks in groups for k in ks], batch_size=4)]
        assert packed == pytest.approx(alone, abs=1e-3)
