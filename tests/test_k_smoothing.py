"""k(m) on a loss smoothed in log step (k_smoothing_decades): hand values."""

import numpy as np
import pytest

from batchscale.analysis.steps import iterations_to_threshold, smooth_in_log_steps

STEPS = np.array([0, 10, 100, 1000, 10000])


def test_a_window_narrower_than_the_grid_changes_nothing():
    values = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    # points are a decade apart; a 0.5-decade window (+-0.25) holds only the point itself
    assert smooth_in_log_steps(values, STEPS, 0.5).tolist() == values.tolist()
    assert smooth_in_log_steps(values, STEPS, 0.0) is values or np.array_equal(smooth_in_log_steps(values, STEPS, 0), values)


def test_a_two_decade_window_averages_the_neighbours():
    values = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    # +-1 decade: step 10 averages 10 and 100 (step 0 has no logarithm and stays out): (4 + 3) / 2 = 3.5;
    # step 100: (4 + 3 + 2) / 3 = 3; step 1000: 2; step 10000: (2 + 1) / 2 = 1.5; step 0 keeps 5
    assert smooth_in_log_steps(values, STEPS, 2.0).tolist() == [5.0, 3.5, 3.0, 2.0, 1.5]
    # NaN stays NaN (a run that ended) and is left out of its neighbours' means
    with_nan = np.array([5.0, 4.0, 3.0, np.nan, np.nan])
    got = smooth_in_log_steps(with_nan, STEPS, 2.0)
    assert got[:3].tolist() == [5.0, 3.5, 3.5] and np.isnan(got[3:]).all()


def test_smoothing_steadies_k_on_a_noisy_crossing():
    steps = np.array([0, 100, 110, 121, 133, 146, 161, 177, 195])
    # a loss falling through eps = 1 with a dip: the raw curve first touches 1 at step 110 (the dip), then
    # rises above it and comes back at 161; k jumps with the dip
    noisy = np.array([3.0, 1.05, 0.99, 1.08, 1.06, 1.03, 1.00, 0.95, 0.9])
    assert iterations_to_threshold(steps, noisy, 1.0) == pytest.approx(np.exp(np.log(100) + (0.05 / 0.06) * np.log(1.1)))
    # a 0.1-decade window (+-0.05: neighbours within a factor 10**0.05 = 1.122) averages the dip away:
    # step 110 -> mean(1.05, 0.99, 1.08) = 1.04, step 121 -> mean(0.99, 1.08, 1.06) = 1.0433...
    smooth = smooth_in_log_steps(noisy, steps, 0.1)
    assert smooth[2] == pytest.approx((1.05 + 0.99 + 1.08) / 3)
    assert iterations_to_threshold(steps, smooth, 1.0) > 146  # the crossing the trend makes, not the dip
