"""`ablab profile`: memory and speed per architecture at several micro-batch sizes. Imported by cli.main only."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ablab import config as config_mod
from ablab.cli.common import console
from ablab.errors import UserError

profile_app = typer.Typer()


@profile_app.command("profile")
def profile(overrides: Optional[List[str]] = typer.Argument(None, help="Overrides as section.key=value.",
                                                            show_default=False),
            configs: List[str] = typer.Option(["small"], "--config", "-c",
                                              help="Config file or preset; repeat for several architectures."),
            batch_sizes: str = typer.Option("8,16,32", "--batch-sizes", help="Micro-batch sizes, comma-separated."),
            steps: int = typer.Option(3, min=1, max=100, help="Timed training steps per batch size."),
            out: Path = typer.Option(Path("reports/profile"), "--out", help="Figure path (PNG and SVG).")) -> None:
    """Measure params, memory (weights, gradients, optimizer state, activations, peak), step time,
    tokens/s and MFU of each config at each micro-batch size; print a table per config and draw them.

    Example: `ablab profile -c small -c medium --batch-sizes 4,8,16 train.device=cpu`
    """
    from ablab.report.profile_figure import profile_figure
    from ablab.train.profile import profile as measure

    sizes = _sizes(batch_sizes)
    profiles = {}
    for name in configs:
        cfg = config_mod.load(name, list(overrides or []))
        rows = measure(cfg, _vocab_size(cfg), sizes, steps)
        profiles[Path(name).stem] = [row.as_dict() for row in rows]
        _print(Path(name).stem, cfg, rows)
    paths = profile_figure(profiles, out)
    console.print(f"peak: {rows[0].peak_means}; figure: {paths[0]}")


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise UserError(f"--batch-sizes '{text}' is not a list of whole numbers of 1 or more; e.g. --batch-sizes 8,16,32.")
    return sizes


def _vocab_size(cfg) -> int:
    """The vocabulary the model will have: BPE's requested size, 256 for bytes, else the prepared data's."""
    if cfg.data.tokenizer in ("bpe", "byte"):
        return cfg.data.vocab_size if cfg.data.tokenizer == "bpe" else 256
    from ablab.data.prepare import prepare_data

    return prepare_data(cfg.data).tokenizer.vocab_size


def _print(name: str, cfg, rows) -> None:
    table = Table(title=f"{name}: {cfg.model.n_layers}L d{cfg.model.d_model}, seq {cfg.data.seq_len}, "
                        f"{rows[0].params / 1e6:.2f}M params, {cfg.optim.name}, on {rows[0].device}")
    for column in ("batch", "weights MB", "grads MB", "optimizer MB", "activations MB", "peak MB", "step s",
                   "tokens/s", "MFU"):
        table.add_column(column, justify="right")
    for r in rows:
        if r.activations_mb is None:
            table.add_row(str(r.batch_size), f"{r.weights_mb:.1f}", "out of memory", "", "", "", "", "", "")
            continue
        table.add_row(str(r.batch_size), f"{r.weights_mb:.1f}", f"{r.grads_mb:.1f}", f"{r.optimizer_mb:.1f}",
                      f"{r.activations_mb:.1f}", f"{r.peak_mb:.0f}" if r.peak_mb is not None else "–", f"{r.step_s:.3f}", f"{r.tokens_per_s:,.0f}",
                      f"{100 * r.mfu:.1f}%")
    console.print(table)
