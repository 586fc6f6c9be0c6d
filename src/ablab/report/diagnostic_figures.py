"""A study's diagnostic figures (runs trained with `train.diagnostics`, ablab.train.diagnostics): one
figure per diagnostic, one panel per arm side by side on a shared y axis, one line per layer or part,
the mean over the arm's seeds at each evaluation. Drawn only for diagnostics some run recorded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ablab.report import figures

PREFIX = "diag/"
# metric kind -> (title, y label, log y): norms and ratios span decades, entropy and RMS read on a plain axis
KINDS = {
    "grad_norm": ("gradient norm per part", "L2 norm (before clipping)", True),
    "gain_grad_norm": ("norm-gain gradient norm per part", "L2 norm (before clipping)", True),
    "update_ratio": ("update / weight ratio per parameter group", "||Δw|| / ||w||", True),
    "act_rms": ("activation RMS of the first, middle and last block", "RMS", False),
    "attn_entropy": ("attention entropy per layer", "nats per query", False),
}
PART_ORDER = {"embed": -3, "first": -2, "mid": -1, "norm_f": 1 << 20, "head": 1 << 21, "last": 1 << 22}


def diagnostic_series(rows: Sequence[Mapping], kind: str) -> dict[str, tuple[list[float], list[float]]]:
    """One run's `diag/<kind>/<part>` values: part -> (steps, values), in step order."""
    found: dict[str, tuple[list[float], list[float]]] = {}
    start = f"{PREFIX}{kind}/"
    for row in sorted(rows, key=lambda r: r.get("step", 0)):
        for key, value in row.items():
            if key.startswith(start) and isinstance(value, (int, float)) and not isinstance(value, bool):
                steps, values = found.setdefault(key[len(start):], ([], []))
                steps.append(float(row["step"]))
                values.append(float(value))
    return found


def seed_means(runs: Sequence[Sequence[Mapping]], kind: str) -> dict[str, tuple[list[float], list[float]]]:
    """part -> (steps, mean over the runs that have that step) of the arm's runs."""
    pooled: dict[str, dict[float, list[float]]] = {}
    for rows in runs:
        for part, (steps, values) in diagnostic_series(rows, kind).items():
            for step, value in zip(steps, values):
                pooled.setdefault(part, {}).setdefault(step, []).append(value)
    return {part: (sorted(by_step), [sum(by_step[s]) / len(by_step[s]) for s in sorted(by_step)])
            for part, by_step in pooled.items()}


def part_key(part: str) -> tuple[int, str]:
    """blocks.2 before blocks.10, layer2 before layer10, embeddings first, the head last."""
    number = re.search(r"(\d+)$", part)
    return (int(number.group(1)) if number else PART_ORDER.get(part, 1 << 19), part)


def build_diagnostic(per_arm: Mapping[str, Mapping[str, tuple[list[float], list[float]]]], kind: str) -> Figure:
    """The figure of one diagnostic: a panel per arm (arms side by side), a line per part."""
    title, ylabel, log_y = KINDS[kind]
    arms = list(per_arm)
    fig = Figure(figsize=(max(4.8, 3.6 * len(arms)), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(arms), sharey=True, squeeze=False)[0]
    for ax, arm in zip(axes, arms):
        parts = sorted(per_arm[arm], key=part_key)
        colors = matplotlib.colormaps["viridis"].resampled(max(len(parts), 2))
        for i, part in enumerate(parts):
            steps, values = per_arm[arm][part]
            ax.plot(steps, values, marker="o", markersize=3, linewidth=1.4, color=colors(i), label=part)
        ax.set_title(arm)
        ax.set_xlabel("optimizer steps")
        ax.grid(alpha=0.3, which="both")
        if log_y and all(v > 0 for steps, values in per_arm[arm].values() for v in values):
            ax.set_yscale("log")
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=7, loc="best", ncol=2 if sum(len(p) for p in per_arm.values()) > 16 else 1)
    fig.suptitle(f"{title} (mean over seeds)")
    return fig


def diagnostic_figures(rows: Mapping[str, Sequence[Mapping]], cells: Mapping, arms: Sequence[str],
                       folder: Path, name: str) -> list[Path]:
    """`<name>-diag-<kind>.png` (and .svg) per diagnostic some run of the study recorded; the PNGs.
    `rows` is run id -> metric rows; `cells` is (arm, seed) -> run or None."""
    written = []
    for kind in KINDS:
        per_arm = {arm: seed_means([rows[run.id] for (a, _), run in cells.items()
                                    if a == arm and run is not None and run.id in rows], kind) for arm in arms}
        per_arm = {arm: parts for arm, parts in per_arm.items() if parts}
        if per_arm:
            written += [p for p in figures._save(build_diagnostic(per_arm, kind), folder / f"{name}-diag-{kind}")
                        if p.suffix == ".png"]
    return written
