"""Fits and regime labels with their uncertainty (issue 21): a goodness-of-fit cut-off that rejects bad
hyperbolas, learning-rate instability left out of the fit rather than censored, and regimes from the
efficiency interval. Hand values throughout."""

import numpy as np
import pytest

from batchscale.analysis.curves import critical_entry
from batchscale.analysis.speedup import interval_regimes
from batchscale.analysis.thresholds import unstable_runs
from batchscale.report.summary import critical_text

BOOT = {"samples": 50, "confidence": 0.9}
M = np.array([4.0, 8.0, 16.0, 32.0])


def hyperbola(s_min, b_crit, m):
    return s_min * (1.0 + b_crit / m)


def test_an_exact_hyperbola_is_accepted():
    k = hyperbola(100.0, 16.0, M)  # 500, 300, 200, 150
    entry = critical_entry(M, k, ["base"] * 4, BOOT, base_batch=4, critical_cfg={"max_log_rmse": 0.15})
    assert entry["B_crit"]["estimate"] == pytest.approx(16.0, rel=1e-6)
    assert entry["log_rmse"] == pytest.approx(0.0, abs=1e-6)
    assert entry["B_crit"]["rejected"] is False and entry["fit_meaningful"] is True


def test_a_hyperbola_missing_k_by_more_than_the_cut_off_is_rejected():
    # k zig-zags by a factor e^0.3 around a flat line, rising on the whole: a hyperbola only falls, so the
    # best is flat (E_min = 0, B_crit = 0, at the geometric mean 100), its log residuals +-0.3, so
    # log-RMSE = 0.3 > 0.15
    k = 100.0 * np.exp(np.array([-0.3, 0.3, -0.3, 0.3]))
    entry = critical_entry(M, k, ["base"] * 4, BOOT, base_batch=4, critical_cfg={"max_log_rmse": 0.15})
    assert entry["log_rmse"] == pytest.approx(0.3, rel=1e-3)
    assert entry["B_crit"]["rejected"] is True and entry["fit_meaningful"] is False
    assert "rejected" in entry["note"]
    # the same curve under a looser cut-off (0.35) is not rejected
    loose = critical_entry(M, k, ["base"] * 4, BOOT, base_batch=4, critical_cfg={"max_log_rmse": 0.35})
    assert loose["B_crit"]["rejected"] is False
    text = critical_text({"report": "7", "bound": None, "low": 1, "high": 9, "interval_kind": "none",
                          "fit_meaningful": False, "rejected": True, "log_rmse": 0.3})
    assert text.startswith("rejected") and "0.3" in text


def test_instability_is_excluded_not_censored():
    # m = 32 never reached eps within its 40 steps: as a slow run it is censored (k >= 40), which pulls the
    # fit; as an unstable run (no step count: `k_at` gives none for runs that did not train or rose
    # again) it is left out, and the fit is the exact hyperbola of the other three sizes
    k = np.array([500.0, 300.0, 200.0, np.inf])
    censored = critical_entry(M, k, ["base"] * 4, BOOT, steps_per_seed=np.array([1e4, 1e4, 1e4, 400.0]),
                              base_batch=4)
    assert censored["n_censored"] == 1
    assert censored["B_crit"]["estimate"] != pytest.approx(16.0, rel=1e-3)
    excluded = critical_entry(M, k, ["base"] * 4, BOOT, steps_per_seed=np.array([1e4, 1e4, 1e4, np.nan]),
                              base_batch=4)
    assert excluded["n_censored"] == 0 and "32" in excluded["excluded"]
    assert excluded["B_crit"]["estimate"] == pytest.approx(16.0, rel=1e-6)


def test_unstable_runs_did_not_train_or_rose_again():
    curves = np.array([[1.0, 0.5, 0.3, 0.2],     # trained, still falling: stable
                       [1.0, 0.98, 0.95, 0.95],  # dropped 5% < 10%: did not train
                       [1.0, 0.3, 0.2, 0.5],     # ends at 0.5 > 1.1 x its minimum 0.2: rose again
                       [1.0, 0.3, 0.2, 0.21],    # 0.21 <= 1.1 x 0.2: noise, stable
                       [np.nan] * 4])            # no data
    assert unstable_runs(curves).tolist() == [False, True, True, False, False]


def test_regimes_from_the_efficiency_interval():
    m = [4, 8, 16, 32, 64]
    labels = ["base", "linear", "linear", "linear", "diminishing"]
    # efficiency estimates and interval lower bounds: 8 clears 0.8 (low 0.85); 16's whole interval lies above 1
    # (low 1.02); 32's estimate 0.81 clears the cut-off but its interval reaches 0.60: not shown to be linear
    est = [1.0, 0.9, 1.07, 0.81, 0.5]
    low = [1.0, 0.85, 1.02, 0.60, 0.4]
    assert interval_regimes(labels, m, est, low, 100.0, 0.8) == [
        "base", "linear", "superlinear", "unresolved", "diminishing"]
    # an estimate above 1 whose interval reaches below it is linear scaling, not faster than it
    assert interval_regimes(["base", "linear"], [4, 8], [1, 1.07], [1, 0.95], 100.0) == ["base", "linear"]
    # once the interval fails, the later point-linear sizes are unresolved too (the regime is a prefix)
    assert interval_regimes(["base", "linear", "linear"], [4, 8, 16], [1, 0.81, 0.9], [1, 0.6, 0.85], 10.0) == [
        "base", "unresolved", "unresolved"]
    # one seed: no interval exists; the point estimate decides
    assert interval_regimes(["base", "linear"], [4, 8], [1, 0.9], [np.nan, np.nan], 10.0,
                            interval_known=[False, False]) == ["base", "linear"]
    # k(m0) not finite: no regime anywhere (missing stays missing)
    assert interval_regimes(["not_reached", "diminishing", "missing"], [4, 8, 16], [np.nan] * 3, [np.nan] * 3,
                            np.inf) == ["no_base", "no_base", "missing"]


def test_the_analyze_lines_say_a_rejected_fit_is_rejected():
    from batchscale.report.critical_lines import critical_batch_lines

    k = 100.0 * np.exp(np.array([-0.3, 0.3, -0.3, 0.3]))
    entry = critical_entry(M, k, ["base"] * 4, BOOT, base_batch=4, critical_cfg={"max_log_rmse": 0.15})
    lines = critical_batch_lines({"strategies": {"lsr": {"train_loss": {"threshold": 0.1, **entry}}}})
    assert "REJECTED" in lines[0] and "log-RMSE 0.3" in lines[0]
