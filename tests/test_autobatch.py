"""The largest micro-batch under a memory budget: larger under a larger budget, within the budget in a
measured run, cached in the lab, and one sentence when nothing fits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ablab import config as C
from ablab.errors import UserError
from ablab.train import autobatch

SHAPE = ["model.d_model=128", "model.n_layers=2", "model.n_heads=4", "model.d_ff=256", "data.seq_len=256",
         "data.tokenizer=byte", "train.device=cpu"]

MEASURED_RUN = """
import json, sys
from ablab import config as C
from ablab.train.profile import profile
row, = profile(C.load(None, json.loads(sys.argv[1])), 256, [int(sys.argv[2])], steps=2)
print(row.peak_mb)
"""


def test_a_larger_budget_gives_a_larger_batch_that_a_real_run_keeps_within(one_thread):
    cfg = C.load(None, SHAPE)
    small, large = autobatch.largest_batch(cfg, 256, 100), autobatch.largest_batch(cfg, 256, 300)
    assert 1 < small.batch_size < large.batch_size
    assert small.measured_mb <= 0.85 * 100 and large.measured_mb <= 0.85 * 300  # within the budget less its margin
    over = [mb for size, mb in small.probed if size == small.batch_size + 1]
    assert over and over[0] > 0.85 * 100  # one more sequence would not have fitted: the bisection is tight
    for choice in (small, large):  # a fresh process trains at the chosen size: its peak rise stays in budget
        peak = subprocess.run([sys.executable, "-c", MEASURED_RUN, json.dumps(SHAPE), str(choice.batch_size)],
                              capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1",
                                                                                "PATH": "/usr/bin:/bin"})
        assert 0 < float(peak.stdout.strip()) <= choice.budget_mb, (choice, peak.stdout)


def test_the_choice_is_cached_in_the_lab(tmp_path, monkeypatch, one_thread):
    cfg = C.load(None, SHAPE)
    first = autobatch.cached_batch(tmp_path, cfg, 256, 100)
    assert json.loads((tmp_path / ".ablab" / "autobatch.json").read_text())  # written
    def probed_again(*args, **kwargs):
        raise LookupError("probed again")

    monkeypatch.setattr(autobatch, "largest_batch", probed_again)
    again = autobatch.cached_batch(tmp_path, C.replace(cfg, {"data.batch_size": 7, "seed": 3}), 256, 100)
    assert again.batch_size == first.batch_size  # the batch size and the seed are not part of the key
    with pytest.raises(LookupError, match="probed again"):  # another shape is probed
        autobatch.cached_batch(tmp_path, C.replace(cfg, {"model.d_model": 64}), 256, 100)


def test_an_impossible_budget_is_one_sentence(one_thread):
    with pytest.raises(UserError, match=r"Not even one sequence of data.seq_len=256 fits train.memory_budget_mb=5 "
                                        r"\(one needs \d+ MB\); raise train.memory_budget_mb"):
        autobatch.largest_batch(C.load(None, SHAPE), 256, 5)
