"""The evaluator behind the README's nanoGPT comparison (benchmarks/full_val_loss.py): every token
after the first is predicted exactly once, each from the tokens before it in its window."""

import importlib.util
import math
from pathlib import Path

import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "full_val_loss.py"
spec = importlib.util.spec_from_file_location("full_val_loss", SCRIPT)
full_val_loss = importlib.util.module_from_spec(spec)
spec.loader.exec_module(full_val_loss)

VOCAB = 7


def test_uniform_logits_score_log_vocab_over_every_token():
    ids = [i % VOCAB for i in range(1000)]  # 999 predictions: 15 windows of 64 and a last one of 39
    loss, count = full_val_loss.full_split_loss(lambda x: torch.zeros(*x.shape, VOCAB), ids, context=64, batch=4)
    assert count == len(ids) - 1
    assert math.isclose(loss, math.log(VOCAB), rel_tol=1e-6)


def test_targets_are_the_next_tokens_of_each_window():
    ids = [i % VOCAB for i in range(1000)]

    def next_token(x: torch.Tensor) -> torch.Tensor:  # certain that token t is followed by t + 1
        return torch.nn.functional.one_hot((x + 1) % VOCAB, VOCAB).float() * 50

    loss, count = full_val_loss.full_split_loss(next_token, ids, context=100, batch=3)
    assert count == 999 and loss < 1e-6
    shifted = full_val_loss.full_split_loss(lambda x: torch.nn.functional.one_hot(x, VOCAB).float() * 50, ids, 100)[0]
    assert shifted > 40  # predicting the input itself, not the next token, is wrong everywhere
