"""Loss curves of several runs side by side, as a PNG (for `ablab compare`).

Drawn on a bare matplotlib Figure with the Agg canvas, never through pyplot: no display is needed,
and no global figure state outlives the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ablab.analysis.runs import Curve
from ablab.errors import UserError

# x axis name -> (field of a metric row, axis label)
X_AXES = {"steps": ("step", "step"), "tokens": ("tokens", "tokens"), "time": ("elapsed", "training time (s)")}


def plot_curves(curves: Sequence[Curve], out: Path, x: str | None = None) -> Figure:
    """Train loss (solid) and val loss (dashed, dots) of each run against steps, tokens and
    training time (one panel each, or only `x`), saved to `out`. Each run keeps one colour."""
    if x is not None and x not in X_AXES:
        raise UserError(f"--x must be one of {', '.join(X_AXES)}, not '{x}'.")
    names = [x] if x else list(X_AXES)
    fig = Figure(figsize=(5.5 * len(names), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        field, label = X_AXES[name]
        for i, curve in enumerate(curves):
            color = f"C{i % 10}"
            train = [r for r in curve.rows if r.get("train_loss") is not None and field in r]
            val = [r for r in curve.rows if r.get("val_loss") is not None and field in r]
            ax.plot([r[field] for r in train], [r["train_loss"] for r in train], color=color, lw=1.3,
                    label=f"{curve.label} train")
            ax.plot([r[field] for r in val], [r["val_loss"] for r in val], color=color, lw=1.3, ls="--",
                    marker="o", ms=3, label=f"{curve.label} val")
        ax.set_xlabel(label)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except (OSError, ValueError) as err:
        raise UserError(f"Cannot write the plot to {out} ({err}); give another --out path ending in .png.") from None
    return fig
