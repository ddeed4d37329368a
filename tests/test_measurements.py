"""Unit tests of the measurements (batchscale.analysis: thresholds, steps, intervals, speedup, critical) against
values computed by hand."""

import math

import numpy as np
import pytest
import xarray as xr

from batchscale.analysis.critical import (
    critical_batch_bound,
    critical_batch_interval,
    fit_critical_batch,
    mean_censoring_bound,
    overhead_batch_direct,
    overhead_batch_from_fit,
)
from batchscale.analysis.intervals import bootstrap_interval, seed_interval, seed_mean
from batchscale.analysis.speedup import (
    at_least,
    bootstrap_speedup,
    efficiency,
    ideal_speedup,
    regime_boundaries,
    regimes,
    speedup,
    speedup_interval,
)
from batchscale.analysis.steps import iterations_to_threshold, k_for_run, k_per_run
from batchscale.analysis.thresholds import (
    LOWER_QUARTILE,
    describe_threshold_rule,
    resample_uniform_in_steps,
    threshold_from_rule,
    threshold_from_seeds,
)

STEPS = [0, 10, 100, 1000]
TRACE = [3.0, 2.0, 1.5, 0.5]


# ------------------------------------------------------------------ iterations to threshold


def test_log_interpolation_between_positive_steps():
    # bracket (100, 1.5) -> (1000, 0.5); t = (1.5 - 1.0) / (1.5 - 0.5) = 0.5
    # log10 k = 2 + 0.5 * (3 - 2) = 2.5  ->  k = 10 ** 2.5
    assert iterations_to_threshold(STEPS, TRACE, 1.0) == pytest.approx(10 ** 2.5, rel=1e-12)
    # bracket (10, 2.0) -> (100, 1.5); t = (2.0 - 1.8) / 0.5 = 0.4  ->  k = 10 ** 1.4
    assert iterations_to_threshold(STEPS, TRACE, 1.8) == pytest.approx(10 ** 1.4, rel=1e-12)


def test_bracket_from_step_zero_is_linear_in_step():
    # bracket (0, 3) -> (10, 2); t = 0.5 -> k = 0 + 0.5 * 10
    assert iterations_to_threshold(STEPS, TRACE, 2.5) == pytest.approx(5.0)


def test_exact_hit_start_and_never():
    assert iterations_to_threshold(STEPS, TRACE, 1.5) == 100.0
    assert iterations_to_threshold(STEPS, TRACE, 3.0) == 0.0
    assert iterations_to_threshold(STEPS, TRACE, 5.0) == 0.0
    assert iterations_to_threshold(STEPS, TRACE, 0.1) == math.inf
    # the first finite point is already below: its step, no earlier point to interpolate from
    assert iterations_to_threshold([0, 10, 100], [np.nan, 0.2, 0.1], 1.0) == 10.0


def test_nan_points_are_ignored():
    # NaN at step 10: bracket (0, 3) -> (100, 1.5), linear in step: t = (3 - 2) / 1.5 = 2/3
    assert iterations_to_threshold(STEPS, [3.0, np.nan, 1.5, 0.5], 2.0) == pytest.approx(200.0 / 3.0)
    # bracket (10, 2) -> (1000, 0.5), t = 1 / 1.5 = 2/3: log10 k = 1 + (2/3) * 2
    assert iterations_to_threshold(STEPS, [np.nan, 2.0, np.nan, 0.5], 1.0) == pytest.approx(10 ** (1 + 4 / 3))
    assert math.isnan(iterations_to_threshold(STEPS, [np.nan] * 4, 1.0))


def test_unsorted_steps_are_sorted():
    assert iterations_to_threshold(STEPS[::-1], TRACE[::-1], 1.0) == pytest.approx(10 ** 2.5)


def test_diverged_run_never_reaches_threshold_below_last_finite_value():
    steps = [0, 10, 100, 1000]
    values = [3.0, 0.5, 9.0, np.nan]  # dipped below 1.0, then blew up to 9.0
    assert k_for_run(steps, values, 1.0, "diverged") == math.inf
    # completed: bracket (0, 3) -> (10, 0.5), t = 2 / 2.5 = 0.8, linear from step 0 -> 8
    assert k_for_run(steps, values, 1.0, "completed") == pytest.approx(8.0)
    # a threshold at or above the last finite value: read from the trace
    assert k_for_run(steps, [3.0, 2.0, np.nan, np.nan], 2.5, "diverged") == pytest.approx(5.0)
    assert math.isnan(k_for_run(steps, values, 1.0, "missing"))


def test_k_per_run_over_a_cube_variable():
    values = np.array([
        [[TRACE, [3.0, 2.0, 1.2, 0.9]]],          # blr, bs 16, seeds 0 and 1
        [[TRACE, [3.0, np.nan, np.nan, np.nan]]],  # lsr, bs 16, seed 1 diverged
    ])
    da = xr.DataArray(values, dims=("strategy", "batch_size", "seed", "step"),
                      coords={"strategy": ["blr", "lsr"], "batch_size": [16], "seed": [0, 1], "step": STEPS})
    status = xr.DataArray([[["completed", "completed"]], [["completed", "diverged"]]],
                          dims=("strategy", "batch_size", "seed"))
    k = k_per_run(da, 1.0, status)
    assert k.dims == ("strategy", "batch_size", "seed")
    assert k.sel(strategy="blr", seed=0).item() == pytest.approx(10 ** 2.5)
    # bracket (100, 1.2) -> (1000, 0.9): t = 0.2 / 0.3
    assert k.sel(strategy="blr", seed=1).item() == pytest.approx(10 ** (2 + 2 / 3))
    assert k.sel(strategy="lsr", seed=1).item() == math.inf
    # a threshold per strategy broadcasts
    thr = xr.DataArray([1.5, 2.0], dims="strategy", coords={"strategy": ["blr", "lsr"]})
    k2 = k_per_run(da, thr)
    assert k2.sel(strategy="blr", seed=0).item() == 100.0
    assert k2.sel(strategy="lsr", seed=0).item() == 10.0


# ------------------------------------------------------------------ thresholds


LARGEST = np.array([[4, 2, 1, 0.8, 0.6, 0.5, 0.4],
                    [4, 3, np.nan, np.nan, np.nan, np.nan, np.nan]])
# the 9 finite values sorted: 0.4 0.5 0.6 0.8 1 2 3 4 4


def test_lower_quartile_of_largest():
    # position (9 - 1) * 0.25 = 2 -> 0.6
    assert threshold_from_rule(LARGEST, "lower_quartile_of_largest") == pytest.approx(0.6)


def test_quantile_of_largest():
    # q = 0.5: position 4 -> 1.0; q = 0.1: position 0.8 -> 0.4 + 0.8 * (0.5 - 0.4) = 0.48
    assert threshold_from_rule(LARGEST, {"quantile_of_largest": 0.5}) == pytest.approx(1.0)
    assert threshold_from_rule(LARGEST, {"quantile_of_largest": 0.1}) == pytest.approx(0.48)
    assert threshold_from_rule(LARGEST, "quantile_of_largest:0.1") == pytest.approx(0.48)


def test_fixed_threshold_and_bad_rules():
    assert threshold_from_rule(LARGEST, {"fixed": 0.7}) == 0.7
    assert threshold_from_rule(np.array([]), "fixed:0.7") == 0.7
    assert math.isnan(threshold_from_rule(np.array([np.nan]), "lower_quartile_of_largest"))
    for bad in ("median", {"quantile_of_largest": 1.5}, {"fixed": "x"}, {"fixed": 1, "quantile_of_largest": 0.2}):
        with pytest.raises(ValueError, match="threshold rule"):
            threshold_from_rule(LARGEST, bad)
    assert describe_threshold_rule("lower_quartile_of_largest") == "lower_quartile_of_largest"
    assert describe_threshold_rule({"quantile_of_largest": 0.1}) == "quantile_of_largest:0.1"
    assert describe_threshold_rule({"fixed": 0.5}) == "fixed:0.5"


# ------------------------------------------------------------------ speedup, efficiency


def test_speedup_ideal_and_efficiency():
    np.testing.assert_allclose(speedup([100.0, 50.0, 25.0], 100.0), [1.0, 2.0, 4.0])
    # never reached (either side): no speedup was measured, which is empty (NaN), not 0
    assert math.isnan(speedup(math.inf, 100.0))
    assert math.isnan(speedup(50.0, math.inf))
    assert math.isnan(speedup(math.inf, math.inf))
    assert ideal_speedup(128, 16) == 8.0
    assert efficiency(50.0, 100.0, 32, 16) == pytest.approx(1.0)
    # speedup 100 / 40 = 2.5 against ideal 64 / 16 = 4
    assert efficiency(40.0, 100.0, 64, 16) == pytest.approx(0.625)
    assert math.isnan(efficiency(math.inf, 100.0, 64, 16))


def test_efficiency_exactly_at_the_cut_off_is_linear():
    # m0 = 5, k(m0) = 3.3; m = 10, k = 2.0625: efficiency 3.3*5 / (2.0625*10) = 16.5/20.625 = 0.8 exactly,
    # but the ratio of ratios (3.3/2.0625) / (10/5) computes as 0.7999999999999999
    assert (3.3 / 2.0625) / (10 / 5) < 0.8
    assert efficiency(2.0625, 3.3, 10, 5) == 0.8
    assert at_least((3.3 / 2.0625) / (10 / 5), 0.8)  # and the cut-off test tolerates such rounding
    assert not at_least(0.7999, 0.8)
    assert regimes([5, 10], [3.3, 2.0625], 5) == ["base", "linear"]
    # a doubling that cuts k by exactly the stagnation gain (10%: 300 -> 270 -> 243, where 1 - 270/300
    # computes as 0.09999999999999998) is not stagnation; 300 -> 273 -> 249 (9%, 8.8%) is
    assert 1 - 270 / 300 < 0.1
    assert regimes([4, 8, 16, 32], [400, 300, 270, 243], 4) == ["base"] + ["diminishing"] * 3
    assert regimes([4, 8, 16, 32], [400, 300, 273, 249], 4) == ["base", "diminishing", "stagnation", "stagnation"]
    # only m0 "qualifies" as linear: the linear regime is empty (null), not m0
    labels = regimes([4, 8, 16], [400, 300, 270], 4)
    assert regime_boundaries([4, 8, 16], labels)["largest_linear"] is None


# ------------------------------------------------------------------ regimes

SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


def mcc(m, s_min=100.0, b_crit=200.0):
    return s_min * (1.0 + b_crit / np.asarray(m, dtype=float))


def test_regimes_on_known_boundaries():
    # k = 100 (1 + 200/m), m0 = 16: efficiency = (16 + 200) / (m + 200) >= 0.8 iff m <= 70 -> 16, 32, 64 linear.
    # k(2m)/k(m) = (2m + 200) / (2m + 400) > 0.9 iff m > 800 -> the doubling 1024 -> 2048 stagnates.
    k = list(mcc(SIZES[:-1])) + [math.inf]
    labels = regimes(SIZES, k, 16)
    assert labels == ["base"] + ["linear"] * 2 + ["diminishing"] * 4 + ["stagnation"] * 2 + ["not_reached"]
    assert regime_boundaries(SIZES, labels) == {"largest_linear": 64, "first_stagnation": 2048}


def test_regimes_per_doubling_ratio_when_sizes_are_skipped():
    sizes = [16, 64, 256, 1024, 4096]
    # 64: efficiency 216 / 264 = 0.818 -> linear; 256: 216 / 456 = 0.47 -> not linear,
    # per-doubling ratio sqrt(k(256)/k(64)) = sqrt(1.78125 / 4.125) = 0.657 -> diminishing;
    # sqrt(k(1024)/k(256)) = sqrt(1.1953 / 1.78125) = 0.819 -> diminishing;
    # sqrt(k(4096)/k(1024)) = sqrt(1.04883 / 1.19531) = 0.9367 > 0.9 -> stagnation.
    assert regimes(sizes, mcc(sizes), 16) == ["base", "linear", "diminishing", "diminishing", "stagnation"]


def test_regimes_stagnation_is_a_suffix_and_cutoffs_are_parameters():
    sizes = [16, 32, 64, 128, 256, 512]
    # 128: efficiency (800/190)/8 = 0.53; per-doubling ratios 190/200 = 0.95, 185/190 = 0.97, 180/185 = 0.97,
    # all above 1 - 0.1 -> stagnation from 128 on
    assert regimes(sizes, [800, 400, 200, 190, 185, 180], 16) == ["base"] + ["linear"] * 2 + ["stagnation"] * 3
    # one flat doubling (128) followed by a real gain (256: 100/190 = 0.53) is not stagnation; 512 (90/100
    # = 0.9, not above 0.9) is not either
    k = [800, 400, 200, 190, 100, 90]
    assert regimes(sizes, k, 16) == ["base"] + ["linear"] * 2 + ["diminishing"] * 3
    # a flat tail: 512 at 99/100 -> stagnation there only
    assert regimes(sizes, [800, 400, 200, 190, 100, 99], 16)[3:] == ["diminishing", "diminishing", "stagnation"]
    # a looser stagnation cut-off (4%): 128's ratio 0.95 is a 5% gain (diminishing); 0.974 and 0.973 are not
    assert regimes(sizes, [800, 400, 200, 190, 185, 180], 16, stagnation_gain=0.04) == \
        ["base"] + ["linear"] * 2 + ["diminishing", "stagnation", "stagnation"]
    # a strict linear cut-off: 32 (efficiency 1.0) stays linear, nothing passes 1.01 after 16
    assert regimes(sizes, k, 16, linear_efficiency=1.01)[:2] == ["base", "diminishing"]


def test_regimes_input_order_missing_and_unreached_base():
    assert regimes([64, 16, 32], [200, 800, 400], 16) == ["linear", "base", "linear"]
    assert regimes([16, 32, 64], [800, np.nan, 200], 16) == ["base", "missing", "linear"]
    assert regimes([8, 16, 32], [900, 800, 400], 16) == ["below_base", "base", "linear"]
    assert regimes([16, 32], [math.inf, 400], 16) == ["not_reached", "diminishing"]
    assert regimes([16, 32, 64], [0.0, 0.0, 100.0], 16) == ["trivial", "trivial", "diminishing"]
    with pytest.raises(ValueError, match="base batch"):
        regimes([16, 32], [1, 2], 8)


# ------------------------------------------------------------------ critical batch size


FIT_SIZES = 2.0 ** np.arange(4, 15)  # 16 .. 16384


def test_fit_recovers_exact_parameters():
    fit = fit_critical_batch(FIT_SIZES, mcc(FIT_SIZES, 100.0, 300.0))
    assert fit["S_min"] == pytest.approx(100.0, rel=1e-9)
    assert fit["B_crit"] == pytest.approx(300.0, rel=1e-9)
    assert fit["E_min"] == pytest.approx(30000.0, rel=1e-9)
    assert fit["n_points"] == 11 and fit["n_censored"] == 0
    assert fit["log_rmse"] == pytest.approx(0.0, abs=1e-9)


def noisy_k(seeds=8, sigma=0.1, seed=1):
    rng = np.random.default_rng(seed)
    return mcc(FIT_SIZES, 100.0, 300.0)[:, None] * np.exp(rng.normal(0.0, sigma, (FIT_SIZES.size, seeds)))


def test_fit_recovers_parameters_from_noisy_seeds_within_5_percent():
    k = noisy_k()
    fit = fit_critical_batch(FIT_SIZES, seed_mean(k, axis=1))
    assert fit["S_min"] == pytest.approx(100.0, rel=0.05)
    assert fit["B_crit"] == pytest.approx(300.0, rel=0.05)
    assert fit["E_min"] == pytest.approx(30000.0, rel=0.05)


def test_fit_edge_cases():
    # fewer than 3 finite points
    fit = fit_critical_batch([16, 32, 64], [100.0, 50.0, math.inf])
    assert fit["n_points"] == 2 and all(math.isnan(fit[k]) for k in ("S_min", "B_crit", "E_min"))
    # perfectly linear scaling (k = 6400 / m): no plateau, B_crit infinite
    fit = fit_critical_batch([16, 32, 64], [400.0, 200.0, 100.0])
    assert fit["S_min"] == pytest.approx(0.0, abs=1e-9) and fit["B_crit"] == math.inf
    # flat k: B_crit 0
    fit = fit_critical_batch([16, 32, 64], [50.0, 50.0, 50.0])
    assert fit["S_min"] == pytest.approx(50.0) and fit["B_crit"] == pytest.approx(0.0, abs=1e-9)


def test_bootstrap_critical_batch_contains_truth():
    result = critical_batch_interval(FIT_SIZES, noisy_k(), samples=300, confidence=0.9, seed=0)
    assert result["interval_kind"] == "percentile_bootstrap"
    assert result["B_crit_low"] <= 300.0 <= result["B_crit_high"]
    assert result["S_min_low"] <= 100.0 <= result["S_min_high"]
    assert result["E_min_low"] <= 30000.0 <= result["E_min_high"]
    assert result["B_crit_low"] < result["B_crit"] < result["B_crit_high"]
    assert result["n_resamples"] == 300


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_interval_contains_the_mean():
    values = 10.0 + np.random.default_rng(3).normal(0.0, 1.0, 20)
    estimate, low, high = bootstrap_interval(values, samples=2000, confidence=0.95, seed=0)
    assert estimate == pytest.approx(values.mean())
    assert low < 10.0 < high and low < estimate < high
    # deterministic for a given seed
    assert bootstrap_interval(values, samples=2000, confidence=0.95, seed=0) == (estimate, low, high)


def test_bootstrap_interval_hand_cases():
    assert bootstrap_interval([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    assert bootstrap_interval([7.0]) == (7.0, 7.0, 7.0)
    # two seeds 100 and 200: a resample is 100, 150 or 200 (probability 1/4, 1/2, 1/4)
    assert bootstrap_interval([100.0, 200.0], confidence=0.9) == (150.0, 100.0, 200.0)
    # NaN (missing run) is dropped
    assert bootstrap_interval([100.0, np.nan, 200.0], confidence=0.9) == (150.0, 100.0, 200.0)
    assert all(math.isnan(v) for v in bootstrap_interval([np.nan]))


def test_bootstrap_interval_with_an_infinite_seed():
    estimate, low, high = bootstrap_interval([1.0, 2.0, math.inf], confidence=0.9)
    assert estimate == math.inf and high == math.inf
    assert math.isfinite(low) and 1.0 <= low <= 2.0


def test_bootstrap_speedup_is_paired():
    k_base = np.array([400.0, 380.0, 420.0])
    assert bootstrap_speedup(k_base, k_base) == (1.0, 1.0, 1.0)
    # every seed exactly twice as fast: paired resampling keeps the ratio at 2
    assert bootstrap_speedup(k_base / 2, k_base) == (2.0, 2.0, 2.0)
    estimate, low, high = bootstrap_speedup([200.0, math.inf], [400.0, 400.0])
    assert math.isnan(estimate) and low == 2.0 and high == 2.0  # resamples with the inf seed have no speedup


def test_bootstrap_interval_with_a_statistic_without_axis():
    estimate, low, high = bootstrap_interval([100.0, 200.0], statistic=lambda v: float(np.median(v)))
    assert (estimate, low, high) == (150.0, 100.0, 200.0)


def test_resample_uniform_in_steps_weights_training_evenly():
    # log grid: 4 of 5 points in the first 10% of training; uniformly resampled, half the values are
    # from the second half of training
    steps = [0, 1, 10, 100, 1000]
    values = [4.0, 3.0, 2.0, 1.0, 0.0]
    resampled = resample_uniform_in_steps(steps, values, points=1001)
    assert resampled[0] == 4.0 and resampled[-1] == 0.0
    assert resampled[500] == pytest.approx(1.0 - 400 / 900)  # step 500 between (100, 1) and (1000, 0)
    # after step 100 the curve is (1000 - s) / 900; the lowest quarter of steps is 750..1000
    assert np.quantile(resampled, 0.25) == pytest.approx(250 / 900, abs=1e-3)
    assert resample_uniform_in_steps([5], [2.0]).tolist() == [2.0]
    assert resample_uniform_in_steps([0, 1], [np.nan, np.nan]).size == 0


# ------------------------------------------------------------------ per-seed thresholds and intervals by seed count


def test_per_seed_threshold_is_reached_by_every_seed_where_the_pooled_quantile_is_not():
    # Two seeds of the source batch, on steps 0..100. Seed 0 falls to 0.01 by step 10 and stays there;
    # seed 1 only falls to 0.5. Pooled, the lower quartile of both curves is 0.01 (seed 0 sits at 0.01 for
    # 90% of its curve: more than half the pool), below seed 1's minimum 0.5: seed 1 would never reach it.
    steps = np.array([0, 10, 100], dtype=float)
    seed0 = np.array([1.0, 0.01, 0.01])
    seed1 = np.array([1.0, 0.6, 0.5])
    curves = [resample_uniform_in_steps(steps, c, points=1001) for c in (seed0, seed1)]
    pooled = threshold_from_rule(np.concatenate(curves), LOWER_QUARTILE)
    assert pooled == pytest.approx(0.01) and pooled < seed1.min()
    assert iterations_to_threshold(steps, seed1, pooled) == math.inf
    # per seed: seed 0's quartile 0.01, seed 1's: its last 75 steps fall linearly 0.5667 -> 0.5, the lowest
    # quarter of its curve is 75..100 -> 0.6 - 0.1 * (75 - 10) / 90 = 0.52778; eps is the larger
    eps = threshold_from_seeds(curves, LOWER_QUARTILE)
    assert eps == pytest.approx(0.6 - 0.1 * 65 / 90, abs=1e-3)
    assert all(math.isfinite(iterations_to_threshold(steps, c, eps)) for c in (seed0, seed1))
    assert threshold_from_seeds(curves, {"fixed": 0.3}) == 0.3


def test_interval_kind_and_width_for_one_two_and_five_seeds():
    # one seed: no interval at all (never low = high = estimate)
    one = seed_interval([120.0])
    assert one["interval_kind"] == "none" and one["estimate"] == 120.0
    assert math.isnan(one["low"]) and math.isnan(one["high"])
    # two seeds 100 and 200: Student-t on the log scale. logs differ by ln 2: sd = ln2/sqrt(2),
    # se = ln2/2, t(0.95, 1) = 6.3138 -> half-width 2.1882 around the log geometric mean ln(141.42)
    two = seed_interval([100.0, 200.0], confidence=0.9)
    half = 6.313751514675 * math.log(2) / 2
    assert two["interval_kind"] == "student_t" and two["estimate"] == 150.0
    assert two["low"] == pytest.approx(math.sqrt(2e4) / math.exp(half)) and two["low"] == pytest.approx(15.86, rel=1e-3)
    assert two["high"] == pytest.approx(math.sqrt(2e4) * math.exp(half)) and two["high"] == pytest.approx(1261, rel=1e-3)
    # five seeds (100, 100, 100, 100, 200): percentile bootstrap. A resample mean is 100 + 20 X with
    # X ~ Binomial(5, 0.2): P(X = 0) = 0.33 > 5% -> low 100; P(X <= 2) = 0.942 < 95% < P(X <= 3) = 0.993
    # -> high 160
    five = seed_interval([100.0] * 4 + [200.0], samples=2000, confidence=0.9)
    assert five["interval_kind"] == "percentile_bootstrap" and five["estimate"] == 120.0
    assert (five["low"], five["high"]) == (100.0, 160.0)
    # an infinite seed among 2-4: no t interval of an infinite mean
    inf = seed_interval([100.0, math.inf])
    assert inf["estimate"] == math.inf and math.isnan(inf["low"]) and inf["interval_kind"] == "student_t"
    # the speedup interval of two seeds is a t interval of the per-seed log speedups: 4 and 1 -> geometric 2
    s = speedup_interval([100.0, 400.0], [400.0, 400.0])
    assert s["interval_kind"] == "student_t" and s["estimate"] == pytest.approx(400 / 250)
    assert s["low"] == pytest.approx(2 / math.exp(6.313751514675 * math.log(4) / 2))


def test_fit_interval_for_one_series_is_a_residual_bootstrap():
    k = mcc(FIT_SIZES, 100.0, 300.0) * np.exp(np.random.default_rng(4).normal(0.0, 0.05, FIT_SIZES.size))
    result = critical_batch_interval(FIT_SIZES, k[:, None], samples=300, seed=0)
    assert result["interval_kind"] == "residual_bootstrap" and result["n_seeds"] == 1
    assert result["B_crit_low"] < result["B_crit"] < result["B_crit_high"]
    assert result["B_crit_low"] < 300 < result["B_crit_high"]
    # two seeds: per-seed fits, a Student-t interval (log scale) of them
    two = critical_batch_interval(FIT_SIZES, noisy_k(seeds=2), samples=50)
    assert two["interval_kind"] == "student_t" and two["B_crit_low"] < two["B_crit_high"]


def test_fit_with_censored_batch_sizes():
    m = np.array([8, 16, 32, 64, 128, 256], dtype=float)
    k = mcc(m, 100.0, 64.0)  # 900, 500, 300, 200, 150, 125
    k[4:] = math.inf  # 128 and 256 never reached eps
    # censored below the model (ran 100 steps, model says 150 and 125): consistent, the fit is exact
    fit = fit_critical_batch(m, k, [np.nan] * 4 + [100.0, 100.0])
    assert (fit["n_points"], fit["n_censored"]) == (4, 2)
    assert fit["S_min"] == pytest.approx(100.0, rel=1e-6) and fit["B_crit"] == pytest.approx(64.0, rel=1e-6)
    assert fit["log_rmse"] == pytest.approx(0.0, abs=1e-6)
    # censored above the model (ran 400 steps without reaching eps where the model says 150 and 125): the
    # points pull the plateau up; left out as if absent they would not
    dropped = fit_critical_batch(m, k)
    assert dropped["B_crit"] == pytest.approx(64.0, rel=1e-6) and dropped["n_censored"] == 0
    fit = fit_critical_batch(m, k, [np.nan] * 4 + [400.0, 400.0])
    assert fit["S_min"] > 150 and fit["B_crit"] < 64 and fit["log_rmse"] > 0.1
    # and it balances: the censored shortfall equals the miss on the reached points in the objective
    fitted = fit["S_min"] + fit["E_min"] / m
    assert fitted[4] < 400 and fitted[0] < 900
    # mean censoring bound: seeds (k 300, not reached after 500 steps) -> mean k >= 400; a diverged seed
    # (no step count) gives no bound
    assert mean_censoring_bound([300.0, math.inf], [800.0, 500.0]) == 400.0
    assert math.isnan(mean_censoring_bound([300.0, math.inf], [800.0, np.nan]))
    assert math.isnan(mean_censoring_bound([300.0, 200.0], [800.0, 500.0]))


def test_b_crit_outside_the_measured_range_is_reported_as_a_bound():
    sizes = np.array([4, 8, 16, 32, 64, 128, 256], dtype=float)
    flat = fit_critical_batch(sizes, mcc(sizes, 100.0, 1.39))  # B_crit 1.39 < m_min = 4
    assert flat["B_crit"] == pytest.approx(1.39, rel=1e-6)
    assert critical_batch_bound(flat["B_crit"], 4, 256) == {"bound": "below_range", "report": "< 4"}
    steep = fit_critical_batch(sizes, mcc(sizes, 100.0, 704.0))  # B_crit 704 > 256
    assert critical_batch_bound(steep["B_crit"], 4, 256) == {"bound": "above_range", "report": "> 256"}
    assert critical_batch_bound(math.inf, 4, 256)["report"] == "> 256"
    assert critical_batch_bound(100.0, 4, 256) == {"bound": None, "report": "100"}


def test_overhead_critical_batch_on_a_hand_computed_table():
    m = [4, 8, 16, 32]
    k = [1000.0, 520.0, 310.0, 200.0]
    # k m / (k(m0) m0) = 1, 1.04, 1.24, 1.6: 20% overhead is crossed between 8 and 16. log(k m) is linear
    # in log m between them: t = (ln 1.2 - ln 1.04) / (ln 1.24 - ln 1.04) = 0.8136 -> m = 8 * 2 ** t = 14.06
    t = (math.log(1.2) - math.log(1.04)) / (math.log(1.24) - math.log(1.04))
    direct = overhead_batch_direct(m, k, 4, 0.2)
    assert direct["estimate"] == pytest.approx(8 * 2 ** t) and direct["estimate"] == pytest.approx(14.06, abs=0.01)
    assert direct["bound"] is None
    # exactly at the overhead at a measured size (k(16) m = 4800 = 1.2 * 4000): that size
    assert overhead_batch_direct(m, [1000.0, 520.0, 300.0, 200.0], 4, 0.2)["estimate"] == pytest.approx(16.0)
    # never 20% above linear before the first size that did not reach eps: a bound
    bound = overhead_batch_direct(m, [1000.0, 500.0, 260.0, math.inf], 4, 0.2)  # 1, 1, 1.04, stop
    assert math.isnan(bound["estimate"]) and (bound["bound"], bound["report"]) == ("above_range", "> 16")
    # from the fit k = S (1 + B/m): m + B = 1.2 (m0 + B) -> m = 1.2 m0 + 0.2 B = 4.8 + 0.2 * 64 = 17.6
    assert overhead_batch_from_fit(100.0, 64.0, 4, 0.2) == pytest.approx(17.6)
    k_fit = 100.0 * (1 + 64.0 / 17.6)
    assert k_fit * 17.6 == pytest.approx(1.2 * 100.0 * (1 + 64.0 / 4) * 4)
