"""The overhead-based critical batch of a k(m) curve (Zhang et al. 2024), with its interval.

Read directly off the seed-mean curve (`critical.overhead_batch_direct`) and from the fitted hyperbola
(`critical.overhead_batch_from_fit`); the interval describes the number it is printed beside.
"""

from __future__ import annotations

import math

import numpy as np

from batchscale.analysis.critical import overhead_batch_direct, overhead_batch_from_fit
from batchscale.analysis.intervals import (
    ONE_VALUE,
    interval_kind_for,
    percentile_interval,
    resample_indices,
    seed_interval,
    seed_mean,
)
from batchscale.analysis.many_seeds import many, mean_curve_draws


def overhead_draws(batch_sizes, curves, base: float, overhead: float) -> np.ndarray:
    """The overhead-based critical batch read off each of several k(m) curves (one per row of `curves`), as
    the data's is read off its seed means; a curve whose walk passes the grid counts as +inf (its crossing
    lies above the largest batch size), not as missing."""
    drawn = []
    for curve in np.atleast_2d(np.asarray(curves, dtype=float)):
        read = overhead_batch_direct(batch_sizes, curve, base, overhead)
        drawn.append(math.inf if read["bound"] == "above_range" else read["estimate"])
    return np.asarray(drawn, dtype=float)


def overhead_entry(batch_sizes: np.ndarray, k: np.ndarray, k_mean: np.ndarray, fit: dict, base: float,
                   overhead: float, bootstrap_cfg: dict, seed: int = 0) -> dict:
    """The overhead-based critical batch of a curve, read directly off k(m) and from the fit.

    Args:
      batch_sizes: the batch sizes m.
      k: k per (batch size, seed).
      k_mean: its seed means.
      fit: `critical.critical_batch_interval` of the curve.
      base: m0.
      overhead: the relative overhead over linear scaling.
      bootstrap_cfg: {samples, confidence}.
      seed: the seed of the resampling.

    Returns:
      ``{"overhead", "direct": {estimate, bound, report, low, high, interval_kind}, "from_fit": {estimate,
      low, high, interval_kind}}``. The direct estimate is read off the seed-mean curve, so its interval is
      too: from 5 seeds a percentile bootstrap that resamples seeds (the same at every m) and reads each
      resample's mean curve (an interval of the per-seed crossings would describe another quantity, which
      Jensen's inequality puts above the estimate); with 2-4 seeds a Student-t interval of the per-seed
      crossings (none unless every seed has one).
    """
    samples = int(bootstrap_cfg.get("samples", 1000))
    confidence = float(bootstrap_cfg.get("confidence", 0.9))
    direct = overhead_batch_direct(batch_sizes, k_mean, base, overhead)
    seeds = np.flatnonzero(np.any(~np.isnan(k), axis=0))  # the seeds with data
    if many(k.shape[1]):  # too many seeds to read one by one or resample: normal draws of the mean curve
        low, high = percentile_interval(overhead_draws(batch_sizes, mean_curve_draws(k), base, overhead), confidence)
        kind = "normal_bootstrap"
    elif interval_kind_for(seeds.size) == "percentile_bootstrap":
        index = seeds[resample_indices(seeds.size, samples, seed)]
        resampled_means = seed_mean(k[:, index], axis=-1)  # (batch sizes, resamples)
        low, high = percentile_interval(overhead_draws(batch_sizes, resampled_means.T, base, overhead), confidence)
        kind = ONE_VALUE if low == high else "percentile_bootstrap"  # seeds that agree: no spread to show
    else:
        per_seed = [overhead_batch_direct(batch_sizes, k[:, j], base, overhead)["estimate"] for j in seeds]
        direct_int = seed_interval(per_seed, samples, confidence, seed)
        low, high = direct_int["low"], direct_int["high"]
        kind = direct_int["interval_kind"] if len(per_seed) == direct_int["n"] else "none"
    direct.update({"low": low, "high": high, "interval_kind": kind})
    if kind.startswith("none"):
        direct["low"] = direct["high"] = None
    return {"overhead": overhead, "direct": direct, "from_fit": overhead_from_fit(fit, base, overhead)}


def overhead_from_fit(fit: dict, base: float, overhead: float) -> dict:
    """The overhead-based critical batch of the fitted hyperbola, with the fit's B_crit interval."""
    return {
        "estimate": overhead_batch_from_fit(fit["S_min"], fit["B_crit"], base, overhead),
        "low": overhead_batch_from_fit(fit["S_min"], fit["B_crit_low"], base, overhead),
        "high": overhead_batch_from_fit(fit["S_min"], fit["B_crit_high"], base, overhead),
        "interval_kind": fit["interval_kind"],
    }
