"""Seed statistics and their intervals.

Every interval carries its kind (`INTERVAL_KINDS`): a percentile bootstrap over seeds from
`MIN_SEEDS_BOOTSTRAP` (5) seeds up, a Student-t interval below that, none from a single seed (and, for the
critical-batch fit, a residual bootstrap of one series: `critical.critical_batch_interval`).

Infinities: a run that never reaches the threshold has k = inf. The mean over seeds is inf as soon as one
seed is inf (the batch size did not reliably reach the threshold); NaN entries (missing runs) are ignored.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

# the t quantile that scipy.stats.t.ppf calls, without importing scipy.stats (0.8 s)
from scipy.special import stdtrit

from batchscale.analysis.many_seeds import many, normal_mean_interval

MIN_SEEDS_BOOTSTRAP = 5
# ``none: one distinct value``: every seed gave the same value, so there is no spread to make an interval of
# (never low = high = estimate); normal_approximation / normal_bootstrap: past many_seeds.MAX_BOOTSTRAP_SEEDS
ONE_VALUE = "none: one distinct value"
INTERVAL_KINDS = ("percentile_bootstrap", "student_t", "residual_bootstrap", "none", ONE_VALUE,
                  "normal_approximation", "normal_bootstrap")


def seed_mean(values, axis: int = -1):
    """The mean over seeds.

    Args:
      values: an array with seeds along `axis`.
      axis: the seed axis.

    Returns:
      the mean, NaN entries (missing runs) ignored; inf as soon as one entry is inf; NaN when all are NaN.
    """
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def sample_quantile(samples: np.ndarray, q: float) -> float:
    """A quantile of resampled statistics.

    Args:
      samples: the statistics of the resamples (no NaN).
      q: the quantile, in [0, 1].

    Returns:
      numpy's linear quantile; with infinities among the samples, an order statistic (lower below the
      median, higher above it), so no inf - inf = NaN arises; NaN without samples.
    """
    if samples.size == 0:
        return float("nan")
    if np.all(np.isfinite(samples)):
        return float(np.quantile(samples, q))
    return float(np.quantile(samples, q, method="lower" if q < 0.5 else "higher"))


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` range of resampled statistics (NaN samples dropped).

    Args:
      samples: the statistics of the resamples.
      confidence: the coverage, e.g. 0.9.

    Returns:
      (low, high), each a `sample_quantile`.
    """
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    alpha = (1.0 - confidence) / 2.0
    return sample_quantile(samples, alpha), sample_quantile(samples, 1.0 - alpha)


def resample_indices(n: int, samples: int, seed) -> np.ndarray:
    """Indices of `samples` resamples with replacement of n items (numpy default_rng(`seed`)).

    Args:
      n: the number of items (seeds).
      samples: the number of resamples.
      seed: the generator's seed.

    Returns:
      an integer array (samples, n).
    """
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(int(samples), n))


def bootstrap_interval(values_per_seed, statistic: Callable = seed_mean, samples: int = 1000,
                       confidence: float = 0.9, seed: int = 0) -> tuple[float, float, float]:
    """A percentile bootstrap over seeds.

    The interval is the central `confidence` range of the statistic over `samples` resamples of the seeds
    with replacement (deterministic from `seed`). With the default mean, one inf seed (a run that never
    reached the threshold) makes the estimate inf, and each resample that draws it is inf too, so `high` is
    inf whenever more than about (1 - confidence)/2 of resamples contain it; `low` stays finite while enough
    resamples avoid it.

    Args:
      values_per_seed: one value per seed; NaN entries (missing runs) are dropped first.
      statistic: reduces the last axis as `statistic(array, axis=-1)` (numpy reductions and `seed_mean`
        do); a statistic without `axis` is called once per resample.
      samples: the number of resamples.
      confidence: the coverage of the interval.
      seed: the seed of the resampling.

    Returns:
      (estimate, low, high): the statistic of the data and its interval; (NaN, NaN, NaN) when no seed has
      data; low == high == estimate for a single seed.
    """
    values = np.asarray(values_per_seed, dtype=float).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    index = resample_indices(values.size, samples, seed)
    try:
        estimate = float(statistic(values, axis=-1))
        resampled = np.asarray(statistic(values[index], axis=-1), dtype=float)
    except TypeError:  # a statistic without an axis argument: one call per resample
        estimate = float(statistic(values))
        resampled = np.array([statistic(values[row]) for row in index], dtype=float)
    low, high = percentile_interval(resampled, confidence)
    return estimate, low, high


def student_t_interval(values, confidence: float = 0.9, log: bool = False) -> tuple[float, float]:
    """A Student-t interval of the mean: mean -/+ t sd/sqrt(n), ddof=1.

    Args:
      values: at least 2 values, all finite.
      confidence: the coverage.
      log: take the interval on log(values) and exponentiate it (for positive quantities: steps, speedups,
        batch sizes), so it stays positive and is multiplicative, as seed noise in k is.

    Returns:
      (low, high); NaN bounds with fewer than 2 values, a non-finite one, or (with `log`) one that is not
      positive.
    """
    values = np.asarray(values, dtype=float).ravel()
    n = values.size
    if n < 2 or not np.all(np.isfinite(values)) or (log and np.any(values <= 0)):
        return float("nan"), float("nan")
    data = np.log(values) if log else values
    half = float(stdtrit(n - 1, 0.5 + confidence / 2.0)) * float(data.std(ddof=1)) / math.sqrt(n)
    mean = float(data.mean())
    if log:
        return math.exp(mean - half), math.exp(mean + half)
    return mean - half, mean + half


def one_distinct_value(values, rel_tol: float = 1e-9) -> bool:
    """Whether every value is the same, up to float rounding (a relative 1e-9): then there is no spread to
    make an interval of.

    Args:
      values: the values (infinities compare equal only to themselves).

    Returns:
      True for values that all agree (NaN-free input expected).
    """
    values = np.asarray(values, dtype=float).ravel()
    return bool(values.size and np.allclose(values, values[0], rtol=rel_tol, atol=0.0))


def interval_kind_for(n_seeds: int) -> str:
    """The kind of interval `seed_interval` gives.

    Args:
      n_seeds: seeds with data.

    Returns:
      ``percentile_bootstrap``, ``student_t`` or ``none``.
    """
    if n_seeds >= MIN_SEEDS_BOOTSTRAP:
        return "percentile_bootstrap"
    return "student_t" if n_seeds >= 2 else "none"


def seed_interval(values_per_seed, samples: int = 1000, confidence: float = 0.9, seed: int = 0) -> dict:
    """The seed mean with an interval that says what it is.

    From `MIN_SEEDS_BOOTSTRAP` seeds up a percentile bootstrap of the mean (`bootstrap_interval`); with 2 to
    4 seeds a Student-t interval on the log scale (`student_t_interval(log=True)`: the values are positive;
    NaN bounds when a seed is infinite: a t interval of a mean that is infinite says nothing); one seed gives
    no interval (NaN bounds, kind ``none``), never low = high = estimate; nor do seeds that all gave the same
    value (kind ``none: one distinct value``). Past `many_seeds.MAX_BOOTSTRAP_SEEDS` seeds the normal
    approximation of the mean replaces the bootstrap (``normal_approximation``).

    Args:
      values_per_seed: one value per seed; NaN entries (missing runs) are dropped first.
      samples: bootstrap resamples.
      confidence: the coverage.
      seed: the seed of the resampling.

    Returns:
      ``{"estimate", "low", "high", "interval_kind", "n"}``.
    """
    values = np.asarray(values_per_seed, dtype=float).ravel()
    values = values[~np.isnan(values)]
    n = int(values.size)
    kind = interval_kind_for(n)
    estimate = float(seed_mean(values)) if n else float("nan")
    low = high = float("nan")
    if n >= 2 and one_distinct_value(values):
        kind = ONE_VALUE
    elif many(n):
        kind = "normal_approximation"
        low, high = normal_mean_interval(values, confidence)
    elif kind == "percentile_bootstrap":
        estimate, low, high = bootstrap_interval(values, seed_mean, samples, confidence, seed)
    elif kind == "student_t":
        low, high = student_t_interval(values, confidence, log=True)
    return {"estimate": estimate, "low": low, "high": high, "interval_kind": kind, "n": n}
