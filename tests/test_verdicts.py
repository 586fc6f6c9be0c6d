"""Verdicts that read the sign: each rule with numbers that make it fire and its neighbour not, seeds
said as more, no bootstrap below 5 seeds, Holm across arms, the surprise flag, and analyze() over a ledger."""

import math

import pytest

from ablab.analysis import stats
from ablab.analysis.verdicts import analyze
from ablab.store.ledger import Ledger, Run

BASELINE = [3.000, 3.004, 2.996, 3.002, 2.998]  # seed-noise floor 0.00316
FLOOR = stats.noise_floor(BASELINE)


def judge(diffs, direction="decrease", min_effect=0.01, floor=FLOOR):
    base = BASELINE[:len(diffs)]
    return stats.verdict(stats.paired([b + d for b, d in zip(base, diffs)], base), direction, min_effect, floor)


def test_the_issue_case_every_seed_against_the_prediction_is_refuted_though_p_is_high():
    result = judge([0.042, 0.034], floor=0.0045)  # a decrease predicted; 2 seeds, p = 0.067
    assert result.p > 0.05 and result.outcome == "refuted"
    assert result.reason.startswith("every seed moved the metric against the predicted decrease by more than 2x "
                                    "the noise floor 0.0045: differences +0.042, +0.034, the smallest 7.6x the floor")
    assert "p = 0.0668 with 2 seeds" in result.reason


@pytest.mark.parametrize("diffs, direction, floor", [
    ([0.042, 0.003], "decrease", 0.0045),  # one seed against the prediction but within the floor
    ([0.042, 0.008], "decrease", 0.0045),  # one seed beyond the floor but not twice it (AGAINST_FACTOR)
    ([0.050, -0.030], "decrease", 0.0045),  # the seeds disagree in sign (mean +0.01, beyond the floor)
    ([0.042, 0.034], "decrease", math.nan),  # no measured floor to exceed
    ([0.042, 0.034], "increase", 0.0045),  # the predicted sign on every seed still needs p < alpha to be supported
])
def test_neighbours_of_the_every_seed_rule_stay_inconclusive(diffs, direction, floor):
    result = judge(diffs, direction, floor=floor)
    assert result.outcome == "inconclusive" and result.reason.startswith("not significant: p = ")


def test_significant_effect_the_other_way_is_refuted_by_its_interval():
    diffs = [0.030, 0.002, 0.025, 0.012, 0.010]  # one seed within the floor: the every-seed rule does not fire
    result = judge(diffs)
    comparison = stats.paired([b + d for b, d in zip(BASELINE, diffs)], BASELINE)
    assert comparison.p < 0.05 and comparison.ci_low > 0  # the 95% CI excludes zero on the wrong side
    assert result.outcome == "refuted" and result.reason.startswith("the arm moved the metric the other way")
    assert f"95% CI {comparison.ci_low:+.3g} to {comparison.ci_high:+.3g}" in result.reason
    assert judge(diffs, "increase").outcome == "supported"


def test_more_seeds_are_said_as_more_with_the_total():
    diffs = [-0.020, 0.004, -0.012]  # 3 seeds, p = 0.27, mean -0.0093: the estimate is for the minimum effect 0.01
    result = judge(diffs)
    needed = stats.seeds_needed(0.01, stats.paired(diffs, [0.0] * 3).std_diff)
    assert result.outcome == "inconclusive" and result.seeds_needed == needed > 3
    assert result.seeds_more == needed - 3
    assert result.reason.endswith(f"about {needed - 3} more seeds ({needed} in all) would resolve it")


def test_one_more_seed_is_singular_and_enough_seeds_ask_for_none():
    one_more = judge([-0.008, -0.018, -0.013], floor=0.02)  # within the floor; 4 seeds give 80% power for 0.013
    assert (one_more.seeds_needed, one_more.seeds_more) == (4, 1)
    assert one_more.reason.endswith("about 1 more seed (4 in all) would resolve it")
    enough = judge([-0.010, -0.016, -0.013], floor=0.02)
    assert (enough.seeds_needed, enough.seeds_more) == (3, 0)
    assert enough.reason.endswith("the 3 seeds run already give 80% power for an effect of 0.013, so more seeds are "
                                  "unlikely to change this outcome")


@pytest.mark.parametrize("n, present", [(2, False), (4, False), (5, True)])
def test_bootstrap_interval_only_from_five_seeds(n, present):
    diffs = [0.01, 0.03, 0.02, 0.05, 0.04][:n]
    comparison = stats.paired([b + d for b, d in zip(BASELINE, diffs)], BASELINE[:n])
    if present:
        assert comparison.boot_note == ""
        low, high = stats.bootstrap_ci(comparison.diffs, seed=0)
        assert (comparison.boot_low, comparison.boot_high) == (low, high) and low < comparison.mean_diff < high
    else:
        assert math.isnan(comparison.boot_low) and math.isnan(comparison.boot_high)
        resamples = {2: 3, 4: 35}[n]
        assert comparison.boot_note == (f"no bootstrap interval: {n} seeds have only {resamples} distinct resamples, "
                                        "too few for a percentile interval; it needs at least 5 seeds")
        assert not math.isnan(comparison.ci_low)  # the t interval is still there


def test_constant_differences_below_five_seeds_have_no_bootstrap_interval_either():
    comparison = stats.paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert comparison.ci_low == comparison.ci_high == 1.0 and math.isnan(comparison.boot_low)


LUCKY = [-0.030, -0.008, -0.025, -0.012, -0.010]  # p = 0.018: supported alone, not after Holm over 3 arms


def test_holm_across_three_arms_turns_a_lone_supported_into_inconclusive():
    comparisons = {arm: stats.paired([b + d for b, d in zip(BASELINE, diffs)], BASELINE) for arm, diffs in (
        ("lucky", LUCKY), ("null-a", [-0.02, 0.01, -0.004, 0.006, -0.002]),
        ("null-b", [0.004, -0.006, 0.001, 0.003, -0.004]))}
    alone = stats.arm_verdicts({"lucky": comparisons["lucky"]}, "decrease", 0.01, FLOOR)["lucky"]
    assert alone.outcome == "supported" and alone.p == comparisons["lucky"].p
    assert alone.adjustment == "one arm against the baseline: no adjustment across arms needed"
    together = stats.arm_verdicts(comparisons, "decrease", 0.01, FLOOR)
    lucky = together["lucky"]
    assert lucky.p == pytest.approx(3 * comparisons["lucky"].p)
    assert lucky.outcome == "inconclusive" and "Holm-adjusted p = 0.0545 >= alpha 0.05" in lucky.reason
    assert lucky.adjustment == "Holm-adjusted across 3 arms: p 0.0182 -> 0.0545"
    assert {arm: v.outcome for arm, v in together.items()} == {arm: "inconclusive" for arm in comparisons}


def test_holm_keeps_a_clear_effect_supported():
    clear = stats.paired([b - 0.1 + 0.001 * i for i, b in enumerate(BASELINE)], BASELINE)
    noise = stats.paired([b + d for b, d in zip(BASELINE, [0.004, -0.006, 0.001, 0.003, -0.004])], BASELINE)
    result = stats.arm_verdicts({"clear": clear, "noise": noise}, "decrease", 0.02, FLOOR)
    assert result["clear"].outcome == "supported" and result["clear"].adjustment.startswith("Holm-adjusted across 2")


def test_surprise_is_flagged_without_changing_the_outcome():
    big = [-0.12, -0.11, -0.10, -0.12, -0.11]  # mean -0.112: 11x the minimum effect 0.01
    flagged = judge(big)
    assert flagged.outcome == "supported" and flagged.surprise == (
        "a surprise to check: the mean difference -0.112 is 11x the predicted minimum effect 0.01; rule out a bug, "
        "a leak of validation data or a wrong baseline")
    assert judge(big, "increase").surprise and judge(big, "increase").outcome == "refuted"  # either sign
    assert judge([d / 3 for d in big]).surprise == ""  # 3.7x: within what a prediction may undershoot
    assert judge(big, floor=0.2).surprise == ""  # within the noise floor: noise, not a surprise
    assert judge(big, min_effect=0.0).surprise == ""  # nothing predicted to compare with


def test_rule_is_the_outcome_and_a_reason_that_does_not_repeat_it():
    for diffs in ([0.042, 0.034], LUCKY, [-0.020, 0.004, -0.012]):
        result = judge(diffs)
        assert result.rule == f"{result.outcome}: {result.reason}"
        assert not result.reason.startswith(("supported", "refuted", "inconclusive"))


# --- analyze() over a ledger holding a three-arm study ----------------------------------------------

ARMS = {"baseline": {}, "optim.lr=0.03": {"optim.lr": 0.03}, "optim.lr=0.04": {"optim.lr": 0.04},
        "optim.lr=0.05": {"optim.lr": 0.05}}
ARM_DIFFS = {"baseline": [0.0] * 5, "optim.lr=0.03": LUCKY, "optim.lr=0.04": [-0.02, 0.01, -0.004, 0.006, -0.002],
             "optim.lr=0.05": [0.004, -0.006, 0.001, 0.003, -0.004]}


def write_study(lab, arms):
    """A study whose finished runs carry the given final val losses, written through the store's API."""
    seeds = list(range(5))
    with Ledger(lab) as ledger:
        ledger.save_study("lr", "tiny@2026-11-01", {
            "name": "lr", "metric": "val_loss", "direction": "decrease", "min_effect": 0.01, "read_at": "final",
            "seeds": seeds, "arms": {arm: ARMS[arm] for arm in arms}})
        for i, arm in enumerate(arms):
            for seed, base, diff in zip(seeds, BASELINE, ARM_DIFFS[arm]):
                run_id = f"{i:02x}{seed:06x}"
                ledger.record_run(Run(id=run_id, name="lr", status="finished", created_at="2026-11-21T00:00:00",
                                      finished_at="2026-11-21T00:01:00", config_hash=f"h{i}", seed=seed,
                                      data_fingerprint=None, code_version=None, content_key=None, config={},
                                      provenance={}, result={"final": {"val_loss": base + diff}}))
                ledger.link_study_run("lr", arm, seed, run_id)


def test_analyze_applies_holm_across_a_studys_arms(tmp_path):
    write_study(tmp_path, list(ARMS))
    _, results, floor = analyze(tmp_path, "lr")
    assert floor == pytest.approx(FLOOR)
    verdicts = {r.arm: r.verdict for r in results}
    assert verdicts["baseline"] is None
    lucky = verdicts["optim.lr=0.03"]
    assert lucky.outcome == "inconclusive" and lucky.adjustment.startswith("Holm-adjusted across 3 arms: p 0.0182")


def test_analyze_with_one_arm_needs_no_adjustment(tmp_path):
    write_study(tmp_path, ["baseline", "optim.lr=0.03"])
    lucky = {r.arm: r.verdict for r in analyze(tmp_path, "lr")[1]}["optim.lr=0.03"]
    assert lucky.outcome == "supported" and lucky.adjustment.startswith("one arm against the baseline")
