"""The statistics a study's verdict and later analyses rest on.

Pure functions over lists or arrays of floats (one value per seed); SciPy does the distributions.
No I/O and no torch, so analysis and report code can call these on numbers read from the ledger.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

Values = Sequence[float] | np.ndarray

# Fewest seeds for a bootstrap interval of a paired difference: 5 seeds have 126 distinct resamples,
# 4 only 35 (a "95%" percentile interval from 35 values is little more than the range of the data).
MIN_BOOTSTRAP_SEEDS = 5
# An effect this many times the predicted minimum is flagged as a surprise to check (see `verdict`).
SURPRISE_FACTOR = 5
AGAINST_FACTOR = 2  # every seed against the prediction by more than this x the floor refutes (rule 3)


@dataclass(frozen=True)
class Summary:
    """One metric over seeds: mean, spread and a t-based confidence interval of the mean."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for one value
    sem: float  # standard error of the mean; nan for one value
    ci_low: float
    ci_high: float
    confidence: float


@dataclass(frozen=True)
class Paired:
    """An arm against the baseline over the same seeds: statistics of arm[i] - baseline[i]."""

    n: int
    mean_diff: float
    std_diff: float
    t: float
    p: float  # two-sided paired t-test
    ci_low: float  # t interval of the mean difference
    ci_high: float
    boot_low: float  # bootstrap percentile interval of the mean difference (seeds resampled); nan below 5 seeds
    boot_high: float
    confidence: float
    diffs: tuple[float, ...] = ()  # arm[i] - baseline[i], per seed
    boot_note: str = ""  # why there is no bootstrap interval; empty when there is one


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test of two independent samples."""

    t: float
    p: float
    dof: float


@dataclass(frozen=True)
class Verdict:
    """The computed outcome of a prediction and, in one sentence, the rule that produced it."""

    outcome: str  # 'supported', 'refuted' or 'inconclusive'
    reason: str  # the rule that fired, with its numbers; does not repeat the outcome
    seeds_needed: int | None = None  # total seeds estimated to resolve an inconclusive outcome
    seeds_more: int | None = None  # of those, the ones not yet run
    p: float = math.nan  # the p-value the rules read: Holm-adjusted when several arms were judged together
    adjustment: str = ""  # what was done about several arms, e.g. "Holm-adjusted across 3 arms: p 0.004 -> 0.012"
    surprise: str = ""  # set when the effect is far beyond the predicted size: something to check, not a result

    @property
    def rule(self) -> str:
        """The outcome and its reason as one standalone sentence ("supported: mean difference ...")."""
        return f"{self.outcome}: {self.reason}"


def _as_array(values: Values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty list of numbers, one per seed; got {values!r}."
        )
    return array


def _t_interval(mean: float, sem: float, n: int, confidence: float) -> tuple[float, float]:
    if n < 2:
        return math.nan, math.nan
    half = sps.t.ppf((1 + confidence) / 2, n - 1) * sem
    return float(mean - half), float(mean + half)


def summarize(values: Values, confidence: float = 0.95) -> Summary:
    """Mean, std (ddof=1), standard error and t confidence interval; one value gives nan spread."""
    x = _as_array(values, "values")
    n = x.size
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    sem = std / math.sqrt(n)
    low, high = _t_interval(mean, sem, n, confidence)
    return Summary(n, mean, std, sem, low, high, confidence)


def noise_floor(values: Values) -> float:
    """The seed-noise floor of a metric: its standard deviation across seeds (ddof=1).

    nan for fewer than two values, where no spread has been measured.
    """
    x = np.asarray(values, dtype=float)
    return float(x.std(ddof=1)) if x.size >= 2 else math.nan


def bootstrap_ci(
    values: Values,
    stat: Callable = np.mean,
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat`, resampling values (seeds) with replacement
    (scipy.stats.bootstrap; a `stat` without numpy's axis= keyword is called once per resample).

    Reproducible for a given `seed`. Fewer than two values give (nan, nan): one seed has no spread
    to resample.
    """
    x = _as_array(values, "values")
    if x.size < 2:
        return math.nan, math.nan
    # Batches of resamples, so that n_boot resamples of a long series never need an n_boot x n matrix.
    interval = sps.bootstrap((x,), stat, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                             batch=max(1, 2_000_000 // x.size), rng=np.random.default_rng(seed)).confidence_interval
    return float(interval.low), float(interval.high)


def paired(
    arm: Values,
    baseline: Values,
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
) -> Paired:
    """Paired comparison of an arm with the baseline over the same seeds (arm[i] - baseline[i]).

    The t statistic and p-value are scipy.stats.ttest_rel's, except when every difference is the
    same (up to float rounding of the inputs), where the t-test is 0/0. There the verdict still
    needs an answer, so: std_diff = 0, p = 1.0 (t = 0) if the mean difference is 0, and
    p = 0.0 (t = +-inf) otherwise; the confidence intervals collapse to the difference itself.
    One seed gives nan for everything but the mean difference. Below MIN_BOOTSTRAP_SEEDS the
    bootstrap interval is nan and `boot_note` says why.
    """
    a, b = _as_array(arm, "arm"), _as_array(baseline, "baseline")
    if a.size != b.size:
        raise ValueError(
            f"arm has {a.size} values and baseline {b.size}; a paired comparison needs one value "
            "per seed on both sides, over the same seeds."
        )
    diffs = a - b
    n, mean_diff = diffs.size, float(diffs.mean())
    per_seed = {"diffs": tuple(diffs.tolist()), "boot_note": _no_bootstrap(n)}
    if n < 2:
        return Paired(n, mean_diff, *(math.nan,) * 7, confidence, **per_seed)
    rounding = 8 * np.finfo(float).eps * max(np.abs(a).max(), np.abs(b).max())
    if np.ptp(diffs) <= rounding:
        if abs(mean_diff) <= rounding:
            t, p = 0.0, 1.0
        else:
            t, p = math.copysign(math.inf, mean_diff), 0.0
        boot = (mean_diff,) * 2 if n >= MIN_BOOTSTRAP_SEEDS else (math.nan,) * 2
        return Paired(n, mean_diff, 0.0, t, p, mean_diff, mean_diff, *boot, confidence, **per_seed)
    std_diff = float(diffs.std(ddof=1))
    test = sps.ttest_rel(a, b)
    low, high = _t_interval(mean_diff, std_diff / math.sqrt(n), n, confidence)
    boot = bootstrap_ci(diffs, np.mean, confidence, n_boot, seed) if n >= MIN_BOOTSTRAP_SEEDS else (math.nan,) * 2
    return Paired(
        n, mean_diff, std_diff, float(test.statistic), float(test.pvalue),
        low, high, *boot, confidence, **per_seed,
    )


def _no_bootstrap(n: int) -> str:
    """Why `n` seeds give no bootstrap interval ('' when they give one)."""
    if n >= MIN_BOOTSTRAP_SEEDS:
        return ""
    resamples = math.comb(2 * n - 1, n)  # distinct multisets of n seeds drawn from n
    return (f"no bootstrap interval: {_seeds(n)} have only {resamples} distinct resamples, too few for a "
            f"percentile interval; it needs at least {MIN_BOOTSTRAP_SEEDS} seeds")


def welch(a: Values, b: Values) -> Welch:
    """Welch's t-test (unequal variances) of two independent samples; t is for mean(a) - mean(b)."""
    test = sps.ttest_ind(_as_array(a, "a"), _as_array(b, "b"), equal_var=False)
    return Welch(float(test.statistic), float(test.pvalue), float(test.df))


def cohens_d(a: Values, b: Values) -> float:
    """Cohen's d of mean(a) - mean(b) in units of the pooled standard deviation."""
    x, y = _as_array(a, "a"), _as_array(b, "b")
    dof = x.size + y.size - 2
    if dof < 1:
        return math.nan
    pooled_var = ((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / dof
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((x.mean() - y.mean()) / np.sqrt(pooled_var))


def cohens_d_paired(diffs: Values) -> float:
    """Cohen's d_z of paired differences: mean difference over their standard deviation."""
    d = _as_array(diffs, "diffs")
    if d.size < 2:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(d.mean() / d.std(ddof=1))


def holm(p_values: Values) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (step-down, monotone, at most 1)."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1]; got {list(p_values)!r}.")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


def _check_levels(alpha: float, power: float) -> None:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(
            f"alpha and power must lie strictly between 0 and 1; got {alpha}, {power}."
        )


def _paired_power(
    noncentrality: np.ndarray | float, n: np.ndarray | int, alpha: float
) -> np.ndarray:
    # Two-sided paired t-test with n seeds: T ~ noncentral t(n - 1, effect / sd * sqrt(n)).
    # The wrong-sign tail P(T < -c) is taken as sf(c) at -noncentrality: nct.cdf returns nan
    # there for large noncentralities (SciPy 1.17), the mirrored form does not.
    dof = np.asarray(n) - 1
    critical = sps.t.ppf(1 - alpha / 2, dof)
    noncentrality = np.asarray(noncentrality)
    return sps.nct.sf(critical, dof, noncentrality) + sps.nct.sf(critical, dof, -noncentrality)


def seeds_needed(
    effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, max_seeds: int = 1000
) -> int | None:
    """Smallest number of seeds (>= 2) at which a two-sided paired t-test at level `alpha` detects
    a true mean difference `effect`, whose per-seed differences have standard deviation `sd`, with
    at least `power`. None when the effect is 0 or more than `max_seeds` seeds would be needed.
    """
    _check_levels(alpha, power)
    if not (math.isfinite(effect) and math.isfinite(sd) and sd >= 0):
        raise ValueError(f"effect and sd must be finite numbers with sd >= 0; got {effect}, {sd}.")
    if effect == 0 or max_seeds < 2:
        return None
    if sd == 0:  # noiseless differences: two seeds show a constant shift (see `paired`)
        return 2
    n = np.arange(2, max_seeds + 1)
    reached = np.nonzero(_paired_power(abs(effect) / sd * np.sqrt(n), n, alpha) >= power)[0]
    return int(n[reached[0]]) if reached.size else None


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference a paired t-test with `n` seeds detects with `power`
    (the inverse of `seeds_needed`)."""
    _check_levels(alpha, power)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 seeds; got n = {n}.")
    # At power <= alpha even a zero effect is "detected", at the false-positive rate.
    if sd == 0 or _paired_power(0.0, n, alpha) >= power:
        return 0.0
    high = 1.0
    while _paired_power(high, n, alpha) < power:  # with 2 seeds the t tails are heavy: widen
        high *= 2
    noncentrality = optimize.brentq(lambda nc: _paired_power(nc, n, alpha) - power, 0.0, high)
    return float(noncentrality * sd / math.sqrt(n))


def correlation_matrix(
    columns: dict[str, Values], method: str = "pearson"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pairwise correlations of equal-length columns: (names, r matrix, p matrix).

    Each pair uses the rows where both values are finite (pairwise complete cases), so one missing
    metric in a run drops that run from its pairs only. Fewer than 3 complete rows or a constant
    column give nan.
    """
    tests = {"pearson": sps.pearsonr, "spearman": sps.spearmanr}
    if method not in tests:
        raise ValueError(f"unknown correlation method {method!r}; use 'pearson' or 'spearman'.")
    names = list(columns)
    data = [np.asarray(columns[name], dtype=float) for name in names]
    if len({column.size for column in data}) > 1:
        sizes = {name: column.size for name, column in zip(names, data)}
        raise ValueError(f"columns must have one value per row and equal lengths; got {sizes}.")
    k = len(names)
    r, p = np.full((k, k), np.nan), np.full((k, k), np.nan)
    for i in range(k):
        for j in range(i, k):
            complete = np.isfinite(data[i]) & np.isfinite(data[j])
            x, y = data[i][complete], data[j][complete]
            if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = tests[method](x, y)
            r[i, j] = r[j, i] = float(result.statistic)
            p[i, j] = p[j, i] = float(result.pvalue)
    return names, r, p


# --- the verdict on a study's prediction -------------------------------------------------------


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _resolve_estimate(effect: float, sd: float, alpha: float, n: int) -> tuple[int | None, str]:
    """Seeds needed in all to detect `effect` given difference spread `sd`, and how to say it to
    someone who has run `n` of them."""
    if not (math.isfinite(sd) and sd > 0):
        return None, "the seeds needed cannot be estimated without a measured spread"
    if not (math.isfinite(effect) and effect > 0):
        return None, "the seeds needed cannot be estimated without a nonzero effect to detect"
    needed = seeds_needed(effect, sd, alpha=alpha)
    if needed is None:
        return None, "more than 1000 seeds would be needed to resolve it"
    if needed <= n:
        return needed, (f"the {_seeds(n)} run already give 80% power for an effect of {effect:.3g}, "
                        "so more seeds are unlikely to change this outcome")
    return needed, f"about {_seeds(needed - n).replace('seed', 'more seed')} ({needed} in all) would resolve it"


def _rules(c: Paired, p: float, direction: str, min_effect: float, floor: float, alpha: float,
           arms: int) -> tuple[str, str, int | None]:
    """(outcome, reason, seeds needed) by the first of `verdict`'s rules that fires."""
    d, seeds = c.mean_diff, _seeds(c.n)
    predicted = -1.0 if direction == "decrease" else 1.0
    spread = c.std_diff if math.isfinite(c.std_diff) and c.std_diff > 0 else floor
    target = max(abs(d), min_effect)
    p_text = f"{'Holm-adjusted p' if arms > 1 else 'p'} = {p:.3g}"
    evidence = f"{p_text} with {seeds}"
    if math.isfinite(floor) and abs(d) <= floor:
        needed, estimate = _resolve_estimate(target, spread, alpha / arms, c.n)
        return "inconclusive", (f"mean difference {d:+.3g} is within the noise floor {floor:.3g} with {seeds}; "
                                f"{estimate}"), needed
    interval = f"{c.confidence:.0%} CI {c.ci_low:+.3g} to {c.ci_high:+.3g}"
    if p < alpha and d * predicted < 0:
        return "refuted", (f"the arm moved the metric the other way: mean difference {d:+.3g} where a {direction} "
                           f"was predicted, significant ({evidence}; {interval})"), None
    against = math.isfinite(floor) and all(x * predicted < 0 and abs(x) > AGAINST_FACTOR * floor for x in c.diffs)
    if against and c.diffs:
        ratio = f", the smallest {min(map(abs, c.diffs)) / floor:.1f}x the floor" if floor > 0 else ""
        return "refuted", (f"every seed moved the metric against the predicted {direction} by more than "
                           f"{AGAINST_FACTOR}x the noise floor {floor:.3g}: differences "
                           f"{', '.join(f'{x:+.3g}' for x in c.diffs)}{ratio} "
                           f"({evidence})"), None
    if not p < alpha:
        needed, estimate = _resolve_estimate(target, spread, alpha / arms, c.n)
        tested = f"{p_text} >= alpha {alpha:.3g}" if math.isfinite(p) else "no p-value"
        return "inconclusive", (f"not significant: {tested} with {seeds} (mean difference {d:+.3g}); "
                                f"{estimate}"), needed
    if abs(d) >= min_effect:
        return "supported", (f"mean difference {d:+.3g} is a {direction} of at least the minimum effect "
                             f"{min_effect:.3g} ({evidence})"), None
    far_bound = c.ci_low if direction == "decrease" else c.ci_high
    if abs(far_bound) < min_effect:
        return "refuted", (f"mean difference {d:+.3g} is significant ({evidence}) but smaller than the minimum "
                           f"effect {min_effect:.3g}, and the {interval} excludes an effect that large"), None
    return "inconclusive", (f"mean difference {d:+.3g} is significant ({evidence}) but smaller than the minimum "
                            f"effect {min_effect:.3g}, and the {interval} still allows an effect that large"), None


def _surprise(d: float, min_effect: float, floor: float) -> str:
    if min_effect <= 0 or abs(d) < SURPRISE_FACTOR * min_effect or (math.isfinite(floor) and abs(d) <= floor):
        return ""
    return (f"a surprise to check: the mean difference {d:+.3g} is {abs(d) / min_effect:.0f}x the predicted "
            f"minimum effect {min_effect:.3g}; rule out a bug, a leak of validation data or a wrong baseline")


def verdict(
    comparison: Paired,
    direction: str,
    min_effect: float,
    noise_floor: float,
    alpha: float = 0.05,
    adjusted_p: float | None = None,
    arms: int = 1,
) -> Verdict:
    """The outcome of a prediction ("the arm moves the metric in `direction` by at least
    `min_effect`") from a paired comparison, by the first rule that fires:

    1. |mean difference| within the seed-noise floor (when known) -> inconclusive;
    2. significant, opposite sign (at the default levels: the 95% CI excludes zero on the wrong
       side) -> refuted;
    3. every seed's difference against the prediction and beyond AGAINST_FACTOR x the floor -> refuted,
       whatever p says: with 2 or 3 seeds a t-test rarely reaches alpha even when every seed disagrees;
    4. p >= alpha (or no p-value) -> inconclusive;
    5. significant, predicted sign, |difference| >= min_effect -> supported;
    6. significant, predicted sign, smaller than min_effect -> refuted when the CI's far bound is
       closer to zero than min_effect, else inconclusive.
    Rules 1 and 4 also estimate the seeds that would resolve the question (in all, and more than
    those run), at level alpha / arms so that the estimate holds under Holm's strictest step.
    `adjusted_p` is the arm's p-value Holm-adjusted across `arms` arms (`arm_verdicts`); the
    p-value rules read it in place of the comparison's own. An effect beyond the floor and at least
    SURPRISE_FACTOR x min_effect is flagged in `surprise` without changing the outcome: predicted
    effects are seldom exceeded that much, and a bug, a leak or a wrong baseline often are.
    """
    if direction not in ("decrease", "increase"):
        raise ValueError(f"direction must be 'decrease' or 'increase'; got {direction!r}.")
    if not min_effect >= 0:
        raise ValueError(f"min_effect must be a number >= 0; got {min_effect}.")
    c = comparison
    p = c.p if adjusted_p is None else adjusted_p
    arms = arms if adjusted_p is not None else 1
    outcome, reason, needed = _rules(c, p, direction, min_effect, noise_floor, alpha, arms)
    adjustment = (f"Holm-adjusted across {arms} arms: p {c.p:.3g} -> {p:.3g}" if arms > 1
                  else "one arm against the baseline: no adjustment across arms needed")
    return Verdict(outcome, reason, needed, None if needed is None else max(needed - c.n, 0), p, adjustment,
                   _surprise(c.mean_diff, min_effect, noise_floor))


def arm_verdicts(comparisons: dict[str, Paired], direction: str, min_effect: float, noise_floor: float,
                 alpha: float = 0.05) -> dict[str, Verdict]:
    """Each arm's verdict against the same baseline, its p-value Holm-adjusted across the arms, so
    that judging several arms does not raise the chance that one reads "supported" by luck."""
    arms = list(comparisons)
    adjusted = holm([comparisons[arm].p for arm in arms]) if len(arms) > 1 else [None] * len(arms)
    return {arm: verdict(comparisons[arm], direction, min_effect, noise_floor, alpha, p, len(arms))
            for arm, p in zip(arms, adjusted)}
