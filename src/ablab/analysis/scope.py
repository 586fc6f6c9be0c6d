"""The scope of a claim, from the records: a verdict holds at the model size, token budget, corpus,
tokenizer, comparison axis, seeds and hardware it was tested at, and for the metric where it was
read, and nowhere else until tested there. Every verdict sentence ablab writes (`study status`, the
sheet's interpretation, the lab log, the HTML report) carries this scope, so a result found at 1M
parameters on a CPU is never read as one about a GPU-sized model.

    scopes = scope_sentences(record["spec"], cells, results)
    scopes["tied"]  # "supported at 0.11M params, 20,480 tokens of tiny-shakespeare (char), equal steps, ..."
"""

from __future__ import annotations

import math
from typing import Any

from ablab.analysis.verdicts import BASELINE_ARM, ArmResult

AXIS_WORDS = {"tokens": "equal tokens", "steps": "equal steps", "wall_clock": "equal wall-clock time",
              "flops": "equal FLOPs"}
METRIC_WORDS = {"val_loss": "val loss", "val_bpb": "val bits per byte", "val_ppl": "val perplexity",
                "train_loss": "train loss", "tokens_per_s": "tokens/s", "peak_memory_mb": "peak memory (MB)",
                "mfu": "MFU"}


def _size(count: float) -> str:
    """A parameter count as the field says it: 1.1M, 124M, 350K."""
    if count >= 1e9:
        return f"{count / 1e9:.3g}B"
    if count >= 1e6:
        return f"{count / 1e6:.3g}M"
    return f"{count / 1e3:.3g}K" if count >= 1e3 else f"{count:g}"


def _spread(values: list, show) -> str | None:
    """One value, or 'low-high' when the runs disagree (a width change, a stop on time); None if none."""
    present = sorted({v for v in values if v is not None})
    if not present:
        return None
    return show(present[0]) if len(present) == 1 else f"{show(present[0])}-{show(present[-1])}"


def _data_words(config: dict) -> str:
    """'tiny-shakespeare (char)', 'tinystories (bpe, vocab 4096)' or a mixture's parts."""
    data = config.get("data", {})
    corpus = data.get("corpus", "?")
    if isinstance(corpus, dict):
        corpus = "a mixture of " + ", ".join(f"{name} {weight:g}" for name, weight in corpus.items())
    tokenizer = str(data.get("tokenizer", "?"))
    if tokenizer == "bpe" and data.get("vocab_size"):
        tokenizer += f", vocab {data['vocab_size']}"
    return f"{corpus} ({tokenizer})"


def hardware_class(run) -> str:
    """'GPU (NVIDIA H100 80GB HBM3)' or 'CPU (AMD EPYC 7B13)': the device a run trained on (its result's
    hardware), named from the machine (its provenance); an imported record without the device says
    what its machine had."""
    device = run.result.get("hardware", {}) or {}
    host = run.provenance.get("host", {}) or {}
    gpu = host.get("gpu", {}) or {}
    if device.get("device") == "cuda" or (not device and gpu.get("count")):
        name = device.get("gpu") or next(iter(gpu.get("models") or []), "unknown model")
        return f"GPU ({name})"
    if device.get("device") not in (None, "cpu"):
        return device["device"].upper()  # mps
    return f"CPU ({host.get('cpu') or 'unknown model'})"


def _mixed(words: list[str]) -> str:
    distinct = sorted(set(words))
    return distinct[0] if len(distinct) == 1 else "mixed: " + "; ".join(distinct)


def arm_scope(spec: dict, runs: list) -> str:
    """The conditions an arm's finished `runs` were tested under, as one clause (no verdict, no effect)."""
    done = [r for r in runs if r is not None and r.status == "finished"]
    if not done:
        return "no finished runs yet"
    params = _spread([r.result.get("params") for r in done], _size)
    tokens = _spread([r.result.get("tokens_seen") for r in done], lambda t: f"{t:,}")
    parts = [f"{params or '?'} params", f"{tokens or '?'} tokens of {_mixed([_data_words(r.config) for r in done])}",
             AXIS_WORDS.get(spec.get("axis"), str(spec.get("axis"))), f"{len(done)} seed{'s' * (len(done) != 1)}",
             _mixed([hardware_class(r) for r in done])]
    return ", ".join(parts)


def metric_words(spec: dict) -> str:
    """'val loss (final)', 'val loss (best)', 'val bits per byte (at 500,000 tokens)'."""
    read_at = spec.get("read_at", "final")
    where = (f"at {int(read_at.split(':', 1)[1].replace('_', '')):,} tokens" if read_at.startswith("tokens:")
             else read_at)
    return f"{METRIC_WORDS.get(spec.get('metric'), spec.get('metric'))} ({where})"


def scope_sentence(spec: dict, result: ArmResult, runs: list, baseline_values: list[float]) -> str:
    """'supported at 1.1M params, 409,600 tokens of tiny-shakespeare (char), equal tokens, 3 seeds,
    CPU (...): val loss (final) -0.079 (95% CI -0.09 to -0.06) against the baseline'. The seeds are
    those paired with the baseline (what the verdict rests on): `runs` and `baseline_values` per seed of
    the spec."""
    paired = runs
    if result.comparison is not None:  # only the seeds with a value in both arms
        paired = [run for run, mine, theirs in zip(runs, result.values, baseline_values)
                  if not (math.isnan(mine) or math.isnan(theirs))]
    head = result.verdict.outcome if result.verdict is not None else "no verdict yet"
    sentence = f"{head} at {arm_scope(spec, paired)}"
    c = result.comparison
    if c is None:
        return sentence + f": {metric_words(spec)} not yet compared with the baseline over 2 or more seeds"
    return (sentence + f": {metric_words(spec)} {c.mean_diff:+.3g} (95% CI {c.ci_low:+.3g} to {c.ci_high:+.3g}) "
            "against the baseline")


def scope_sentences(spec: dict, cells: dict[tuple[str, int], Any], results: list[ArmResult]) -> dict[str, str]:
    """{arm: its scoped verdict sentence} for every arm but the baseline, in the spec's arm order."""
    base = next((r.values for r in results if r.arm == BASELINE_ARM), [math.nan] * len(spec["seeds"]))
    return {r.arm: scope_sentence(spec, r, [cells.get((r.arm, seed)) for seed in spec["seeds"]], base)
            for r in results if r.arm != BASELINE_ARM}
