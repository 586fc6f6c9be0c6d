"""Scaling analyses: IsoFLOP profiles, an arm's compute-efficiency gain over a baseline law, whether
that gain grows with size, and how fast a training curve reaches its final loss.

The fits themselves (compute conventions, power laws, Chinchilla's L(N, D)) live in
`ablab.analysis.scaling_laws` and are re-exported here, so `from ablab.analysis.scaling import ...` reaches everything.
Pure numerics over arrays of floats: no ledger, no plotting, no torch. Results are dataclasses whose
`to_dict()` is JSON-able, for the ledger.

    law = fit_power_law(baseline_compute, baseline_loss, name="C")
    gain = efficiency_gain(law, arm_compute, arm_losses_per_seed)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as sps

from ablab.analysis import scaling_laws
from ablab.analysis.scaling_laws import (CHINCHILLA_GRID, CONVENTIONS, HUBER_DELTA, ChinchillaFit, PowerLawFit, Values,
                                         _check_lengths, _json, _positive, compute, fit_chinchilla, fit_power_law,
                                         percentile_interval)
from ablab.errors import UserError

__all__ = ["CHINCHILLA_GRID", "CONVENTIONS", "HUBER_DELTA", "ChinchillaFit", "EfficiencyGain", "IsoFlopBudget",
           "IsoFlopFit", "PowerLawFit", "Trend", "compute", "efficiency_gain", "fit_chinchilla", "fit_power_law",
           "gain_trend", "isoflop", "percentile_interval", "tokens_to_fraction"]


@dataclass(frozen=True)
class IsoFlopBudget:
    """One compute budget's parabola of loss in log N, or why it was skipped."""

    compute: float  # geometric mean of the budget's points' compute
    n_points: int
    n_opt: float | None = None  # the parabola's minimum; None when skipped
    d_opt: float | None = None  # tokens at n_opt along the budget's runs
    loss_opt: float | None = None
    curvature: float | None = None  # coefficient of (log N)^2; <= 0 opens downward, has no minimum
    inside: bool | None = None  # whether n_opt lies within the budget's sampled N
    reason: str = ""  # why a budget was skipped


@dataclass(frozen=True)
class IsoFlopFit:
    """Hoffmann et al.'s approach 2: N_opt = k C^a and D_opt = k' C^b over per-budget minima."""

    n_exponent: float  # a
    n_coefficient: float  # k
    d_exponent: float  # b
    d_coefficient: float  # k'
    n_exponent_ci: tuple[float, float]  # t interval of the log-log slope; nan with two budgets
    d_exponent_ci: tuple[float, float]
    budgets: list[IsoFlopBudget]  # used budgets, in increasing compute
    skipped: list[IsoFlopBudget]  # budgets with fewer than 3 distinct N or a downward parabola
    convention: str
    embeddings: bool
    tolerance: float  # relative compute difference within which points form one budget
    confidence: float

    def optimal_allocation(self, compute):
        """(N_opt, D_opt) the power laws give at `compute` (scalar or array)."""
        c = np.asarray(compute, dtype=float)
        n_opt, d_opt = self.n_coefficient * c ** self.n_exponent, self.d_coefficient * c ** self.d_exponent
        return (float(n_opt), float(d_opt)) if n_opt.ndim == 0 else (n_opt, d_opt)

    def to_dict(self) -> dict:
        return _json(asdict(self))


def _budgets(flops: np.ndarray, tolerance: float) -> list[np.ndarray]:
    # Sorted by compute, a point joins the current budget while it is within `tolerance` of the
    # budget's smallest compute; otherwise it opens the next budget.
    order = np.argsort(flops)
    groups, current = [], [order[0]]
    for i in order[1:]:
        if flops[i] <= flops[current[0]] * (1 + tolerance):
            current.append(i)
        else:
            groups.append(np.array(current))
            current = [i]
    groups.append(np.array(current))
    return groups


def _fit_budget(flops: float, log_n: np.ndarray, log_d: np.ndarray, loss: np.ndarray) -> IsoFlopBudget:
    if np.unique(log_n).size < 3:
        return IsoFlopBudget(flops, loss.size, reason="fewer than 3 distinct model sizes")
    curvature, slope, intercept = np.polyfit(log_n, loss, 2)
    if curvature <= 0:
        return IsoFlopBudget(flops, loss.size, curvature=float(curvature),
                             reason="the parabola of loss in log N opens downward, so it has no minimum")
    log_n_opt = -slope / (2 * curvature)
    # D_opt from the budget's own (N, D) pairs: for exact C = 6 N D budgets this is C / (6 N_opt), and
    # it stays right under any compute convention.
    d_slope, d_intercept = np.polyfit(log_n, log_d, 1)
    return IsoFlopBudget(
        flops, loss.size, n_opt=math.exp(log_n_opt), d_opt=math.exp(d_intercept + d_slope * log_n_opt),
        loss_opt=float(intercept + slope * log_n_opt + curvature * log_n_opt ** 2), curvature=float(curvature),
        inside=bool(log_n.min() <= log_n_opt <= log_n.max()))


def _loglog_line(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, tuple[float, float]]:
    """Slope, intercept and t interval of the slope of log y against log x."""
    fit = sps.linregress(np.log(x), np.log(y))
    if x.size < 3:
        return float(fit.slope), float(fit.intercept), (math.nan, math.nan)
    half = sps.t.ppf((1 + confidence) / 2, x.size - 2) * fit.stderr
    return float(fit.slope), float(fit.intercept), (float(fit.slope - half), float(fit.slope + half))


def isoflop(n_params: Values, tokens: Values, loss: Values, compute: Values | None = None, convention: str = "6ND",
            embeddings: bool = False, tolerance: float = 0.1, confidence: float = 0.95, n_layers: int | None = None,
            d_model: int | None = None, seq_len: int | None = None) -> IsoFlopFit:
    """IsoFLOP analysis: points whose compute agrees within `tolerance` form a budget; each budget with
    3+ model sizes gets a parabola of loss in log N and its minimum; then N_opt = k C^a and D_opt = k' C^b
    by least squares in log-log. `compute` defaults to `scaling_laws.compute(n_params, tokens, convention, ...)`."""
    n, d, losses = _positive(n_params, "n_params"), _positive(tokens, "tokens"), _positive(loss, "loss")
    if compute is None:
        compute = scaling_laws.compute(n, d, convention, n_layers=n_layers, d_model=d_model, seq_len=seq_len)
    elif convention not in CONVENTIONS:
        raise UserError(f"Unknown compute convention {convention!r}; use one of {', '.join(CONVENTIONS)}.")
    c = _positive(compute, "compute")
    _check_lengths(n, d, losses, c)
    used, skipped = [], []
    for rows in _budgets(c, tolerance):
        budget = _fit_budget(float(np.exp(np.log(c[rows]).mean())), np.log(n[rows]), np.log(d[rows]), losses[rows])
        (used if budget.n_opt is not None else skipped).append(budget)
    if len(used) < 2:
        raise UserError(f"An IsoFLOP fit needs at least 2 compute budgets with 3 or more model sizes each; got "
                        f"{len(used)}; add runs at more budgets (e.g. with `ablab ladder`).")
    budget_c = np.array([b.compute for b in used])
    a, log_k, a_ci = _loglog_line(budget_c, np.array([b.n_opt for b in used]), confidence)
    b, log_k2, b_ci = _loglog_line(budget_c, np.array([b.d_opt for b in used]), confidence)
    return IsoFlopFit(n_exponent=a, n_coefficient=math.exp(log_k), d_exponent=b, d_coefficient=math.exp(log_k2),
                      n_exponent_ci=a_ci, d_exponent_ci=b_ci, budgets=used, skipped=skipped, convention=convention,
                      embeddings=embeddings, tolerance=tolerance, confidence=confidence)


@dataclass(frozen=True)
class EfficiencyGain:
    """How much compute the baseline law needs to match an arm: C_predicted / C_observed."""

    gain: float  # inf when the arm's loss is below the law's irreducible loss E
    ci_low: float  # percentile interval over the law's bootstrap refits x resampled seeds
    ci_high: float
    compute: float  # the arm's observed compute
    compute_predicted: float  # the compute at which the baseline law reaches the arm's loss
    loss: float  # the arm's mean loss over seeds
    n_seeds: int
    confidence: float
    convention: str  # the law's compute convention, which the arm's compute must share
    embeddings: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _json(asdict(self))


def _range_warnings(law: PowerLawFit, flops: float, loss: float, predicted: float) -> list[str]:
    notes = []
    if not law.x_min <= flops <= law.x_max:
        notes.append(f"The arm's compute {flops:.3g} lies outside the law's fitted range "
                     f"[{law.x_min:.3g}, {law.x_max:.3g}]; the gain extrapolates the law.")
    if loss <= law.E:
        notes.append(f"The arm's loss {loss:.4g} is below the law's irreducible loss E = {law.E:.4g}: no baseline "
                     "compute reaches it, so the gain is reported as inf.")
    elif not law.x_min <= predicted <= law.x_max:
        notes.append(f"The arm's loss {loss:.4g} lies outside the losses the law was fitted on "
                     f"[{law.predict(law.x_max):.4g}, {law.predict(law.x_min):.4g}]; the baseline compute that "
                     "matches it is extrapolated.")
    return notes


def efficiency_gain(law: PowerLawFit, compute: float, losses: Values, confidence: float = 0.95,
                    seed: int = 0) -> EfficiencyGain:
    """The compute-efficiency gain of an arm that reached `losses` (one per seed) at `compute`,
    against the baseline's L(C) law. The interval pairs each of the law's bootstrap refits with one
    resample of the seeds (with replacement, `seed`-ed) and takes percentiles of the gains."""
    observed = float(_positive([compute], "compute")[0])
    seed_losses = _positive(losses, "losses")
    mean_loss = float(seed_losses.mean())
    predicted = law.inverse(mean_loss)
    gain = math.inf if mean_loss <= law.E else predicted / observed
    notes = _range_warnings(law, observed, mean_loss, predicted)
    boot = np.asarray(law.boot, dtype=float).reshape(-1, 3)
    if boot.shape[0] < 2:
        low = high = math.nan
        notes.append("The law has no bootstrap refits, so the gain has no interval; refit it with n_boot > 0.")
    else:
        rng = np.random.default_rng(seed)
        resampled = seed_losses[rng.integers(0, seed_losses.size, (boot.shape[0], seed_losses.size))].mean(axis=1)
        excess = resampled - boot[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            gains = np.where(excess > 0, (boot[:, 1] / np.where(excess > 0, excess, 1.0)) ** (1 / boot[:, 2]),
                             math.inf) / observed
        low, high = percentile_interval(gains, confidence)
    return EfficiencyGain(gain=float(gain), ci_low=low, ci_high=high, compute=observed,
                          compute_predicted=float(predicted) if mean_loss > law.E else math.inf, loss=mean_loss,
                          n_seeds=int(seed_losses.size), confidence=confidence, convention=law.convention,
                          embeddings=law.embeddings, warnings=notes)


@dataclass(frozen=True)
class Trend:
    """How an arm's gain changes with model size: the slope of log gain against log size."""

    slope: float
    ci_low: float
    ci_high: float
    intercept: float
    direction: str  # "grows", "stable" (the slope's interval includes 0) or "shrinks"
    sentence: str  # what the direction implies for the idea
    n_sizes: int
    weighted: bool  # True when per-size gain intervals weighted the fit
    confidence: float
    size_at_no_gain: float | None = None  # where a shrinking gain's line reaches gain 1

    def to_dict(self) -> dict:
        return _json(asdict(self))


SENTENCES = {
    "grows": "The gain grows with model size, so the idea likely scales; confirm it at the next size up.",
    "stable": "The gain holds steady across sizes (the slope's interval includes 0), so expect a similar gain "
              "at nearby larger sizes.",
    "shrinks": "The gain shrinks with model size: a shrinking gain means the idea likely does not scale.",
}


def _slope_interval(log_size, log_gain, sigma) -> tuple[float, float, float]:
    """Slope, its standard error and intercept; with per-size sigma (weighted least squares), the
    larger of the stated-error and the residual-scatter standard error, so that gains scattering more
    than their intervals claim widen the interval instead of hiding it."""
    weights = np.ones_like(log_size) if sigma is None else 1 / sigma ** 2
    centre = np.average(log_size, weights=weights)
    sxx = np.sum(weights * (log_size - centre) ** 2)
    slope = np.sum(weights * (log_size - centre) * log_gain) / sxx
    intercept = np.average(log_gain, weights=weights) - slope * centre
    residual = log_gain - intercept - slope * log_size
    scatter_se = math.sqrt(np.sum(weights * residual ** 2) / (log_size.size - 2) / sxx)
    se = scatter_se if sigma is None else max(scatter_se, math.sqrt(1 / sxx))
    return float(slope), se, float(intercept)


def gain_trend(sizes: Values, gains: Values, gain_cis: Sequence[tuple[float, float]] | None = None,
               confidence: float = 0.95) -> Trend:
    """Whether the gain grows, holds or shrinks across 3+ model sizes: least squares of log gain on
    log size (weighted by the gains' intervals when given) with a t interval (n - 2 dof) of the slope."""
    size = _positive(sizes, "sizes")
    gain = _positive(gains, "gains", fix="an infinite gain (an arm below the law's E) has no trend; leave that size "
                     "out or refit the law on more runs")
    _check_lengths(size, gain)
    if size.size < 3 or np.unique(size).size < 3:
        raise UserError(f"A gain trend needs gains at 3 or more model sizes; got {np.unique(size).size}; "
                        "measure the arm at more sizes (e.g. with `ablab ladder`).")
    sigma = None
    if gain_cis is not None:
        bounds = _positive(np.asarray(gain_cis, dtype=float).ravel(), "gain_cis",
                           fix="pass finite (low, high) intervals or none").reshape(-1, 2)
        _check_lengths(size, bounds[:, 0])
        z = sps.norm.ppf((1 + confidence) / 2)
        sigma = np.maximum((np.log(bounds[:, 1]) - np.log(bounds[:, 0])) / (2 * z), 1e-12)
    slope, se, intercept = _slope_interval(np.log(size), np.log(gain), sigma)
    half = sps.t.ppf((1 + confidence) / 2, size.size - 2) * se
    low, high = float(slope - half), float(slope + half)
    direction = "grows" if low > 0 else "shrinks" if high < 0 else "stable"
    no_gain = math.exp(-intercept / slope) if direction == "shrinks" else None
    return Trend(slope=slope, ci_low=low, ci_high=high, intercept=intercept, direction=direction,
                 sentence=SENTENCES[direction], n_sizes=int(size.size), weighted=sigma is not None,
                 confidence=confidence, size_at_no_gain=no_gain)


def tokens_to_fraction(tokens: Values, loss: Values, fractions: Sequence[float] = (0.9, 0.95, 0.99),
                       final_window: int = 3) -> dict[float, float | None]:
    """The first token count at which a training curve has made each fraction of its total improvement.

    The improvement runs from the first logged loss to the final loss, taken as the minimum of the last
    `final_window` points so that one noisy upward last point does not make the targets too easy; each
    crossing is linearly interpolated between logged points. A curve that never improved gives None.
    """
    t, losses = np.asarray(tokens, dtype=float), _positive(loss, "loss")
    _check_lengths(t, losses)
    if t.size < 2 or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
        raise UserError("tokens_to_fraction needs 2 or more points with increasing token counts; pass one "
                        "curve's logged (tokens, loss) in order.")
    if final_window < 1:
        raise UserError(f"final_window must be 1 or more points; got {final_window}.")
    if any(not 0 < f <= 1 for f in fractions):
        raise UserError(f"Fractions must lie in (0, 1]; got {list(fractions)}.")
    start, final = losses[0], losses[-final_window:].min()
    if final >= start:
        return {f: None for f in fractions}
    reached = {}
    for f in fractions:
        target = start - f * (start - final)
        i = int(np.argmax(losses <= target))  # the first logged point at or below the target
        step = (losses[i - 1] - target) / (losses[i - 1] - losses[i])
        reached[f] = float(t[i - 1] + step * (t[i] - t[i - 1]))
    return reached
