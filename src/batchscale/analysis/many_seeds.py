"""Intervals for sweeps with very many seeds per batch size (a CSV of 125,000 seeds per batch size, say).

A percentile bootstrap over n seeds draws n indices per resample: 1000 resamples of 125,000 seeds are 125
million draws per batch size, and the critical-batch fit would be refitted on each. Past `MAX_BOOTSTRAP_SEEDS`
seeds the sampling distribution of seed means is normal to a very good approximation (the central limit
theorem), so the intervals come from it instead: ``normal_approximation`` for a mean (mean -/+ z sd/sqrt(n))
and a speedup (delta method on the log of the ratio of paired means), and ``normal_bootstrap`` for
quantities fitted to the curve of means (B_crit, the overhead-based batch): the vectors of seed means are
drawn from a normal with the seeds' covariance across batch sizes over n (seeds are paired across batch
sizes) and the fit is redone on `NORMAL_DRAWS` draws.
"""

from __future__ import annotations

import math

import numpy as np

# the normal quantile scipy.stats.norm.ppf calls, without scipy.stats's 0.8 s import
from scipy.special import ndtri

MAX_BOOTSTRAP_SEEDS = 1000
NORMAL_DRAWS = 200


def many(n_seeds: int) -> bool:
    """Whether n seeds are past the bootstrap's cap (the normal approximations apply)."""
    return int(n_seeds) > MAX_BOOTSTRAP_SEEDS


def normal_mean_interval(values, confidence: float) -> tuple[float, float]:
    """mean -/+ z sd/sqrt(n) of the finite values; NaN bounds when a value is infinite (the mean is then inf).

    Args:
      values: one value per seed (NaN: missing, dropped).
      confidence: the coverage.

    Returns:
      (low, high).
    """
    values = np.asarray(values, dtype=float).ravel()
    values = values[~np.isnan(values)]
    if values.size < 2 or not np.all(np.isfinite(values)):
        return math.nan, math.nan
    half = float(ndtri(0.5 + confidence / 2.0)) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def normal_speedup_interval(k, k_base, confidence: float) -> tuple[float, float]:
    """The interval of mean(k_base) / mean(k) over paired seeds, by the delta method on its log.

    Args:
      k: k at m per seed.
      k_base: k at m0 for the same seeds.
      confidence: the coverage.

    Returns:
      (low, high); NaN bounds when a seed of either is not finite or missing.
    """
    k = np.asarray(k, dtype=float).ravel()
    kb = np.asarray(k_base, dtype=float).ravel()
    if k.size < 2 or not (np.all(np.isfinite(k)) and np.all(np.isfinite(kb))):
        return math.nan, math.nan
    mean_k, mean_b = k.mean(), kb.mean()
    if mean_k <= 0 or mean_b <= 0:
        return math.nan, math.nan
    cov = np.cov(np.vstack([kb / mean_b, k / mean_k]), ddof=1)
    variance = max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0) / k.size
    half = float(ndtri(0.5 + confidence / 2.0)) * math.sqrt(variance)
    centre = math.log(mean_b / mean_k)
    return math.exp(centre - half), math.exp(centre + half)


def mean_curve_draws(k: np.ndarray, draws: int = NORMAL_DRAWS, seed: int = 0) -> np.ndarray:
    """Draws of the vector of seed means per batch size from their normal approximation.

    Args:
      k: k per (batch size, seed) (NaN: missing; a row with an infinite seed is drawn as inf).
      draws: the number of draws.
      seed: the seed of the generator.

    Returns:
      an array (draws, batch sizes).
    """
    k = np.asarray(k, dtype=float)
    finite_rows = np.array([np.all(np.isfinite(row[~np.isnan(row)])) and np.any(~np.isnan(row)) for row in k])
    means = np.array([row[~np.isnan(row)].mean() if np.any(~np.isnan(row)) else np.nan for row in k])
    out = np.tile(means, (int(draws), 1))
    rows = np.flatnonzero(finite_rows)
    if rows.size:
        part = k[rows]
        complete = np.all(np.isfinite(part), axis=0)  # the seeds with a value at every finite batch size
        n = max(int(complete.sum()), 2)
        cov = np.atleast_2d(np.cov(part[:, complete], ddof=1)) / n if complete.sum() >= 2 else \
            np.diag([np.var(r[np.isfinite(r)], ddof=1) / max(np.isfinite(r).sum(), 2) for r in part])
        rng = np.random.default_rng(seed)
        out[:, rows] = rng.multivariate_normal(means[rows], cov, size=int(draws), method="eigh")
    return out
