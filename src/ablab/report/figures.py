"""Analysis figures for reports: seed bands, sweeps, benchmark bars, scaling laws, correlations.

Each public function takes plain data (never the ledger, so a report or a notebook can feed it
whatever it computed) and an output stem, writes `<stem>.png` and `<stem>.svg`, and returns the two
paths. The matching `_build_*` draws the same Figure without saving, for tests that inspect axes.
Like plots.py, figures are bare matplotlib Figures on the Agg canvas, never pyplot: no display is
needed and no global figure state outlives a call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ablab.errors import UserError

DPI = 120
# x axis name -> (field of a metric row, axis label with units); "time" matches `ablab compare --x`
X_AXES = {"tokens": ("tokens", "tokens seen"), "steps": ("step", "optimizer steps"),
          "elapsed": ("elapsed", "training time (s)"), "time": ("elapsed", "training time (s)")}
METRIC_UNITS = {"val_loss": "nats/token", "train_loss": "nats/token", "val_bpb": "bits/byte",
                "val_ppl": "perplexity", "tokens_per_s": "tokens/s", "peak_memory_mb": "MB", "mfu": "fraction"}
BANDS = {"minmax": "min–max", "std": "mean ± std"}


@dataclass
class Series:
    """One run's metric at its logged points: `x` (tokens, steps or seconds) and `values`, and
    the optimizer step of each point (`steps`), at which seeds are compared when x is time."""
    x: list[float]
    values: list[float]
    label: str = field(default="")
    steps: list[float] = field(default_factory=list)


def metric_label(metric: str) -> str:
    """`metric` with its unit, e.g. 'val_loss (nats/token)'."""
    unit = METRIC_UNITS.get(metric)
    return f"{metric} ({unit})" if unit else metric


def series_from_rows(rows: Sequence[Mapping], x: str = "tokens", metric: str = "val_loss", label: str = "") -> Series:
    """A Series from metric rows (dicts with step, tokens, elapsed, val_loss...). Rows lacking the
    metric or the x field are skipped: train and val metrics are logged at different steps, so
    most rows hold only one of them. Non-finite values (a diverged run) are skipped too, because
    interpolating through NaN would blank the whole band."""
    key = _x_field(x)
    points = [(float(r[key]), float(r[metric]), r.get("step")) for r in rows
              if r.get(key) is not None and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    steps = [float(p[2]) for p in points] if all(p[2] is not None for p in points) else []
    return Series([p[0] for p in points], [p[1] for p in points], label, steps)


def seed_band(series: Sequence[Series], band: str = "minmax", name: str = "the group",
              by_step: bool = False) -> tuple[np.ndarray, ...]:
    """(grid, mean, low, high) of runs interpolated onto a common grid: the union of their logged
    x values inside the range all runs share, so no run is extrapolated and each run's own points
    stay exact. `band` is "minmax" (low..high over seeds) or "std" (mean ± std, ddof=1).

    `by_step` compares the seeds at equal optimizer steps and places each point at the seeds' mean
    x: against wall-clock time, seeds reach their last step at different seconds, and a grid cut at
    the earliest end would read the slower seeds before they finished (a mean ending above the
    final mean)."""
    if band not in BANDS:
        raise UserError(f"The band must be one of {', '.join(BANDS)}, not '{band}'.")
    runs = [_sorted(s, by_step) for s in series if s.x]
    if not runs:
        raise UserError("seed_band has no points to plot; give at least one Series with logged values.")
    lo, hi = max(at[0] for at, _, _ in runs), min(at[-1] for at, _, _ in runs)
    if lo > hi:
        raise UserError(f"The runs of {name} share no x range (latest start {lo:g} is after earliest end {hi:g}); "
                        "compare runs logged over overlapping tokens or steps.")
    grid = np.unique(np.concatenate([at[(at >= lo) & (at <= hi)] for at, _, _ in runs]))
    stack = np.stack([np.interp(grid, at, ys) for at, _, ys in runs])
    if by_step:
        grid = np.stack([np.interp(grid, at, xs) for at, xs, _ in runs]).mean(axis=0)
    mean = stack.mean(axis=0)
    if band == "minmax":
        return grid, mean, stack.min(axis=0), stack.max(axis=0)
    std = stack.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
    return grid, mean, mean - std, mean + std


def loss_bands(groups: Mapping[str, Sequence[Series]], out: Path, x: str = "tokens", metric: str = "val_loss",
               band: str = "minmax", train: Mapping[str, Sequence[Series]] | None = None) -> list[Path]:
    """Per group (an arm or baseline) the mean curve over its seeds and a shaded band over them;
    `train` adds each group's train loss, dashed in the group's colour. Against time the seeds are
    averaged at equal steps (see seed_band), so each mean line ends at the group's final mean."""
    return _save(_build_loss_bands(groups, x, metric, band, train), out)


def _build_loss_bands(groups, x="tokens", metric="val_loss", band="minmax", train=None) -> Figure:
    by_step = _x_field(x) == "elapsed"
    kept = {name: [s for s in runs if s.x] for name, runs in groups.items()}
    kept = {name: runs for name, runs in kept.items() if runs}
    if not kept:
        raise UserError(f"loss_bands has no points to plot; give each group runs that logged {metric}.")
    fig, ax = _figure()
    for i, (name, runs) in enumerate(kept.items()):
        color = f"C{i % 10}"
        dashed = [s for s in (train or {}).get(name, []) if s.x]
        for curves, style, what in ((runs, "-", metric if train else ""), (dashed, "--", "train_loss")):
            if not curves:
                continue
            grid, mean, low, high = seed_band(curves, band, name, by_step and all(s.steps for s in curves))
            seeds = f"{len(curves)} seed{'s' if len(curves) > 1 else ''}"
            label = f"{name} {what}".rstrip()
            ax.plot(grid, mean, color=color, lw=1.5, ls=style, marker="o" if len(grid) == 1 else None,
                    label=f"{label} (mean of {seeds})")
            ax.fill_between(grid, low, high, color=color, alpha=0.2 if style == "-" else 0.1, lw=0,  # one band label
                            label=f"{label} {BANDS[band]} over seeds" if style == "-" else None)
    ax.set_xlabel(X_AXES[x][1])
    ax.set_ylabel("loss (nats/token)" if train else metric_label(metric))
    ax.set_title(f"{metric} (solid) and train_loss (dashed) over seeds" if train else f"{metric} over seeds")
    ax.legend(fontsize=8)
    return fig


def final_values(values: Mapping[str, Mapping[int, float]], out: Path, metric: str = "val_loss") -> list[Path]:
    """Each arm's final metric per seed, the mean marked, and each seed joined across arms: the
    paired differences the verdict tests. Only these values are drawn, so the y axis spans them (a
    loss curve's axis is set by the step-0 loss, where a 0.05 difference is a flat line)."""
    return _save(_build_final_values(values, metric), out)


def _build_final_values(values, metric="val_loss") -> Figure:
    arms = {arm: {seed: float(v) for seed, v in seeds.items() if v is not None and math.isfinite(v)}
            for arm, seeds in values.items()}
    arms = {arm: seeds for arm, seeds in arms.items() if seeds}
    if not arms:
        raise UserError(f"final_values has no points to plot; give each arm its seeds' final {metric}.")
    fig, ax = _figure(width=max(4.8, 1.4 * len(arms) + 2.5))
    names = list(arms)
    for seed in dict.fromkeys(seed for seeds in arms.values() for seed in seeds):
        at = [(i, arms[arm][seed]) for i, arm in enumerate(names) if seed in arms[arm]]
        ax.plot([i for i, _ in at], [v for _, v in at], color="0.6", lw=0.8, marker="o", ms=5, zorder=2)
        ax.annotate(f"seed {seed}", at[-1], xytext=(6, 0), textcoords="offset points", va="center", fontsize=7)
    means = [float(np.mean(list(arms[arm].values()))) for arm in names]
    ax.scatter(range(len(names)), means, marker="_", s=900, lw=2.5, color="C3", zorder=3, label="mean over seeds")
    for i, mean in enumerate(means):
        ax.annotate(f"{mean:.4f}", (i, mean), xytext=(-24, 0), textcoords="offset points", ha="right", va="center",
                    fontsize=8, color="C3")
    ax.set_xlim(-0.5, len(names) - 0.3)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 3 else 0)
    ax.set_xlabel("arm")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{metric} per seed (axis zoomed to these values)")
    ax.legend(fontsize=8, markerscale=0.3)
    return fig


def metric_vs_variable(values: Mapping[float, Sequence[float]], out: Path, variable: str = "optim.lr",
                       metric: str = "val_loss", log_x: bool | None = None) -> list[Path]:
    """Mean and std over seeds of a final metric against a numeric variable (a sweep)."""
    return _save(_build_metric_vs_variable(values, variable, metric, log_x), out)


def _build_metric_vs_variable(values, variable="optim.lr", metric="val_loss", log_x=None) -> Figure:
    points = sorted((float(v), np.asarray(seeds, float)) for v, seeds in values.items() if len(seeds))
    if not points:
        raise UserError(f"metric_vs_variable has no points to plot; give final {metric} values for each {variable}.")
    xs = np.array([v for v, _ in points])
    means = np.array([s.mean() for _, s in points])
    stds = np.array([s.std(ddof=1) if len(s) > 1 else 0.0 for _, s in points])
    positive = bool((xs > 0).all())
    if log_x is None:  # learning rates are swept geometrically; so is anything spanning decades
        log_x = positive and ("lr" in variable.lower() or xs.max() / xs.min() > 100)
    elif log_x and not positive:
        raise UserError(f"A log x axis needs positive {variable} values; pass log_x=False.")
    fig, ax = _figure()
    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, lw=1.5, label="mean ± std over seeds")
    ax.set_xscale("log" if log_x else "linear")
    ax.set_xlabel(variable)
    ax.set_ylabel(f"final {metric_label(metric)}")
    ax.set_title(f"final {metric} vs {variable}")
    ax.legend(fontsize=8)
    return fig


def benchmark_bars(scores: Mapping[str, Mapping[str, tuple[float, float]]], out: Path,
                   chance: Mapping[str, float] | None = None) -> list[Path]:
    """Grouped bars: tasks on x, one bar per arm or run (mean ± stderr), dashed chance lines."""
    return _save(_build_benchmark_bars(scores, chance), out)


def _build_benchmark_bars(scores, chance=None) -> Figure:
    tasks = [t for t, arms in scores.items() if arms]
    if not tasks:
        raise UserError("benchmark_bars has no points to plot; give a (mean, stderr) score per task and arm.")
    arms = list(dict.fromkeys(arm for t in tasks for arm in scores[t]))
    width = 0.8 / len(arms)
    fig, ax = _figure(width=max(6.0, 0.9 * len(tasks) + 3))
    for j, arm in enumerate(arms):
        where = [i for i, t in enumerate(tasks) if arm in scores[tasks[i]]]
        mean_err = [scores[tasks[i]][arm] for i in where]
        ax.bar([i - 0.4 + (j + 0.5) * width for i in where], [m for m, _ in mean_err], width,
               yerr=[e for _, e in mean_err], capsize=2, color=f"C{j % 10}", label=arm)
    for i, task in enumerate(tasks):
        if chance and task in chance:  # one label, so the legend lists "chance" once
            ax.hlines(chance[task], i - 0.45, i + 0.45, colors="0.3", linestyles="--", lw=1.2, gid="chance", zorder=3,
                      label="chance" if not any(t in chance for t in tasks[:i]) else None)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30 if len(tasks) > 4 else 0, ha="right" if len(tasks) > 4 else "center")
    ax.set_xlabel("task")
    ax.set_ylabel("score (task metric, mean ± stderr)")
    ax.set_title("benchmark scores")
    ax.legend(fontsize=8)
    return fig


def scaling_curve(x: Sequence[float], loss: Sequence[float], out: Path, fit: Callable | None = None,
                  band: Callable | None = None, xlabel: str = "compute (FLOPs)", groups: Sequence[str] | None = None,
                  ylabel: str = "final val_loss (nats/token)") -> list[Path]:
    """Measured points on log-log axes with a fitted law (`fit`: x -> loss) over a dense grid and
    its uncertainty (`band`: x -> (low, high)); `groups` labels each point, e.g. by model size."""
    return _save(_build_scaling_curve(x, loss, fit, band, xlabel, groups, ylabel), out)


def _build_scaling_curve(x, loss, fit=None, band=None, xlabel="compute (FLOPs)", groups=None,
                         ylabel="final val_loss (nats/token)") -> Figure:
    xs, ys = np.asarray(x, float), np.asarray(loss, float)
    if xs.size == 0 or xs.shape != ys.shape:
        raise UserError(f"scaling_curve has no points to plot; give as many losses as x values (got {xs.size} and {ys.size}).")
    if (xs <= 0).any() or (ys <= 0).any():
        raise UserError("scaling_curve draws log-log axes, so every x and loss must be positive; drop the others.")
    if groups is not None and len(groups) != xs.size:
        raise UserError(f"scaling_curve got {len(groups)} group labels for {xs.size} points; give one per point.")
    fig, ax = _figure()
    labels = list(groups) if groups is not None else ["measured"] * xs.size
    for i, name in enumerate(dict.fromkeys(labels)):
        pick = np.array([label == name for label in labels])
        ax.scatter(xs[pick], ys[pick], color=f"C{i % 10}", zorder=3, label=name)
    dense = np.geomspace(xs.min() / 1.25, xs.max() * 1.25, 200)
    if band is not None:
        low, high = np.array([band(v) for v in dense], float).T
        ax.fill_between(dense, low, high, color="0.5", alpha=0.25, lw=0, label="fit uncertainty")
    if fit is not None:  # evaluated point by point so a scalar-only callable works too
        ax.plot(dense, [float(fit(v)) for v in dense], color="k", lw=1.3, label="fit")
    ax.set_xscale("log")
    _log_y(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("scaling law")
    ax.legend(fontsize=8)
    return fig


def isoflop_curves(budgets: Mapping[float, tuple[Sequence[float], Sequence[float]]], out: Path,
                   minima: Mapping[float, float | tuple[float, float]] | None = None) -> list[Path]:
    """Loss vs parameters N per compute budget (one colour each), with each budget's fitted
    minimum marked when given: N* alone (drawn on the curve) or (N*, loss*)."""
    return _save(_build_isoflop_curves(budgets, minima), out)


def _build_isoflop_curves(budgets, minima=None) -> Figure:
    curves = sorted((float(c), _sorted(Series(list(ns), list(ls)))[1:])
                    for c, (ns, ls) in budgets.items() if len(ns))
    if not curves:
        raise UserError("isoflop_curves has no points to plot; give (sizes, losses) for at least one compute budget.")
    if any((ns <= 0).any() for _, (ns, _) in curves):
        raise UserError("isoflop_curves draws a log N axis, so every model size must be positive; drop the others.")
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(curves)))
    fig, ax = _figure()
    for color, (budget, (ns, ls)) in zip(colors, curves):
        ax.plot(ns, ls, marker="o", ms=4, color=color, label=f"{budget:.1e} FLOPs")
        best = (minima or {}).get(budget)
        if best is not None:
            n_star, loss_star = best if isinstance(best, tuple) else (best, _loss_at(ns, ls, best))
            ax.plot([n_star], [loss_star], marker="*", ms=14, color=color, mec="k", zorder=4)
    if minima:
        ax.plot([], [], ls="", marker="*", ms=10, color="w", mec="k", label="fitted minimum")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final val_loss (nats/token)")
    ax.set_title("IsoFLOP curves")
    ax.legend(fontsize=8)
    return fig


def correlation_heatmap(matrix: Sequence[Sequence[float]], labels: Sequence[str], out: Path,
                        title: str = "task correlation (Spearman)") -> list[Path]:
    """A -1..1 heatmap with a diverging colormap, each value written in its cell, NaN left blank."""
    return _save(_build_correlation_heatmap(matrix, labels, title), out)


def _build_correlation_heatmap(matrix, labels, title="task correlation (Spearman)") -> Figure:
    values = np.asarray(matrix, float)
    if values.size == 0:
        raise UserError("correlation_heatmap has no points to plot; give a square matrix with one row per task.")
    if values.shape != (len(labels), len(labels)):
        raise UserError(f"The correlation matrix is {values.shape[0]}x{values.shape[-1]} but there are "
                        f"{len(labels)} labels; give one label per row and column.")
    side = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = _figure(width=side + 1, height=side)
    image = ax.imshow(values, cmap=matplotlib.colormaps["RdBu_r"].with_extremes(bad="white"), vmin=-1, vmax=1)
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):  # dark cells get white text so the number stays readable
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="w" if abs(v) > 0.6 else "k")
    fig.colorbar(image, ax=ax, label="correlation coefficient (−1 to 1)")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("task")
    ax.set_ylabel("task")
    ax.set_title(title)
    return fig


def gain_vs_size(sizes: Sequence[float], gains: Sequence[float], out: Path,
                 cis: Sequence[tuple[float, float] | None] | None = None) -> list[Path]:
    """Compute-efficiency gain (how many times less compute an arm needs for the baseline's loss)
    against model size, log-log, with CI error bars and a line at 1 (no gain)."""
    return _save(_build_gain_vs_size(sizes, gains, cis), out)


def _build_gain_vs_size(sizes, gains, cis=None) -> Figure:
    xs, ys = np.asarray(sizes, float), np.asarray(gains, float)
    if xs.size == 0 or xs.shape != ys.shape:
        raise UserError(f"gain_vs_size has no points to plot; give one gain per model size (got {ys.size} and {xs.size}).")
    if (xs <= 0).any() or (ys <= 0).any():
        raise UserError("gain_vs_size draws log-log axes, so every size and gain must be positive; drop the others.")
    yerr = None
    if cis is not None:
        if len(cis) != xs.size:
            raise UserError(f"gain_vs_size got {len(cis)} CIs for {xs.size} points; give one (low, high) or None per point.")
        bounds = np.array([ci if ci is not None else (g, g) for ci, g in zip(cis, ys)], float)
        yerr = np.stack([ys - bounds[:, 0], bounds[:, 1] - ys])
        if (yerr < 0).any():
            raise UserError("Each gain's CI must contain the gain (low <= gain <= high); check the CI columns.")
    fig, ax = _figure()
    ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, lw=1.5, label="gain with CI" if cis is not None else "gain")
    ax.axhline(1.0, color="0.3", ls="--", lw=1.2, label="no gain (1×)")
    ax.set_xscale("log")
    _log_y(ax)
    ax.set_xlabel("model size (parameters)")
    ax.set_ylabel("compute-efficiency gain (×)")
    ax.set_title("compute-efficiency gain vs model size")
    ax.legend(fontsize=8)
    return fig


# -- shared ---------------------------------------------------------------------------------------------
def _x_field(x: str) -> str:
    if x not in X_AXES:
        raise UserError(f"The x axis must be one of {', '.join(X_AXES)}, not '{x}'.")
    return X_AXES[x][0]


def _sorted(series: Series, by_step: bool = False) -> tuple[np.ndarray, ...]:
    """Points ordered by x, as np.interp needs; a stable sort keeps logged order within ties.
    With `by_step`, (steps, x, values) ordered by step; else (x, x, values)."""
    xs, ys = np.asarray(series.x, float), np.asarray(series.values, float)
    if xs.shape != ys.shape:
        raise UserError(f"Series {series.label or ''} has {xs.size} x values but {ys.size} metric values; give one per point.")
    at = np.asarray(series.steps, float) if by_step else xs
    if at.shape != xs.shape:
        raise UserError(f"Series {series.label or ''} has {at.size} steps for {xs.size} points; give one step per point.")
    order = np.argsort(at, kind="stable")
    return at[order], xs[order], ys[order]


def _loss_at(ns: np.ndarray, losses: np.ndarray, n: float) -> float:
    """The curve's loss at size n, interpolated in log N (how IsoFLOP parabolas are fitted)."""
    return float(np.interp(math.log(n), np.log(ns), losses))


def _log_y(ax) -> None:
    """Log y; called after drawing, since ticks depend on the range. Losses and gains usually span
    under a decade, where log ticks would label only 10⁰ or read 3×10⁰: plain evenly spaced
    numbers read better there."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / low < 10:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _figure(width: float = 6.4, height: float = 4.4):
    fig = Figure(figsize=(width, height), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.grid(alpha=0.3, which="both")
    return fig, ax


def _save(fig: Figure, out: Path) -> list[Path]:
    """Write `<out>.png` and `<out>.svg`. The SVG carries no date and fixed element ids, so
    regenerating an unchanged report leaves the file byte-identical."""
    stem = Path(out)
    if stem.suffix in (".png", ".svg"):  # a caller who passed a file name still gets both formats
        stem = stem.with_suffix("")
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(paths[0], dpi=DPI, bbox_inches="tight", metadata={"Software": None})
        with matplotlib.rc_context({"svg.hashsalt": "ablab"}):
            fig.savefig(paths[1], dpi=DPI, bbox_inches="tight", metadata={"Date": None})
    except (OSError, ValueError) as err:
        raise UserError(f"Cannot write the figure to {stem} ({err}); give another output path.") from None
    finally:
        fig.clf()  # the figure is not pyplot-managed; clearing drops its artists for the caller's GC
    return paths
