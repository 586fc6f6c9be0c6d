"""The figure of `ablab profile`: memory by part and tokens/s against micro-batch size, one panel pair
per architecture. Takes plain rows (dicts of ablab.train.profile.ProfileRow); imports no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.figure import Figure

from ablab.report.figures import _save

PARTS = (("weights_mb", "weights"), ("grads_mb", "gradients"), ("optimizer_mb", "optimizer state"),
         ("activations_mb", "activations (saved for backward)"))


def profile_figure(profiles: Mapping[str, Sequence[Mapping]], out: Path) -> list[Path]:
    """`profiles`: architecture name -> its rows. Writes `<out>.png` and `<out>.svg`."""
    fig = Figure(figsize=(10, 3.2 * len(profiles)))
    for i, (name, rows) in enumerate(profiles.items()):
        fitted = [r for r in rows if r.get("activations_mb") is not None]
        memory, speed = fig.add_subplot(len(profiles), 2, 2 * i + 1), fig.add_subplot(len(profiles), 2, 2 * i + 2)
        labels = [str(r["batch_size"]) for r in fitted]
        bottom = [0.0] * len(fitted)
        for key, label in PARTS:
            values = [float(r[key]) for r in fitted]
            memory.bar(labels, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values)]
        peaks = [(str(r["batch_size"]), r["peak_mb"]) for r in fitted if r.get("peak_mb") is not None]
        if peaks:  # on a CPU only the largest batch has a peak of its own
            memory.plot([b for b, _ in peaks], [p for _, p in peaks], "kD", label="measured peak")
        memory.set(title=f"{name}: memory", xlabel="micro-batch (sequences)", ylabel="MB")
        speed.plot(labels, [r["tokens_per_s"] for r in fitted], "o-")
        speed.set(title=f"{name}: speed", xlabel="micro-batch (sequences)", ylabel="tokens/s")
        if i == 0:
            memory.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out)


def profile_markdown(rows: Mapping[str, Mapping]) -> list[str]:
    """A memory study's addendum table: arm -> its ablab.study.systems profile row; [] without rows."""
    if not rows:
        return []
    from ablab.analysis.runs import markdown_table

    def mb(value) -> str:
        return "out of memory" if value is None else f"{value:,.1f}"

    table = [[arm, f"{r['batch_size']} x {r['seq_len']}", f"{r['params'] / 1e6:.2f}M", mb(r["weights_mb"]),
              mb(r["grads_mb"]), mb(r["optimizer_mb"]), mb(r["activations_mb"]), mb(r["peak_mb"]),
              "—" if r["step_s"] is None else f"{r['step_s']:.3f}",
              "—" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}"] for arm, r in rows.items()]
    means = sorted({r["peak_means"] for r in rows.values()})
    return ["Memory by part, measured as `ablab profile` measures it (one micro-batch per process, "
            f"{rows[next(iter(rows))]['device']}); peak: {'; '.join(means)}.", "",
            *markdown_table(["arm", "micro-batch", "params", "weights MB", "gradients MB", "optimizer MB",
                             "activations MB", "peak MB", "step s", "tokens/s"], table)]
