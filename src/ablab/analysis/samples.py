"""A study's prompt-suite continuations side by side: per prompt and mode (greedy, sampled), the
baseline's and each arm's text at the same step of runs with the same seed, so that a claim about
generated text rests on one fixed suite read against the baseline. Reads the ledger; no torch."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from ablab.analysis.verdicts import BASELINE_ARM
from ablab.store.ledger import Ledger


@dataclass
class SampleTable:
    seed: int  # the seed whose runs are compared (the first seed every arm has samples for)
    step: int  # the last step at which every arm's run of that seed continued the suite
    arms: list[str]  # the baseline first, then the study's other arms in order
    rows: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (prompt, mode, {arm: text})


def side_by_side(lab: Path, spec: dict, cells: dict, ledger: Ledger | None = None) -> SampleTable | None:
    """The continuations of the first seed at which every arm's run has samples, at the last step they
    share; None when no seed has samples from every arm (no eval.prompts, or runs not yet sampled).
    `ledger`: one already open (the dashboard's read-only one), else the lab's is opened."""
    arms = sorted(spec["arms"], key=lambda arm: arm != BASELINE_ARM)  # stable: the baseline first
    for seed in spec["seeds"]:
        runs = [cells.get((arm, seed)) for arm in arms]
        if any(run is None for run in runs):
            continue
        with contextlib.nullcontext(ledger) if ledger else Ledger(lab) as reader:
            samples = {arm: reader.samples(run.id) for arm, run in zip(arms, runs)}
        common = set.intersection(*({row["step"] for row in rows} for rows in samples.values()))
        if not common:
            continue
        step = max(common)
        table = SampleTable(seed, step, arms)
        texts: dict[tuple[str, str], dict[str, str]] = {}
        for arm, rows in samples.items():
            for row in rows:
                if row["step"] == step:
                    texts.setdefault((row["prompt"], row["mode"]), {})[arm] = row.get("error") or row["text"]
        table.rows = [(prompt, mode, by_arm) for (prompt, mode), by_arm in texts.items()]
        return table
    return None
