"""`ablab correlate`, `ablab scaling …` and `ablab ladder`: analyses across runs. Parse, call, print."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ablab.cli.common import (AddressOpt, ExecutorOpt, LabOpt, RetriesOpt, RetryOnOpt, WorkersOpt, console, lab_dir,
                              make_executor, number_list, seed_list)
from ablab.cli.progress import Display, QuietOpt, StudyBars, watching_preparation
from ablab.lab import check_output_path

analysis_app = typer.Typer()


@analysis_app.command("correlate")
def correlate(study: Optional[str] = typer.Option(None, help="Only this study's runs."),
              tag: Optional[str] = typer.Option(None, help="Only runs with this tag."),
              method: str = typer.Option("spearman", help="spearman or pearson."),
              metric: str = typer.Option("val_loss", help="The runs' final metric set beside the tasks."),
              out: Optional[Path] = typer.Option(None, "--out", "-o", help="Heatmap to write (PNG and SVG)."),
              lab: Optional[Path] = LabOpt) -> None:
    """Correlations of benchmark accuracies with each other and with val loss, over the runs scored
    with `ablab eval` (or eval.tasks, or a study's benchmarks): a matrix, and a heatmap with --out.

    Example: `ablab correlate --study arch-scaling --method spearman --out reports/task-corr.png`
    """
    from ablab.analysis.crossrun import correlations

    if out is not None:
        check_output_path(out)
    table = correlations(lab_dir(lab), study, tag, method, metric)
    width = max(len(n) for n in table.names) + 2
    console.print(f"{method} correlations over {table.runs} runs (pairwise complete)")
    console.print("".ljust(width) + "".join(n[:9].rjust(10) for n in table.names), markup=False, soft_wrap=True)
    for i, name in enumerate(table.names):
        cells = "".join(("" if math.isnan(v) else f"{v:+.3f}").rjust(10) for v in table.r[i])
        console.print(name.ljust(width) + cells, markup=False, soft_wrap=True)
    if out is not None:
        from ablab.report.figures import correlation_heatmap

        for path in correlation_heatmap(table.r.tolist(), table.names, out, title=f"correlation ({method})"):
            console.print(f"wrote {path}", markup=False, highlight=False)


scaling_app = typer.Typer(no_args_is_help=True, help="Scaling-law fits and compute-efficiency gains.\n\n"
                                                     "Example: `ablab scaling fit --study ladder-plan@2026-11-21`")
analysis_app.add_typer(scaling_app, name="scaling")


def _ci(interval) -> str:
    low, high = interval
    return f"[{low:.4g}, {high:.4g}]"


def print_fits(fits: dict, reasons: dict) -> None:
    """The fitted laws in words: parameters with their bootstrap intervals, range, allocation."""
    for kind, fit in fits.items():
        if kind in ("compute", "params"):
            console.print(f"L({fit.name}) = E + A {fit.name}^-alpha over {fit.n_points} points, {fit.name} in "
                          f"[{fit.x_min:.3g}, {fit.x_max:.3g}] ({fit.convention}, embeddings "
                          f"{'in' if fit.embeddings else 'out'}): E {fit.E:.4g} {_ci(fit.E_ci)}, A {fit.A:.4g} "
                          f"{_ci(fit.A_ci)}, alpha {fit.alpha:.4g} {_ci(fit.alpha_ci)}", soft_wrap=True)
        elif kind == "chinchilla":
            console.print(f"L(N, D) = E + A/N^alpha + B/D^beta over {fit.n_points} points: E {fit.E:.4g} {_ci(fit.E_ci)}, "
                          f"A {fit.A:.4g} {_ci(fit.A_ci)}, B {fit.B:.4g} {_ci(fit.B_ci)}, alpha {fit.alpha:.4g} "
                          f"{_ci(fit.alpha_ci)}, beta {fit.beta:.4g} {_ci(fit.beta_ci)}", soft_wrap=True)
            console.print(f"compute-optimal: N* ~ C^{fit.n_exponent:.3f} {_ci(fit.n_exponent_ci)}, "
                          f"D* ~ C^{fit.d_exponent:.3f}", soft_wrap=True)
        elif kind == "isoflop":
            console.print(f"IsoFLOP over {len(fit.budgets)} budgets: N_opt ~ C^{fit.n_exponent:.3f} "
                          f"{_ci(fit.n_exponent_ci)}, D_opt ~ C^{fit.d_exponent:.3f} {_ci(fit.d_exponent_ci)}"
                          + (f"; {len(fit.skipped)} budgets skipped" if fit.skipped else ""), soft_wrap=True)
    for kind, reason in reasons.items():
        console.print(f"{kind}: not fitted: {reason}", style="dim", soft_wrap=True)


@scaling_app.command("fit")
def scaling_fit(study: Optional[str] = typer.Option(None, help="Fit this study's (or ladder's) finished runs."),
                tag: Optional[str] = typer.Option(None, help="Fit the finished runs with this tag."),
                csv_file: Optional[Path] = typer.Option(None, "--csv", help="Fit external points from a CSV instead."),
                n_column: Optional[str] = typer.Option(None, help="CSV column of parameter counts N."),
                d_column: Optional[str] = typer.Option(None, help="CSV column of training tokens D."),
                compute_column: Optional[str] = typer.Option(None, help="CSV column of training compute C."),
                loss_column: str = typer.Option("loss", help="CSV column of the loss."),
                convention: str = typer.Option("6ND", help="Compute convention: 6ND or 6ND+attn."),
                embeddings: bool = typer.Option(False, help="Count embedding parameters in N."),
                name: Optional[str] = typer.Option(None, help="Store the fits under this name (default: the source)."),
                baseline: Optional[str] = typer.Option(None, help="Store them as this baseline's law (NAME@DATE)."),
                lab: Optional[Path] = LabOpt) -> None:
    """Fit L(C) and L(N) power laws, Chinchilla's L(N, D) and an IsoFLOP analysis to runs of the
    ledger or to a CSV of published points; print them with bootstrap intervals, plot, and store.

    Example: `ablab scaling fit --csv chinchilla.csv --n-column N --d-column D --loss-column loss`
    """
    from ablab.analysis.scaling_data import csv_points, fit_points, ledger_points, save_fits
    from ablab.report.scaling import plot_fits

    if csv_file is not None:
        points = csv_points(csv_file, n_column, d_column, compute_column, loss_column, convention, embeddings)
    else:
        points = ledger_points(lab_dir(lab), study, tag, None, convention, embeddings)
    fits, reasons = fit_points(points)
    print_fits(fits, reasons)
    if not fits:
        from ablab.errors import UserError

        raise UserError(f"No law could be fitted to the {len(points)} points; {next(iter(reasons.values()))}")
    label = name or study or tag or (csv_file.stem if csv_file else "ledger")
    save_fits(lab_dir(lab), label, fits, points, baseline)
    for path in plot_fits(points, fits, lab_dir(lab) / "reports" / "scaling", label.replace("/", "-")):
        console.print(f"wrote {path}", markup=False, highlight=False)
    console.print(f"stored as '{label}'" + (f" for baseline {baseline}" if baseline else ""))


@scaling_app.command("gain")
def scaling_gain(study: Optional[str] = typer.Argument(None, help="Study whose arms to measure."),
                 run_id: Optional[str] = typer.Option(None, "--run", help="Measure one run instead."),
                 law: Optional[str] = typer.Option(None, help="Name of the stored L(C) law (default: the "
                                                               "study's baseline's newest)."),
                 out: Optional[Path] = typer.Option(None, "--out", "-o", help="Plot gain vs size (PNG and SVG)."),
                 lab: Optional[Path] = LabOpt) -> None:
    """Compute-efficiency gain C_predicted / C_observed of each arm (or a run) against the
    baseline's fitted L(C), with a confidence interval from the law's bootstrap and the seeds; across
    three or more sizes, whether the gain grows, holds or shrinks.

    Example: `ablab scaling gain qk-norm-sizes --out reports/qk-norm-gain.png`
    """
    from ablab.analysis.crossrun import arm_gains

    if out is not None:
        check_output_path(out)
    gains, trend, fitted = arm_gains(lab_dir(lab), study, run_id, law)
    console.print(f"against L(C) = {fitted.E:.4g} + {fitted.A:.4g} C^-{fitted.alpha:.4g} ({fitted.convention}), "
                  f"fitted over C in [{fitted.x_min:.3g}, {fitted.x_max:.3g}]", soft_wrap=True)
    for g in gains:
        e = g.gain
        console.print(f"{g.arm}: gain {e.gain:.3g}x [{e.ci_low:.3g}, {e.ci_high:.3g}] (loss {e.loss:.4f} over "
                      f"{e.n_seeds} seeds at {e.compute:.3g} FLOPs; the law needs {e.compute_predicted:.3g})",
                      markup=False, soft_wrap=True)
        for warning in e.warnings:
            console.print(f"  warning: {warning}", markup=False, soft_wrap=True)
    if trend is not None:
        console.print(f"trend across {trend.n_sizes} sizes: {trend.direction} (slope {trend.slope:+.3f} per "
                      f"log size, CI [{trend.ci_low:+.3f}, {trend.ci_high:+.3f}]). {trend.sentence}", soft_wrap=True)
    if out is not None and gains:
        from ablab.report.figures import gain_vs_size

        finite = [g for g in gains if g.gain.gain == g.gain.gain and g.gain.gain != float("inf")]
        for path in gain_vs_size([g.n_params for g in finite], [g.gain.gain for g in finite], out,
                                 cis=[(g.gain.ci_low, g.gain.ci_high) for g in finite]):
            console.print(f"wrote {path}", markup=False, highlight=False)


@analysis_app.command("ladder")
def ladder(ref: str = typer.Argument(..., help="Baseline NAME@DATE to scale."),
           sizes: str = typer.Option(..., help="Model sizes as d_model x n_layers, e.g. 64x2,128x4,192x6."),
           flops: str = typer.Option("", help="IsoFLOP budgets: each size trains the tokens that spend each."),
           tokens: str = typer.Option("", help="Token budgets instead: every size at every count."),
           seeds: str = typer.Option("", help="Seeds (default: the baseline's first)."),
           convention: str = typer.Option("6ND", help="Compute convention of the fits: 6ND or 6ND+attn."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Run without asking for confirmation."),
           executor: str = ExecutorOpt, workers: Optional[int] = WorkersOpt, address: Optional[str] = AddressOpt,
           retries: int = RetriesOpt, retry_on: str = RetryOnOpt, quiet: bool = QuietOpt,
           lab: Optional[Path] = LabOpt) -> None:
    """Plan and run a scaling ladder of a baseline (sizes x budgets, an IsoFLOP grid) like a study,
    then fit L(C), L(N), L(N, D) and the IsoFLOP minima, and store the law under the baseline's date.

    Example: `ablab ladder cpu@2026-11-21 --sizes 64x2,96x3,128x4 --flops 2e12,6e12,2e13 --yes`
    """
    from ablab.analysis.scaling_data import check_convention
    from ablab.api import Lab
    from ablab.study.ladder import parse_sizes

    check_convention(convention)  # now, not after the ladder has trained
    runner = make_executor(executor, workers, retries, retry_on, lab_dir(lab), address)
    the_lab = Lab(lab_dir(lab))
    plan = the_lab.ladder_plan(ref, parse_sizes(sizes), number_list(flops, "flops") or None,
                               number_list(tokens, "tokens", int, "16384,65536") or None,
                               seed_list(seeds) or None)
    for rung in plan.rungs:
        budget = f"{rung.flops:.3g} FLOPs" if rung.flops else "token budget"
        console.print(f"{rung.name:<18} {rung.non_embedding_params:>12,} params {rung.tokens:>14,} tokens  ({budget})")
    for line in plan.skipped:
        console.print(f"skipped {line}", style="dim")
    console.print(f"{len(plan.rungs)} rungs x {len(plan.seeds)} seeds = {len(plan.rungs) * len(plan.seeds)} runs")
    if not yes and not typer.confirm("Run this ladder?"):
        raise typer.Exit(1)
    with Display(quiet) as display, watching_preparation(display):
        configs = {rung.name: rung.config for rung in plan.rungs}
        bars = StudyBars(display, f"ladder {plan.baseline.ref}", len(plan.rungs) * len(plan.seeds),
                         lambda rung, seed: configs[rung])
        outcome = the_lab.ladder(plan, runner, convention, say=console.print,
                                 progress_for=bars.progress_for, on_cell=bars.on_cell)
    if outcome.state != "finished":
        console.print(f"{outcome.state}; run the same command again to train only what is missing")
        raise typer.Exit(130 if outcome.state == "interrupted" else 1)
    print_fits(outcome.fits, outcome.reasons)
    for path in outcome.figures:
        console.print(f"wrote {path}", markup=False, highlight=False)
    console.print(f"stored {', '.join(outcome.fits) or 'no fits'} as the law of {plan.baseline.ref}")


@analysis_app.command("dynamics")
def dynamics(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Figure stem to write (PNG and SVG)."),
             lab: Optional[Path] = LabOpt) -> None:
    """Diminishing returns over one run: a power-law fit of val loss against tokens, the tokens at
    which 90/95/99% of the final improvement was reached, and benchmark scores over training.

    Example: `ablab dynamics 3f2a --out reports/3f2a-dynamics`
    """
    from ablab.analysis.crossrun import dynamics as run_dynamics

    if out is not None:
        check_output_path(out)
    d = run_dynamics(lab_dir(lab), run_id)
    if d.fit is not None:
        f = d.fit
        console.print(f"val_loss(tokens) = {f.E:.4g} + {f.A:.4g} t^-{f.alpha:.4g} over {f.n_points} points "
                      f"(E {_ci(f.E_ci)}, alpha {_ci(f.alpha_ci)})", soft_wrap=True)
    else:
        console.print(f"no fit: {d.fit_note}", style="dim", soft_wrap=True)
    for fraction, tokens in d.fractions.items():
        reached = f"{tokens:,.0f} tokens ({tokens / d.tokens[-1]:.0%} of the run)" if tokens else "not reached"
        console.print(f"{fraction:.0%} of the final improvement: {reached}")
    for task, points in d.benchmarks.items():
        console.print(f"{task}: " + ", ".join(f"step {s} {acc:.3f}" for s, _, acc in points), soft_wrap=True)
    if out is not None:
        from ablab.report import figures

        paths = figures.scaling_curve(d.tokens[1:] if d.tokens[0] == 0 else d.tokens,
                                      d.val_loss[1:] if d.tokens[0] == 0 else d.val_loss, out,
                                      fit=d.fit.predict if d.fit else None, xlabel="tokens")
        if d.benchmarks:
            groups = {task: [figures.Series([s for s, _, _ in pts], [a for _, _, a in pts], task)]
                      for task, pts in d.benchmarks.items()}
            paths += figures.loss_bands(groups, Path(f"{out}-benchmarks"), x="steps", metric="acc")
        for path in paths:
            console.print(f"wrote {path}", markup=False, highlight=False)
