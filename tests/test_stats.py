"""ablab.analysis.stats against hand-computed values, SciPy's own results and simulation."""

import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from ablab.analysis import stats

# A textbook sample: mean 5, sum of squared deviations 32, so std (ddof=1) = sqrt(32 / 7).
SAMPLE = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]


def test_summarize_matches_hand_computation():
    summary = stats.summarize(SAMPLE)
    std = math.sqrt(32 / 7)
    half_width = 2.364624251592785 * std / math.sqrt(8)  # t(0.975, df=7)
    assert summary.n == 8 and summary.mean == pytest.approx(5.0)
    assert summary.std == pytest.approx(std) and summary.sem == pytest.approx(std / math.sqrt(8))
    assert summary.ci_low == pytest.approx(5.0 - half_width)
    assert summary.ci_high == pytest.approx(5.0 + half_width)
    wider = stats.summarize(SAMPLE, confidence=0.99)
    assert wider.ci_low < summary.ci_low and wider.ci_high > summary.ci_high


def test_summarize_one_seed_gives_nan_spread():
    summary = stats.summarize([3.5])
    assert summary.n == 1 and summary.mean == 3.5
    assert all(math.isnan(v) for v in (summary.std, summary.sem, summary.ci_low, summary.ci_high))


def test_paired_matches_hand_computation_and_scipy():
    baseline = [10.0, 12.0, 14.0, 16.0]
    arm = [11.0, 14.0, 15.0, 19.0]  # differences 1, 2, 1, 3: mean 1.75, variance 2.75 / 3
    result = stats.paired(arm, baseline)
    std = math.sqrt(2.75 / 3)
    t = 1.75 / (std / 2)
    assert result.n == 4 and result.mean_diff == pytest.approx(1.75)
    assert result.std_diff == pytest.approx(std) and result.t == pytest.approx(t)
    assert result.p == pytest.approx(2 * sps.t.sf(t, 3))
    reference = sps.ttest_rel(arm, baseline).confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((reference.low, reference.high))
    assert math.isnan(result.boot_low) and math.isnan(result.boot_high)  # 4 seeds: no bootstrap interval
    assert "35 distinct resamples" in result.boot_note and result.diffs == (1.0, 2.0, 1.0, 3.0)


def test_paired_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize(
    "arm, baseline, t, p",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.0, 1.0),  # the arm changes nothing
        ([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], math.inf, 0.0),  # a constant shift up
        ([1.0, 2.1, 3.2], [1.1, 2.2, 3.3], -math.inf, 0.0),  # the same shift, up to rounding
    ],
)
def test_paired_identical_differences_have_defined_p(arm, baseline, t, p):
    result = stats.paired(arm, baseline)
    assert result.std_diff == 0.0 and result.t == t and result.p == p
    assert result.ci_low == result.ci_high == result.mean_diff


def test_welch_matches_hand_formula():
    a, b = [1.0, 2.0, 3.5], [2.0, 4.0, 6.0, 9.0]
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite
    result = stats.welch(a, b)
    assert result.t == pytest.approx(t) and result.dof == pytest.approx(dof)
    assert result.p == pytest.approx(2 * sps.t.sf(abs(t), dof))


def test_cohens_d():
    assert stats.cohens_d([1.0, 2.0, 3.0], [3.0, 4.0, 5.0]) == pytest.approx(-2.0)  # pooled sd 1
    assert stats.cohens_d([1.0, 2.0, 3.0], [2.0, 6.0, 10.0]) == pytest.approx(-4 / math.sqrt(8.5))
    assert stats.cohens_d_paired([1.0, 2.0, 3.0]) == pytest.approx(2.0)


def test_holm_known_example_and_clipping():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.7, 0.9]) == [1.0, 1.0]
    assert stats.holm([]) == []
    with pytest.raises(ValueError):
        stats.holm([0.5, 1.5])


def test_bootstrap_ci_contains_mean_is_reproducible_and_shrinks():
    rng = np.random.default_rng(1)
    small, large = rng.normal(3.0, 1.0, 10), rng.normal(3.0, 1.0, 1000)
    low, high = stats.bootstrap_ci(small, seed=7)
    assert low < small.mean() < high
    assert stats.bootstrap_ci(small, seed=7) == (low, high)
    assert stats.bootstrap_ci(small, seed=8) != (low, high)
    large_low, large_high = stats.bootstrap_ci(large, seed=7)
    assert large_high - large_low < (high - low) / 3  # width goes as 1/sqrt(n): about 10x here
    median_low, median_high = stats.bootstrap_ci(small, stat=np.median, seed=7)
    assert median_low <= np.median(small) <= median_high


def test_noise_floor():
    assert stats.noise_floor([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(stats.noise_floor([1.0]))


def test_seeds_needed_shrinks_with_effect_and_known_values():
    # Paired t-test, alpha 0.05, power 0.8: d_z = 0.5 needs 34 pairs, d_z = 1 needs 10 (G*Power).
    assert stats.seeds_needed(0.5, 1.0) == 34
    assert stats.seeds_needed(1.0, 1.0) == 10
    assert stats.seeds_needed(0.02, 0.01) < stats.seeds_needed(0.01, 0.01)
    assert stats.seeds_needed(0.0, 1.0) is None
    assert stats.seeds_needed(0.01, 1.0) is None  # ~78,000 seeds, above max_seeds


def _empirical_power(effect, sd, n, rng, trials=4000, alpha=0.05):
    diffs = rng.normal(effect, sd, size=(trials, n))
    return float(np.mean(sps.ttest_1samp(diffs, 0.0, axis=1).pvalue < alpha))


def test_seeds_needed_matches_simulation():
    rng = np.random.default_rng(0)
    n = stats.seeds_needed(0.6, 1.0)
    assert _empirical_power(0.6, 1.0, n, rng) >= 0.75
    assert _empirical_power(0.6, 1.0, n - 1, rng) < 0.85


@pytest.mark.parametrize("n", [2, 3, 10, 40])
def test_minimum_detectable_effect_inverts_seeds_needed(n):
    effect = stats.minimum_detectable_effect(0.3, n)
    assert stats.seeds_needed(effect * 1.001, 0.3) == n
    assert stats.seeds_needed(effect * 0.999, 0.3) == n + 1


def test_power_counts_both_tails():
    # Under no effect a two-sided test still rejects at rate alpha, half of it in the wrong tail,
    # so at power = alpha the smallest detectable effect is zero.
    assert stats.minimum_detectable_effect(1.0, 10, power=0.05) == pytest.approx(0.0, abs=1e-6)


def test_correlation_matrix_pearson():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    columns = {"x": x, "twice": [2 * v + 1 for v in x], "negated": [-v for v in x],
               "noise": [0.3, -1.0, 0.8, 0.1, -0.2]}
    names, r, p = stats.correlation_matrix(columns)
    assert names == ["x", "twice", "negated", "noise"]
    assert np.diag(r) == pytest.approx([1.0] * 4)
    assert r[0, 1] == pytest.approx(1.0) and r[0, 2] == pytest.approx(-1.0)
    assert r[0, 3] == pytest.approx(sps.pearsonr(x, columns["noise"]).statistic)
    assert abs(r[0, 3]) < 0.9 and p[0, 3] > 0.05 and p[0, 1] < 1e-6
    assert np.array_equal(r, r.T) and np.array_equal(p, p.T)


def test_correlation_matrix_spearman_differs_on_monotone_curve_and_skips_missing():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    columns = {"x": x, "exp_x": [math.exp(v) for v in x]}
    _, pearson, _ = stats.correlation_matrix(columns, method="pearson")
    _, spearman, _ = stats.correlation_matrix(columns, method="spearman")
    assert spearman[0, 1] == pytest.approx(1.0) and pearson[0, 1] < 0.95
    _, with_gap, _ = stats.correlation_matrix({"x": x, "y": [2.0, 4.0, math.nan, 8.0, 10.0, 12.0]})
    assert with_gap[0, 1] == pytest.approx(1.0)  # the row with nan is dropped from this pair only
    with pytest.raises(ValueError, match="pearson"):
        stats.correlation_matrix(columns, method="kendal")
    with pytest.raises(ValueError, match="equal lengths"):
        stats.correlation_matrix({"x": x, "y": [1.0]})


# --- verdict -------------------------------------------------------------------------------------

BASELINE = [3.00, 3.10, 2.90, 3.05, 2.95]


def _one_sentence_with_numbers(rule):
    assert "\n" not in rule and ". " not in rule and not rule.endswith(".")
    return re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", rule)


def test_verdict_identical_arm_is_inconclusive_with_or_without_a_floor():
    comparison = stats.paired(BASELINE, BASELINE)
    for floor in (math.nan, 0.0, 0.01):
        result = stats.verdict(comparison, "decrease", min_effect=0.02, noise_floor=floor)
        assert result.outcome == "inconclusive", result.rule
        _one_sentence_with_numbers(result.rule)


def test_verdict_within_noise_floor_states_numbers_and_seeds():
    arm = [b + d for b, d in zip(BASELINE, [-0.010, 0.002, -0.006, -0.001, -0.005])]
    comparison = stats.paired(arm, BASELINE)
    result = stats.verdict(comparison, "decrease", min_effect=0.02, noise_floor=0.006)
    assert result.outcome == "inconclusive"
    assert result.rule.startswith("inconclusive: mean difference -0.004 is within the noise floor "
                                  "0.006 with 5 seeds")
    assert stats.seeds_needed(0.02, comparison.std_diff) == 3  # fewer than the 5 run: no more seeds to ask for
    assert result.seeds_needed == 3 and result.seeds_more == 0
    assert result.rule.endswith("the 5 seeds run already give 80% power for an effect of 0.02, so more seeds are "
                                "unlikely to change this outcome")


def test_verdict_big_decrease_supports_decrease_and_refutes_increase():
    arm = [b - d for b, d in zip(BASELINE, [0.10, 0.12, 0.09, 0.11, 0.10])]
    comparison = stats.paired(arm, BASELINE)
    assert comparison.p < 1e-4
    supported = stats.verdict(comparison, "decrease", min_effect=0.05, noise_floor=0.02)
    assert supported.outcome == "supported" and "-0.104" in supported.rule
    assert f"p = {comparison.p:.3g} with 5 seeds" in supported.rule
    refuted = stats.verdict(comparison, "increase", min_effect=0.05, noise_floor=0.02)
    assert refuted.outcome == "refuted" and "other way" in refuted.rule
    for rule in (supported.rule, refuted.rule):
        _one_sentence_with_numbers(rule)


def test_verdict_significant_but_tiny_effect_with_tight_ci_is_refuted():
    arm = [b - d for b, d in zip(BASELINE, [0.0010, 0.0011, 0.0009, 0.0010, 0.0010])]
    comparison = stats.paired(arm, BASELINE)
    result = stats.verdict(comparison, "decrease", min_effect=0.02, noise_floor=math.nan)
    assert comparison.p < 0.001 and result.outcome == "refuted"
    assert "minimum effect 0.02" in result.rule and "95% CI" in result.rule


def test_verdict_significant_below_min_effect_with_wide_ci_is_inconclusive():
    arm = [b - d for b, d in zip(BASELINE, [0.010, 0.015, 0.005, 0.012, 0.008])]
    comparison = stats.paired(arm, BASELINE)
    assert comparison.p < 0.05 and comparison.ci_low < -0.012
    result = stats.verdict(comparison, "decrease", min_effect=0.012, noise_floor=math.nan)
    assert result.outcome == "inconclusive" and "still allows" in result.rule


def test_verdict_noisy_small_effect_is_inconclusive_with_seed_estimate():
    arm = [b + d for b, d in zip(BASELINE[:3], [-0.05, 0.01, -0.03])]
    comparison = stats.paired(arm, BASELINE[:3])
    result = stats.verdict(comparison, "decrease", min_effect=0.02, noise_floor=0.01)
    assert result.outcome == "inconclusive"
    assert result.rule.startswith("inconclusive: not significant: p = 0.317")
    assert "with 3 seeds" in result.rule and "-0.0233" in result.rule
    expected = stats.seeds_needed(abs(comparison.mean_diff), comparison.std_diff)
    assert result.seeds_needed == expected and result.seeds_more == expected - 3
    assert result.rule.endswith(f"about {expected - 3} more seeds ({expected} in all) would resolve it")
    _one_sentence_with_numbers(result.rule)


def test_verdict_rejects_unknown_direction():
    with pytest.raises(ValueError, match="decrease"):
        stats.verdict(stats.paired(BASELINE, BASELINE), "lower", 0.01, 0.01)


# -- agreement with SciPy on random inputs ---------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_statistics_agree_with_scipy_on_random_samples(seed):
    rng = np.random.default_rng(seed)
    n_a, n_b = rng.integers(3, 12, size=2)
    a = rng.normal(rng.normal(), rng.uniform(0.1, 2), n_a)
    b = rng.normal(rng.normal(), rng.uniform(0.1, 2), n_b)

    s = stats.summarize(a)
    low, high = sps.t.interval(0.95, df=n_a - 1, loc=np.mean(a), scale=sps.sem(a))
    assert (s.mean, s.std, s.sem) == pytest.approx((np.mean(a), np.std(a, ddof=1), sps.sem(a)))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))

    w = stats.welch(a, b)
    reference = sps.ttest_ind(a, b, equal_var=False)
    assert (w.t, w.p) == pytest.approx((reference.statistic, reference.pvalue))
    va, vb = np.var(a, ddof=1) / n_a, np.var(b, ddof=1) / n_b  # Welch-Satterthwaite by hand
    assert w.dof == pytest.approx((va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1)))

    pooled = math.sqrt(((n_a - 1) * np.var(a, ddof=1) + (n_b - 1) * np.var(b, ddof=1)) / (n_a + n_b - 2))
    assert stats.cohens_d(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled)

    base = a + rng.normal(0.3, 0.5, n_a)
    p = stats.paired(a, base, n_boot=2000)
    reference = sps.ttest_rel(a, base)
    assert (p.t, p.p) == pytest.approx((reference.statistic, reference.pvalue))
    interval = sps.t.interval(0.95, df=n_a - 1, loc=np.mean(a - base), scale=sps.sem(a - base))
    assert (p.ci_low, p.ci_high) == pytest.approx(interval)
    if n_a >= stats.MIN_BOOTSTRAP_SEEDS:
        scipy_boot = sps.bootstrap((a - base,), np.mean, n_resamples=4000, method="percentile",
                                   random_state=seed).confidence_interval
        width = scipy_boot.high - scipy_boot.low
        assert abs(p.boot_low - scipy_boot.low) < 0.15 * width and abs(p.boot_high - scipy_boot.high) < 0.15 * width
    else:
        assert math.isnan(p.boot_low) and p.boot_note

    columns = {"x": rng.normal(size=20), "y": rng.normal(size=20)}
    columns["z"] = columns["x"] * 2 + rng.normal(size=20)
    for method, test in (("pearson", sps.pearsonr), ("spearman", sps.spearmanr)):
        names, r, pv = stats.correlation_matrix(columns, method)
        reference = test(columns["x"], columns["z"])
        assert r[0, 2] == pytest.approx(reference.statistic) and pv[0, 2] == pytest.approx(reference.pvalue)


def test_holm_agrees_with_the_step_down_definition_on_random_p_values():
    rng = np.random.default_rng(7)
    for _ in range(20):
        p = rng.uniform(0, 0.2, rng.integers(2, 8))
        order = np.argsort(p)
        expected, running = np.empty(p.size), 0.0
        for rank, i in enumerate(order):  # the definition: max over earlier ranks of (m - rank) p, capped at 1
            running = max(running, (p.size - rank) * p[i])
            expected[i] = min(running, 1.0)
        assert stats.holm(p) == pytest.approx(expected.tolist())
