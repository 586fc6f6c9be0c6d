"""Points for scaling-law fits: (N, D, C, loss) from the ledger's finished runs or from a CSV of
published ones, under a named compute convention, so researchers can set their runs beside others.

    points = ledger_points(lab, study="ladder-plan@2026-11-21", convention="6ND", embeddings=False)
    points = csv_points(Path("chinchilla.csv"), n="params", d="tokens", loss="loss")
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ablab.analysis import scaling
from ablab.analysis.scaling import PowerLawFit
from ablab.analysis.scaling_laws import CONVENTIONS, compute
from ablab.errors import UserError
from ablab.lab import read_user_text
from ablab.store.ledger import Ledger, Run
from ablab.store.record import now_iso


@dataclass
class Points:
    n: list[float] = field(default_factory=list)  # parameters (with or without embeddings, see `embeddings`)
    d: list[float] = field(default_factory=list)  # training tokens
    c: list[float] = field(default_factory=list)  # training compute under `convention`
    loss: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # run ids or CSV row numbers
    convention: str = "6ND"
    embeddings: bool = False
    source: str = ""

    def __len__(self) -> int:
        return len(self.loss)

    def add(self, n: float, d: float, c: float, loss: float, label: str) -> None:
        for values, value in ((self.n, n), (self.d, d), (self.c, c), (self.loss, loss), (self.labels, label)):
            values.append(value)


def run_compute(run: Run, tokens: float, n: float, convention: str) -> float:
    """Training FLOPs of a run under the convention (its shape supplies the attention term)."""
    model, data = run.config["model"], run.config["data"]
    return compute(n, tokens, convention, model["n_layers"], model["d_model"], data["seq_len"])


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"Unknown compute convention {convention!r}; use one of {', '.join(CONVENTIONS)}.")


def ledger_points(lab: Path, study: str | None = None, tag: str | None = None, where: dict | None = None,
                  convention: str = "6ND", embeddings: bool = False, metric: str = "val_loss") -> Points:
    """The finished runs (of a study, a tag or a config filter; else all) as points: N from the run's
    parameter count (non-embedding unless `embeddings`), D its tokens seen, the final `metric` as loss."""
    check_convention(convention)
    with Ledger(lab) as ledger:
        if study is not None:
            ids = list(ledger.study_runs(study).values())
            if not ids:
                raise UserError(f"Study '{study}' has no runs in this lab; run it first (`ablab study run` or `ablab ladder`).")
            runs = ledger.runs(ids=ids, status="finished")
        else:
            runs = ledger.runs(status="finished", tag=tag, where=where)
    points = Points(convention=convention, embeddings=embeddings, source=f"study {study}" if study else "ledger")
    for run in runs:
        r = run.result
        n = r.get("params") if embeddings else r.get("non_embedding_params")
        tokens, loss = r.get("tokens_seen"), r.get("final", {}).get(metric)
        if n and tokens and loss is not None and math.isfinite(loss):
            points.add(float(n), float(tokens), run_compute(run, float(tokens), float(n), convention), float(loss), run.id)
    return points


def csv_points(path: Path, n: str | None = None, d: str | None = None, compute: str | None = None,
               loss: str = "loss", convention: str = "6ND", embeddings: bool = False) -> Points:
    """Points from a CSV with named columns: loss, and N and D (compute is then 6ND), or compute
    (with N and D optional: a compute-only law L(C) needs no more)."""
    check_convention(convention)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a CSV file with a header row naming its columns.")
    rows, columns = _csv_rows(path)
    for role, name in (("loss", loss), ("N", n), ("D", d), ("compute", compute)):
        if name is not None and name not in columns:
            raise UserError(f"{path} has no column '{name}' for {role} (columns: {', '.join(columns)}); "
                            f"name the right one with --{role.lower()}-column.")
    if compute is None and (n is None or d is None or convention != "6ND"):
        raise UserError("A CSV fit needs --n-column and --d-column (compute is then 6ND), or --compute-column "
                        "(required for any other convention).")
    points = Points(convention=convention, embeddings=embeddings, source=str(path))
    for number, row in rows:
        values = {key: _positive_cell(path, number, col, row[col]) if col else math.nan for key, col in
                  (("n", n), ("d", d), ("c", compute), ("loss", loss))}
        c = values["c"] if compute else 6 * values["n"] * values["d"]
        points.add(values["n"], values["d"], c, values["loss"], f"line {number}")
    return points


def _csv_rows(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """(line number, row) for each data row of a CSV file, and its header's columns; a binary file, a
    row whose cell count differs from the header's, or no rows is a UserError naming the file and line."""
    reader = csv.reader(read_user_text(path, "CSV file").splitlines())
    try:
        header = next(reader, [])
        lines = [(reader.line_num, cells) for cells in reader if cells]
    except csv.Error as err:  # e.g. a NUL byte
        raise UserError(f"{path} line {reader.line_num} is not CSV ({err}); give a text CSV file with a header row.") from None
    if not header or not lines:
        raise UserError(f"{path} has no data rows; add one row per (N, D, loss) point under a header.")
    for number, cells in lines:
        if len(cells) != len(header):
            raise UserError(f"{path} line {number} has {len(cells)} cells but the header has {len(header)}; "
                            "give every row one value per column.")
    return [(number, dict(zip(header, cells))) for number, cells in lines], header


def _positive_cell(path: Path, number: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{path} line {number}, column {column}: {text!r} is not a positive number; fix or remove "
                        "that line.")
    return value


KINDS = ("compute", "params", "chinchilla", "isoflop")


def frontier(points: Points) -> list[int]:
    """Indices of the compute-efficient frontier: points no cheaper point beats on loss."""
    best, kept = math.inf, []
    for i in sorted(range(len(points)), key=lambda i: (points.c[i], points.loss[i])):
        if points.loss[i] < best:
            best = points.loss[i]
            kept.append(i)
    return kept


def fit_points(points: Points, kinds: tuple[str, ...] = KINDS, n_boot: int = 200, seed: int = 0) -> tuple[dict, dict]:
    """(fits by kind, why each other kind was not fitted): L(C) and L(N) power laws, Chinchilla's
    L(N, D) and the IsoFLOP analysis, each where the points allow it."""
    fits, reasons = {}, {}
    front = frontier(points)
    attempts = {
        # L(C) describes the best loss reachable with C: the compute-efficient frontier, not runs
        # of a size too small or too large for their budget (Kaplan et al.; the IsoFLOP minima).
        "compute": lambda: scaling.fit_power_law([points.c[i] for i in front], [points.loss[i] for i in front], "C",
                                                 points.convention, points.embeddings, n_boot, seed),
        "params": lambda: scaling.fit_power_law(points.n, points.loss, "N", points.convention, points.embeddings,
                                                n_boot, seed),
        "chinchilla": lambda: scaling.fit_chinchilla(points.n, points.d, points.loss, embeddings=points.embeddings,
                                                     n_boot=max(n_boot // 2, 20), seed=seed),
        "isoflop": lambda: scaling.isoflop(points.n, points.d, points.loss, compute=points.c,
                                           convention=points.convention, embeddings=points.embeddings),
    }
    for kind in kinds:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):  # overflow in far-off starts is expected
                warnings.simplefilter("ignore", RuntimeWarning)
                fits[kind] = attempts[kind]()
        except UserError as err:
            reasons[kind] = str(err)
    return fits, reasons


def save_fits(lab: Path, name: str, fits: dict, points: Points, baseline: str | None = None) -> None:
    """Store each fit (with the points it was fitted to) in the ledger under `name`."""
    at = now_iso()
    with Ledger(lab) as ledger:
        for kind, fit in fits.items():
            data = {"fit": fit.to_dict(), "embeddings": points.embeddings, "source": points.source,
                    "points": {"n": points.n, "d": points.d, "c": points.c, "loss": points.loss, "labels": points.labels}}
            ledger.save_fit(name, kind, points.convention, data, baseline, at)


def load_law(lab: Path, name: str | None = None, baseline: str | None = None):
    """The newest stored L(C) law by fit name or by baseline ref, as a scaling.PowerLawFit."""
    with Ledger(lab) as ledger:
        found = ledger.fits(name=name, baseline=None if name else baseline, kind="compute")
    if not found:
        what = f"named '{name}'" if name else f"for baseline {baseline}"
        raise UserError(f"No compute law (L(C) fit) {what} in this lab; fit one with `ablab ladder` or "
                        "`ablab scaling fit ... --baseline REF`.")
    return PowerLawFit.from_dict(found[0]["fit"])
