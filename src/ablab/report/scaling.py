"""Scaling fits as figures and report sections: the L(C) curve with its bootstrap band, IsoFLOP
profiles, and a table of every stored law, for `ablab scaling fit`, `ablab ladder` and `ablab report`."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from ablab.analysis.scaling import PowerLawFit
from ablab.analysis.scaling_data import Points
from ablab.report import figures
from ablab.store.ledger import Ledger


def _band(law):
    boot = np.array(law.boot) if law.boot else None

    def band(x):
        if boot is None:
            return law.predict(x), law.predict(x)
        with np.errstate(all="ignore"):
            curves = boot[:, 0] + boot[:, 1] * float(x) ** -boot[:, 2]
        return tuple(np.nanpercentile(curves, [2.5, 97.5]))
    return band


def plot_fits(points: Points, fits: dict, folder: Path, name: str) -> list[Path]:
    """PNG (and SVG) of the L(C) law over its points with a 95% bootstrap band, and of the IsoFLOP
    profiles with their minima; the PNG paths."""
    written = []
    law = fits.get("compute")
    if law is not None:
        written += figures.scaling_curve(points.c, points.loss, folder / f"{name}-loss-vs-compute",
                                         fit=law.predict, band=_band(law))
    iso = fits.get("isoflop")
    if iso is not None:
        budgets: dict[float, tuple[list, list]] = {}
        for b in iso.budgets:
            members = [i for i, c in enumerate(points.c) if abs(c / b.compute - 1) <= iso.tolerance * 1.5]
            budgets[b.compute] = ([points.n[i] for i in members], [points.loss[i] for i in members])
        minima = {b.compute: (b.n_opt, b.loss_opt) for b in iso.budgets if b.n_opt}
        written += figures.isoflop_curves(budgets, folder / f"{name}-isoflop", minima=minima)
    return [p for p in written if p.suffix == ".png"]


def _interval(fit: dict, key: str) -> str:
    low, high = fit.get(f"{key}_ci", (None, None))
    value = fit.get(key)
    if value is None:
        return "—"
    return f"{value:.4g}" + (f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else "")


def fit_rows(stored: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per stored fit (newest per name and kind): what it says and what it was fitted to."""
    seen, rows = set(), []
    for entry in stored:
        if (entry["name"], entry["kind"]) in seen:
            continue
        seen.add((entry["name"], entry["kind"]))
        fit = entry["fit"]
        if entry["kind"] in ("compute", "params"):
            law = f"E {_interval(fit, 'E')}, A {_interval(fit, 'A')}, alpha {_interval(fit, 'alpha')}"
        elif entry["kind"] == "chinchilla":
            law = (f"E {_interval(fit, 'E')}, alpha {_interval(fit, 'alpha')}, beta {_interval(fit, 'beta')}; "
                   f"N* ~ C^{fit['beta'] / (fit['alpha'] + fit['beta']):.3f}")
        else:
            law = f"N_opt ~ C^{fit['n_exponent']:.3f}, D_opt ~ C^{fit['d_exponent']:.3f} over {len(fit['budgets'])} budgets"
        rows.append([entry["name"], entry["kind"], entry.get("baseline") or "—", entry["convention"],
                     "in" if entry.get("embeddings") else "out", str(len(entry["points"]["loss"])), law,
                     entry["created_at"][:10]])
    return ["fit", "kind", "baseline", "convention", "embeddings", "points", "law (95% bootstrap CI)", "date"], rows


def scaling_section(lab: Path, folder: Path, plots: bool = True) -> dict | None:
    """The report's scaling section: the table of stored fits ({columns, rows}) and each L(C) law's
    figure as (alt text, data URI); None without fits. The page's template renders it."""
    with Ledger(lab) as ledger:
        stored = ledger.fits()
    if not stored:
        return None
    columns, rows = fit_rows(stored)
    images = []
    drawn = set()
    for entry in stored if plots else []:
        if entry["kind"] != "compute" or entry["name"] in drawn:
            continue
        drawn.add(entry["name"])
        p = entry["points"]
        points = Points(p["n"], p["d"], p["c"], p["loss"], p["labels"], entry["convention"])
        safe = "".join(ch if ch.isalnum() or ch in "-_.@" else "-" for ch in entry["name"])
        for png in plot_fits(points, {"compute": PowerLawFit.from_dict(entry["fit"])}, folder, safe):
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            images.append((f'{entry["name"]} L(C)', f"data:image/png;base64,{data}"))
    return {"columns": columns, "rows": rows, "images": images}
