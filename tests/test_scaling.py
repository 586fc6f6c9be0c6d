"""ablab.analysis.scaling against known truth: synthetic points from laws with known parameters, hand-computed
compute conventions and training curves with analytic answers."""

import json
import math

import numpy as np
import pytest

from ablab.analysis import scaling
from ablab.analysis.scaling_laws import CHINCHILLA_GRID
from ablab.errors import UserError

# Chinchilla's published fit (Hoffmann et al. 2022), used as the truth the fits must recover.
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
N_EXPONENT = BETA / (ALPHA + BETA)


def chinchilla_loss(n, d):
    return E + A * n ** -ALPHA + B * d ** -BETA


def with_noise(loss, seed, sigma=0.005):
    """Multiplicative log-normal noise: log L + N(0, sigma^2)."""
    return loss * np.exp(np.random.default_rng(seed).normal(0, sigma, np.shape(loss)))


@pytest.fixture(scope="module")
def chinchilla():
    # 7 x 7 = 49 runs, N in 1e6..1e9 and D in 1e8..1e11; every 9th start of the 4,500-start grid,
    # which finds the same optimum here (to 1e-8) in a quarter of the time of the full grid (45 s).
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 7), np.geomspace(1e8, 1e11, 7)))
    return scaling.fit_chinchilla(n, d, with_noise(chinchilla_loss(n, d), seed=1), grid=CHINCHILLA_GRID[::9])


def test_chinchilla_recovers_the_truth(chinchilla):
    # Over 20 noise seeds of this design the estimates' standard deviations were 0.004 (alpha),
    # 0.007 (beta), 0.027 (E), 0.05 (log A) and 0.115 (log B); the tolerances are 2 to 7 of those.
    fit = chinchilla
    assert fit.alpha == pytest.approx(ALPHA, abs=0.03) and fit.beta == pytest.approx(BETA, abs=0.03)
    assert fit.E == pytest.approx(E, abs=0.05)
    assert abs(math.log(fit.A / A)) < 0.14  # A within 15%
    assert abs(math.log(fit.B / B)) < 0.26  # B within 30%
    assert fit.n_points == 49 and fit.n_starts == 500 and len(CHINCHILLA_GRID) == 4500 and fit.n_boot == 100
    assert fit.n_range == (1e6, 1e9) and fit.d_range == (1e8, 1e11)
    assert fit.predict(1e8, 1e10) == pytest.approx(chinchilla_loss(1e8, 1e10), rel=0.01)


def test_chinchilla_bootstrap_intervals_contain_the_truth(chinchilla):
    fit = chinchilla
    for truth, (low, high) in ((E, fit.E_ci), (A, fit.A_ci), (B, fit.B_ci), (ALPHA, fit.alpha_ci),
                               (BETA, fit.beta_ci), (N_EXPONENT, fit.n_exponent_ci)):
        assert low < truth < high
    assert fit.alpha_ci[1] - fit.alpha_ci[0] < 0.05  # an interval, not the whole line
    assert len(fit.boot) == 100 and all(len(row) == 5 for row in fit.boot)


def test_chinchilla_allocation_follows_its_exponents(chinchilla):
    fit = chinchilla
    assert fit.n_exponent == pytest.approx(fit.beta / (fit.alpha + fit.beta))
    assert fit.d_exponent == pytest.approx(fit.alpha / (fit.alpha + fit.beta))
    assert fit.n_exponent == pytest.approx(N_EXPONENT, abs=0.02)
    (n1, d1), (n2, d2) = fit.optimal_allocation(1e18), fit.optimal_allocation(1e22)
    assert math.log(n2 / n1) / math.log(1e4) == pytest.approx(fit.n_exponent)
    assert math.log(d2 / d1) / math.log(1e4) == pytest.approx(fit.d_exponent)
    assert 6 * n1 * d1 == pytest.approx(1e18)
    # N* minimises the fitted law along C = 6 N D.
    for factor in (0.8, 1.25):
        n = n1 * factor
        assert fit.predict(n1, d1) < fit.predict(n, 1e18 / (6 * n))
    again = scaling.ChinchillaFit.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))
    assert again == fit


def test_chinchilla_needs_six_points():
    n, d = np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 5)
    with pytest.raises(UserError, match="at least 6 .*5 parameters.*ablab ladder"):
        scaling.fit_chinchilla(n, d, chinchilla_loss(n, d))


# L(C) = 2 + 1000 C^-0.2 over 16 budgets from 1e14 to 1e20 FLOPs.
LAW_E, LAW_A, LAW_ALPHA = 2.0, 1e3, 0.2
FLOPS = np.geomspace(1e14, 1e20, 16)


@pytest.fixture(scope="module")
def compute_law():
    loss = with_noise(LAW_E + LAW_A * FLOPS ** -LAW_ALPHA, seed=1)
    return scaling.fit_power_law(FLOPS, loss, name="C", convention="6ND", embeddings=True)


def test_power_law_recovers_the_truth(compute_law):
    # Over 20 noise seeds the standard deviations were 0.011 (E), 0.17 (log A) and 0.005 (alpha);
    # the tolerances are about 3 of those. The 95% intervals covered the truth in 19 of 20.
    law = compute_law
    assert law.E == pytest.approx(LAW_E, abs=0.035)
    assert abs(math.log(law.A / LAW_A)) < 0.5
    assert law.alpha == pytest.approx(LAW_ALPHA, abs=0.015)
    for truth, (low, high) in ((LAW_E, law.E_ci), (LAW_A, law.A_ci), (LAW_ALPHA, law.alpha_ci)):
        assert low < truth < high
    assert (law.x_min, law.x_max, law.n_points, law.n_boot) == (1e14, 1e20, 16, 200)
    assert law.embeddings is True and law.convention == "6ND"


def test_power_law_inverse_undoes_predict(compute_law):
    law = compute_law
    x = np.array([3e14, 1e17, 5e19])
    assert law.inverse(law.predict(x)) == pytest.approx(x, rel=1e-9)
    assert law.inverse(law.predict(2e16)) == pytest.approx(2e16, rel=1e-9)
    assert math.isnan(law.inverse(law.E)) and math.isnan(law.inverse(law.E - 0.1))


def test_power_law_round_trips_through_json(compute_law):
    data = json.loads(json.dumps(compute_law.to_dict(), allow_nan=False))
    assert scaling.PowerLawFit.from_dict(data) == compute_law


def test_power_law_needs_four_points():
    with pytest.raises(UserError, match="at least 4"):
        scaling.fit_power_law([1e15, 1e16, 1e17], [3.0, 2.8, 2.6])
    with pytest.raises(UserError, match="positive finite"):
        scaling.fit_power_law([1e15, 1e16, 1e17, 1e18], [3.0, 2.8, float("nan"), 2.5])


def iso_compute_points(budgets, sizes_per_budget=9, seed=0):
    """Runs laid out on iso-compute curves around the true optimum, C = 6 N D exactly."""
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    n = np.concatenate([g * (c / 6) ** N_EXPONENT * np.geomspace(1 / 8, 8, sizes_per_budget) for c in budgets])
    d = np.repeat(budgets, sizes_per_budget) / (6 * n)
    return n, d, with_noise(chinchilla_loss(n, d), seed=seed)


def test_isoflop_recovers_the_allocation_exponent():
    budgets = np.geomspace(1e16, 1e20, 5)
    n, d, loss = iso_compute_points(budgets)
    fit = scaling.isoflop(n, d, loss)
    # Noise-free the exponent is exact (each budget's curve in log N has the same shape, so the
    # parabola's offset from the true minimum cancels); with 0.5% noise it moves by about 0.005.
    assert fit.n_exponent == pytest.approx(N_EXPONENT, abs=0.015)
    assert fit.d_exponent == pytest.approx(1 - N_EXPONENT, abs=0.015)
    assert fit.n_exponent_ci[0] < N_EXPONENT < fit.n_exponent_ci[1]
    assert [b.compute for b in fit.budgets] == pytest.approx(list(budgets))
    for budget in fit.budgets:
        assert budget.d_opt == pytest.approx(budget.compute / (6 * budget.n_opt), rel=1e-6)
        assert budget.inside and budget.curvature > 0
    n_opt, d_opt = fit.optimal_allocation(1e18)
    assert 6 * n_opt * d_opt == pytest.approx(1e18, rel=0.05)
    assert json.loads(json.dumps(fit.to_dict()))["convention"] == "6ND"


def test_isoflop_reports_skipped_budgets():
    n, d, loss = iso_compute_points([1e16, 1e17, 1e18], seed=1)
    # A budget with two runs, and one whose losses peak in the middle (a parabola opening downward).
    extra_n = np.array([1e7, 2e7, 1e8, 2e8, 4e8])
    extra_c = np.array([1e15, 1e15, 1e21, 1e21, 1e21])
    extra_loss = np.array([3.5, 3.4, 2.5, 2.6, 2.5])
    fit = scaling.isoflop(np.r_[n, extra_n], np.r_[d, extra_c / (6 * extra_n)], np.r_[loss, extra_loss])
    assert len(fit.budgets) == 3
    reasons = {round(math.log10(b.compute)): b.reason for b in fit.skipped}
    assert "fewer than 3" in reasons[15] and "opens downward" in reasons[21]
    with pytest.raises(UserError, match="at least 2 compute budgets"):
        scaling.isoflop(extra_n, extra_c / (6 * extra_n), extra_loss)


def test_isoflop_groups_points_within_the_tolerance():
    n, d, loss = iso_compute_points([1e17, 1e18])
    # 5% more compute on every other run stays in the same budget at tolerance 0.1.
    flops = 6 * n * d * np.where(np.arange(n.size) % 2, 1.05, 1.0)
    fit = scaling.isoflop(n, d, loss, compute=flops)
    assert [b.n_points for b in fit.budgets] == [9, 9] and not fit.skipped


def test_efficiency_gain_of_an_arm_that_halves_compute(compute_law):
    law = compute_law
    target = law.predict(2e17)
    gain = scaling.efficiency_gain(law, 1e17, [target * 0.999, target, target * 1.001])
    assert gain.gain == pytest.approx(2.0, rel=1e-6)
    assert gain.compute_predicted == pytest.approx(2e17, rel=1e-6)
    assert gain.ci_low < 2.0 < gain.ci_high and gain.ci_high / gain.ci_low < 1.5
    assert gain.warnings == [] and gain.n_seeds == 3 and gain.embeddings is True
    assert json.loads(json.dumps(gain.to_dict()))["gain"] == pytest.approx(2.0, rel=1e-6)


def test_efficiency_gain_warns_outside_the_fitted_range(compute_law):
    law = compute_law
    beyond = scaling.efficiency_gain(law, 1e22, [law.predict(3e22)] * 2)
    assert beyond.gain == pytest.approx(3.0, rel=1e-6)
    assert any("outside the law's fitted range" in w for w in beyond.warnings)
    assert any("outside the losses the law was fitted on" in w for w in beyond.warnings)
    below = scaling.efficiency_gain(law, 1e18, [law.E * 0.99])
    assert below.gain == math.inf and below.compute_predicted == math.inf
    assert any("below the law's irreducible loss" in w for w in below.warnings)


SIZES = [1e6, 4e6, 1.6e7, 6.4e7]


def test_gain_trend_shrinks():
    trend = scaling.gain_trend(SIZES, [2.0, 1.6, 1.3, 1.1])
    slope = np.polyfit(np.log(SIZES), np.log([2.0, 1.6, 1.3, 1.1]), 1)[0]
    assert trend.slope == pytest.approx(slope) and trend.ci_high < 0
    assert trend.direction == "shrinks" and "does not scale" in trend.sentence
    assert trend.size_at_no_gain > 6.4e7


def test_gain_trend_is_stable_for_noisy_flat_gains():
    sizes = SIZES + [2.56e8]
    trend = scaling.gain_trend(sizes, [1.3, 1.18, 1.34, 1.22, 1.28])
    assert trend.direction == "stable" and trend.ci_low < 0 < trend.ci_high
    assert trend.size_at_no_gain is None
    weighted = scaling.gain_trend(sizes, [1.3, 1.18, 1.34, 1.22, 1.28], gain_cis=[(1.1, 1.5)] * 5)
    assert weighted.weighted and weighted.direction == "stable"


def test_gain_trend_grows_and_needs_three_sizes():
    assert scaling.gain_trend(SIZES, [1.1, 1.3, 1.6, 2.0]).direction == "grows"
    with pytest.raises(UserError, match="3 or more model sizes"):
        scaling.gain_trend(SIZES[:2], [1.5, 1.4])


def test_tokens_to_fraction_by_hand():
    # Improvement 4 -> 2; 50% is loss 3.0 (at 100 tokens); 90% is 2.2, 80% of the way from 100 to 200.
    reached = scaling.tokens_to_fraction([0, 100, 200, 300], [4.0, 3.0, 2.0, 2.0], fractions=(0.5, 0.9, 1.0))
    assert reached == pytest.approx({0.5: 100.0, 0.9: 180.0, 1.0: 200.0})
    # A noisy upward last point does not move the final loss: it is the minimum of the last 3 points.
    noisy = scaling.tokens_to_fraction([0, 100, 200, 300], [4.0, 3.0, 2.0, 2.3], fractions=(0.9,))
    assert noisy[0.9] == pytest.approx(180.0)
    assert scaling.tokens_to_fraction([0, 100, 200], [3.0, 3.1, 3.2]) == {0.9: None, 0.95: None, 0.99: None}


def test_tokens_to_fraction_on_an_exact_curve():
    tokens = np.geomspace(1e6, 1e9, 4000)
    loss = 2.0 + 30.0 * tokens ** -0.3
    reached = scaling.tokens_to_fraction(tokens, loss)
    start, final = loss[0], loss[-1]
    for fraction, value in reached.items():
        analytic = (30.0 / (start - fraction * (start - final) - 2.0)) ** (1 / 0.3)
        assert value == pytest.approx(analytic, rel=1e-4)


def test_compute_conventions_by_hand():
    assert scaling.compute(1e6, 1e9) == 6e15
    # 12 x 4 layers x 128 wide x 256 tokens of context = 1,572,864 attention FLOPs per token.
    attn = scaling.compute(1e6, 1e9, "6ND+attn", n_layers=4, d_model=128, seq_len=256)
    assert attn == pytest.approx((6e6 + 1_572_864) * 1e9)
    assert scaling.compute(np.array([1e6, 2e6]), np.array([1e9, 1e9])) == pytest.approx([6e15, 1.2e16])
    with pytest.raises(UserError, match="6ND, 6ND\\+attn"):
        scaling.compute(1e6, 1e9, "kaplan")
    with pytest.raises(UserError, match="n_layers, d_model and seq_len"):
        scaling.compute(1e6, 1e9, "6ND+attn")
