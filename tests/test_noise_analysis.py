"""B_simple over training, at the loss target, and beside the measured critical batch, by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from batchscale.analysis import noise as an


def small_cube():
    """1 strategy x 2 batch sizes x 1 seed x 4 steps; batch 8 has no point at step 100 (NaN)."""
    steps = np.array([1, 10, 100, 1000])
    g2 = np.array([[[[4.0, 2.0, 1.0, 1.0]], [[2.0, 2.0, np.nan, -1.0]]]])
    trace = np.array([[[[8.0, 8.0, 10.0, 20.0]], [[4.0, 6.0, np.nan, 9.0]]]])
    dims = ("strategy", "batch_size", "seed", "step")
    return xr.Dataset(
        {"noise_g2": (dims, g2), "noise_trace_sigma": (dims, trace),
         "noise_g2_exact": (dims, np.full(g2.shape, np.nan)),
         "noise_trace_sigma_exact": (dims, np.where(np.isfinite(g2), 1.0, np.nan))},
        coords={"strategy": ["blr"], "batch_size": [4, 8], "seed": [0], "step": steps})


def test_b_simple_over_training_from_a_cube():
    points = an.noise_points(small_cube())
    assert len(points) == 7  # the NaN point of batch 8 is dropped
    assert points.loc[points["batch_size"] == 8, "examples_seen"].tolist() == [8, 80, 8000]
    table = an.b_simple_over_training(points, window=2)
    assert list(table.columns) == list(an.OVER_TRAINING_COLUMNS)
    b4 = table[table["batch_size"] == 4]
    # centred window 2 (the point and the next): (8+8)/(4+2); (8+10)/(2+1); (10+20)/(1+1); 20/1 at the end
    np.testing.assert_allclose(b4["b_simple"], [16 / 6, 6.0, 15.0, 20.0])
    assert (b4["run_invalid_fraction"] == 0).all()
    b8 = table[table["batch_size"] == 8]
    # (4+6)/(2+2); (6+9)/(2-1) = 15 (the missing step-100 point is not in this run's window); 9/-1: invalid
    np.testing.assert_allclose(b8["b_simple"], [2.5, 15.0, np.nan])
    assert b8["window_invalid"].tolist() == [False, False, True]
    np.testing.assert_allclose(b8["run_invalid_fraction"], 1 / 3)
    # the trailing window (the former default) of the same values: 8/4; (8+8)/(4+2); (8+10)/(2+1); (10+20)/2
    trailing, _ = an.windowed_noise_scale([4.0, 2.0, 1.0, 1.0], [8.0, 8.0, 10.0, 20.0], 2, centred=False)
    np.testing.assert_allclose(trailing, [2.0, 16 / 6, 6.0, 15.0])
    centred3, _ = an.windowed_noise_scale([4.0, 2.0, 1.0, 1.0], [8.0, 8.0, 10.0, 20.0], 3)
    np.testing.assert_allclose(centred3, [16 / 6, 26 / 7, 38 / 4, 30 / 2])  # i-1..i+1
    assert table["b_simple_exact"].isna().all()  # exact |G|^2 not computed: NaN, not zero


def test_b_simple_at_k_interpolates_in_log_step():
    steps, values = [1, 10, 100], [10.0, 20.0, 40.0]
    assert an.b_simple_at_k(steps, values, math.sqrt(10)) == pytest.approx(15.0)  # halfway in log step
    assert an.b_simple_at_k(steps, values, 10) == 20.0
    assert an.b_simple_at_k(steps, values, 10 ** 1.25) == pytest.approx(25.0)
    assert math.isnan(an.b_simple_at_k(steps, values, math.inf))  # never reached eps
    assert math.isnan(an.b_simple_at_k(steps, values, 0.5))
    assert an.b_simple_at_k([0, 10], [10.0, 30.0], 5) == pytest.approx(20.0)  # from step 0: linear
    assert an.b_simple_at_k([1, 10, 100], [10.0, np.nan, 40.0], 10) == pytest.approx(25.0)


def test_at_threshold_and_beside_the_critical_batch():
    over = pd.DataFrame({
        "strategy": ["blr"] * 6, "batch_size": [4] * 6, "seed": [0, 0, 0, 1, 1, 1],
        "step": [1, 10, 100] * 2, "b_simple": [10.0, 20.0, 40.0, 30.0, 30.0, 60.0],
        "b_simple_exact": [np.nan] * 6,
    })
    k_runs = pd.DataFrame({"strategy": ["blr"] * 3, "batch_size": [4] * 3, "seed": [0, 1, 2],
                           "k": [math.sqrt(10), 100.0, math.inf]})
    at = an.b_simple_at_threshold(over, k_runs)
    row = at.iloc[0]
    # seed 0: 15 at k = sqrt(10); seed 1: 60 at k = 100; seed 2 never reached eps (counted, not averaged)
    assert row["b_simple_at_eps"] == pytest.approx(37.5)
    assert (row["b_simple_at_eps_min"], row["b_simple_at_eps_max"]) == (15.0, 60.0)
    assert row["k_mean_steps"] == pytest.approx((math.sqrt(10) + 100) / 2)
    assert (row["n_seeds"], row["n_at_eps"]) == (3, 2)
    document = {"strategies": {"blr": {"train_loss": {
        "B_crit": {"estimate": 150.0, "low": 100.0, "high": None, "interval_kind": "percentile", "report": "150"},
        "overhead_critical_batch": {"overhead": 0.2, "direct": {"estimate": 75.0}, "from_fit": {"estimate": 90.0}}}}}}
    critical = an.critical_from_document(document, "train_loss")
    assert critical.iloc[0][["B_crit", "B_crit_low", "B_crit_overhead"]].tolist() == [150.0, 100.0, 75.0]
    assert math.isnan(critical.iloc[0]["B_crit_high"])
    assert critical.iloc[0][["B_crit_interval_kind", "B_crit_report"]].tolist() == ["percentile", "150"]
    table = an.noise_vs_critical(at, critical)
    assert list(table.columns) == list(an.VERSUS_CRITICAL_COLUMNS)
    assert table.iloc[0]["ratio_B_crit_over_B_simple"] == pytest.approx(4.0)
    assert table.iloc[0]["ratio_B_crit_overhead_over_B_simple"] == pytest.approx(2.0)
    assert set(an.VERSUS_CRITICAL_COLUMNS) - {"strategy", "metric", "batch_size", "n_at_eps", "B_crit_interval_kind",
                                            "B_crit_report"} <= set(an.UNITS)


def test_missing_noise_variables_are_named():
    with pytest.raises(ValueError, match="noise_g2"):
        an.noise_points(xr.Dataset())
