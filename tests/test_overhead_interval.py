"""The overhead-based critical batch's interval describes the number it is printed beside.

The estimate is read off the seed-mean curve k̄(m); the interval used to be a bootstrap of the per-seed
crossings, a different quantity: on the default run's digits_mlp it printed 5.994 [6.02, 8.53]. Now seeds are
resampled and each resample's mean curve is read the same way.
"""

from __future__ import annotations

import numpy as np

from batchscale.analysis.critical import overhead_batch_direct
from batchscale.analysis.overhead import overhead_entry
from batchscale.analysis.intervals import ONE_VALUE

M = np.array([4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
NO_FIT = {"S_min": np.nan, "B_crit": np.nan, "B_crit_low": np.nan, "B_crit_high": np.nan, "interval_kind": "none"}
BOOTSTRAP = {"samples": 1000, "confidence": 0.9}


def direct(k):
    return overhead_entry(M, k, k.mean(axis=1), NO_FIT, 4.0, 0.2, BOOTSTRAP)["direct"]


def test_a_curve_of_seeds_that_cross_early_and_late_gets_an_interval_around_its_estimate():
    # seeds 0-3 scale linearly to 128 (k m = 400) except seed 4, whose k flattens from m = 8: each seed's own
    # crossing is either beyond the grid or near 6 (k m = 560 at 8), the mean curve's lies past 8
    linear = 400.0 / M
    flat = np.array([100.0, 70.0, 60.0, 55.0, 52.0, 51.0])
    k = np.column_stack([linear * f for f in (1.0, 1.05, 0.95, 1.02)] + [flat])
    entry = direct(k)
    # by hand: k̄(8) = (50 (1 + 1.05 + 0.95 + 1.02) + 70) / 5 = 54.2, k̄(4) = (100 x 4.02 + 100) / 5 = 100.4;
    # g(8) = log(54.2 x 8 / (100.4 x 4)) = log(1.0797) < log 1.2, so the crossing lies past 8
    mean = k.mean(axis=1)
    assert np.isclose(mean[0], 100.4) and np.isclose(mean[1], 54.2)
    assert np.isclose(entry["estimate"], overhead_batch_direct(M, mean, 4.0, 0.2)["estimate"]) and entry["estimate"] > 8
    assert entry["interval_kind"] == "percentile_bootstrap"
    assert entry["low"] <= entry["estimate"] <= entry["high"]
    # the per-seed crossings, which the old interval bootstrapped: four beyond the grid, one near 6
    per_seed = [overhead_batch_direct(M, k[:, j], 4.0, 0.2)["estimate"] for j in range(5)]
    assert sum(np.isnan(per_seed)) == 4 and 4 < per_seed[4] < 8


def test_noisy_seeds_keep_the_estimate_inside_its_interval():
    rng = np.random.default_rng(1)
    shape = np.array([1000.0, 520.0, 280.0, 160.0, 110.0, 90.0])
    for _ in range(20):
        k = shape[:, None] * np.exp(rng.normal(0.0, 0.15, (6, 5)))
        entry = direct(k)
        assert entry["low"] <= entry["estimate"] <= entry["high"], entry


def test_seeds_that_agree_give_no_interval_rather_than_a_point():
    k = np.tile(np.array([1000.0, 520.0, 280.0, 160.0, 110.0, 90.0])[:, None], (1, 5))
    entry = direct(k)
    assert entry["interval_kind"] == ONE_VALUE and entry["low"] is None and entry["high"] is None
