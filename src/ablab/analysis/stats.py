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
    boot_low: float  # bootstrap percentile interval of the mean difference (seeds resampled)
    boot_high: float
    confidence: float


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test of two independent samples."""

    t: float
    p: float
    dof: float


@dataclass(frozen=True)
class Verdict:
    """The computed outcome of a prediction and the one-sentence rule that produced it."""

    outcome: str  # 'supported', 'refuted' or 'inconclusive'
    rule: str
    seeds_needed: int | None = None  # estimate given with inconclusive outcomes, when one exists


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
    One seed gives nan for everything but the mean difference.
    """
    a, b = _as_array(arm, "arm"), _as_array(baseline, "baseline")
    if a.size != b.size:
        raise ValueError(
            f"arm has {a.size} values and baseline {b.size}; a paired comparison needs one value "
            "per seed on both sides, over the same seeds."
        )
    diffs = a - b
    n, mean_diff = diffs.size, float(diffs.mean())
    if n < 2:
        return Paired(n, mean_diff, *(math.nan,) * 7, confidence)
    rounding = 8 * np.finfo(float).eps * max(np.abs(a).max(), np.abs(b).max())
    if np.ptp(diffs) <= rounding:
        if abs(mean_diff) <= rounding:
            t, p = 0.0, 1.0
        else:
            t, p = math.copysign(math.inf, mean_diff), 0.0
        collapsed = (mean_diff,) * 4  # both intervals are the difference itself
        return Paired(n, mean_diff, 0.0, t, p, *collapsed, confidence)
    std_diff = float(diffs.std(ddof=1))
    test = sps.ttest_rel(a, b)
    low, high = _t_interval(mean_diff, std_diff / math.sqrt(n), n, confidence)
    boot_low, boot_high = bootstrap_ci(diffs, np.mean, confidence, n_boot, seed)
    return Paired(
        n, mean_diff, std_diff, float(test.statistic), float(test.pvalue),
        low, high, boot_low, boot_high, confidence,
    )


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


def _resolve_estimate(effect: float, sd: float, alpha: float) -> tuple[int | None, str]:
    """Seeds needed to detect `effect` given difference spread `sd`, and how to say it."""
    if not (math.isfinite(sd) and sd > 0):
        return None, "the seeds needed cannot be estimated without a measured spread"
    if not (math.isfinite(effect) and effect > 0):
        return None, "the seeds needed cannot be estimated without a nonzero effect to detect"
    needed = seeds_needed(effect, sd, alpha=alpha)
    if needed is None:
        return None, "more than 1000 seeds would be needed to resolve it"
    return needed, f"about {needed} seeds would resolve it"


def verdict(
    comparison: Paired,
    direction: str,
    min_effect: float,
    noise_floor: float,
    alpha: float = 0.05,
) -> Verdict:
    """The outcome of a prediction ("the arm moves the metric in `direction` by at least
    `min_effect`") from a paired comparison, by the first rule that fires:

    1. |mean difference| within the seed-noise floor (when known) -> inconclusive;
    2. p >= alpha (or no p-value) -> inconclusive;
    3. significant, opposite sign -> refuted;
    4. significant, predicted sign, |difference| >= min_effect -> supported;
    5. significant, predicted sign, smaller than min_effect -> refuted when the CI's far bound is
       closer to zero than min_effect, else inconclusive.
    Rules 1 and 2 also estimate the seeds that would resolve the question (`seeds_needed`).
    """
    if direction not in ("decrease", "increase"):
        raise ValueError(f"direction must be 'decrease' or 'increase'; got {direction!r}.")
    if not min_effect >= 0:
        raise ValueError(f"min_effect must be a number >= 0; got {min_effect}.")
    c, d = comparison, comparison.mean_diff
    seeds = _seeds(c.n)
    spread = c.std_diff if math.isfinite(c.std_diff) and c.std_diff > 0 else noise_floor
    target = max(abs(d), min_effect)

    if math.isfinite(noise_floor) and abs(d) <= noise_floor:
        needed, estimate = _resolve_estimate(target, spread, alpha)
        return Verdict("inconclusive", f"inconclusive: mean difference {d:.3g} is within the noise "
                       f"floor {noise_floor:.3g} with {seeds}; {estimate}", needed)
    if not c.p < alpha:
        needed, estimate = _resolve_estimate(target, spread, alpha)
        tested = f"p = {c.p:.3g} >= alpha {alpha:.3g}" if math.isfinite(c.p) else "no p-value"
        return Verdict("inconclusive", f"inconclusive: not significant: {tested} with {seeds} "
                       f"(mean difference {d:.3g}); {estimate}", needed)

    predicted = -1.0 if direction == "decrease" else 1.0
    evidence = f"p = {c.p:.3g} with {seeds}"
    if d * predicted < 0:
        return Verdict("refuted", f"refuted: the arm moved the metric the other way: mean "
                       f"difference {d:.3g} where a {direction} was predicted ({evidence})")
    if abs(d) >= min_effect:
        return Verdict("supported", f"supported: mean difference {d:.3g} is a {direction} of at "
                       f"least the minimum effect {min_effect:.3g} ({evidence})")
    far_bound = c.ci_low if direction == "decrease" else c.ci_high
    interval = f"{c.confidence:.0%} CI {c.ci_low:.3g} to {c.ci_high:.3g}"
    if abs(far_bound) < min_effect:
        return Verdict("refuted", f"refuted: mean difference {d:.3g} is significant ({evidence}) "
                       f"but smaller than the minimum effect {min_effect:.3g}, and the {interval} "
                       f"excludes an effect that large")
    return Verdict("inconclusive", f"inconclusive: mean difference {d:.3g} is significant "
                   f"({evidence}) but smaller than the minimum effect {min_effect:.3g}, and the "
                   f"{interval} still allows an effect that large")
