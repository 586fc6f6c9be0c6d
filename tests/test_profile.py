"""ablab profile: the memory parts are the sizes of real tensors, activations grow with the batch, and
the command prints a table per architecture and writes its figure."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ablab import config as C
from ablab.cli.profile import profile_app
from ablab.train.profile import profile

from conftest import TINY

TINY_BYTE = [*TINY, "data.tokenizer=byte", "train.device=cpu"]


@pytest.mark.parametrize("optim", ["adamw", "muon"])
def test_memory_parts_are_the_tensors_and_activations_grow_with_the_batch(optim, one_thread):
    cfg = C.load(None, [*TINY_BYTE, f"optim.name={optim}"])
    small, middle, large = profile(cfg, 256, [2, 4, 8], steps=1)
    n_bytes = small.params * 4 / 2**20  # fp32 weights
    assert small.weights_mb == pytest.approx(n_bytes) and small.grads_mb == pytest.approx(n_bytes)
    if optim == "adamw":  # two moments per weight (and a one-element step count per tensor)
        assert small.optimizer_mb == pytest.approx(2 * n_bytes, rel=1e-3)
    else:  # a momentum buffer for the hidden matrices, two Adam moments for the rest: between 1x and 2x
        assert n_bytes < small.optimizer_mb < 2 * n_bytes
    # Saved tensors are affine in the batch: a per-sequence part (doubling with it) over a fixed one
    # (rotary tables, the causal mask); so 4 more sequences add twice what 2 more did.
    step_small, step_large = middle.activations_mb - small.activations_mb, large.activations_mb - middle.activations_mb
    assert step_small > 0 and step_large == pytest.approx(2 * step_small, rel=0.02)
    assert large.weights_mb == small.weights_mb and large.tokens_per_s > 0 and 0 < large.mfu < 1
    # The peak is measured per batch size (the process's peak RSS is reset before each): it grows with it.
    assert 0 < small.peak_mb < large.peak_mb and "RSS" in small.peak_means


def test_profile_prints_a_table_per_architecture_and_writes_the_figure(tmp_path, one_thread):
    result = CliRunner().invoke(profile_app, ["-c", "quickstart", "-c", "small", "--batch-sizes", "1,2", "--steps", "1",
                                              "--out", str(tmp_path / "prof"), *TINY_BYTE, "data.seq_len=32"])
    assert result.exit_code == 0, result.output
    assert "quickstart: 2L d64" in result.output and "small: 2L d64" in result.output
    assert "activations MB" in result.output and "tokens/s" in result.output
    assert (tmp_path / "prof.png").stat().st_size > 10_000 and (tmp_path / "prof.svg").exists()
    bad = CliRunner().invoke(profile_app, ["--batch-sizes", "8,x"])
    assert bad.exit_code != 0
