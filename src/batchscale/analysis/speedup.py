"""Speedup, efficiency and the regimes of a k(m) curve.

- Speedup s(m; m0) = k(m0) / k(m); ideal speedup m / m0; efficiency e(m) = k(m0) m0 / (k(m) m), computed as
  one ratio. NaN (empty in the tables) whenever either k is inf, NaN or 0: never reached means no speedup
  was measured, not a speedup of 0.
- Regimes (`regimes`): base, linear, diminishing, stagnation, not_reached, trivial (k = 0: eps met at step
  0), missing, below_base. Cut-offs compare with a relative tolerance of 1e-9 (`at_least`).
- Regimes with their uncertainty (`interval_regimes`): ``linear`` only where the efficiency interval's lower
  bound clears the cut-off (``unresolved`` where only the point estimate does), ``superlinear`` where the
  efficiency is above 1 (flagged, not linear: seed noise or an eps that favours large batches), and
  ``no_base`` everywhere when k(m0) is not finite (no speedup, so no regime, is defined).
"""

from __future__ import annotations

import math

import numpy as np

from batchscale.analysis.many_seeds import many, normal_speedup_interval
from batchscale.analysis.intervals import (
    ONE_VALUE,
    interval_kind_for,
    one_distinct_value,
    percentile_interval,
    resample_indices,
    seed_mean,
    student_t_interval,
)

REGIME_LABELS = ("base", "linear", "diminishing", "stagnation", "not_reached", "trivial", "missing",
                 "below_base", "superlinear", "unresolved", "no_base")
CUTOFF_REL_TOL = 1e-9


def at_least(value: float, cutoff: float) -> bool:
    """value >= cutoff, counting a value within a relative 1e-9 of the cut-off as at it.

    An efficiency of exactly 0.8 computes as 0.7999999999999999 with some k.

    Args:
      value: the measured value.
      cutoff: the cut-off.

    Returns:
      whether the value reaches the cut-off.
    """
    value, cutoff = float(value), float(cutoff)
    return bool(value >= cutoff or math.isclose(value, cutoff, rel_tol=CUTOFF_REL_TOL, abs_tol=0.0))


def speedup(k, k_base):
    """The speedup s = k_base / k, elementwise.

    Args:
      k: iterations to threshold at m (steps).
      k_base: iterations to threshold at m0 (steps).

    Returns:
      s; NaN when either is inf, NaN or 0 (never reached, missing, or eps met at step 0: no speedup was
      measured, which is not a speedup of 0).
    """
    k = np.asarray(k, dtype=float)
    k_base = np.asarray(k_base, dtype=float)
    ok = np.isfinite(k) & np.isfinite(k_base) & (k > 0) & (k_base > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, k_base / np.where(ok, k, 1.0), np.nan)
    return out[()] if out.ndim == 0 else out


def ideal_speedup(m, m0):
    """The ideal (linear) speedup m / m0.

    Args:
      m: batch size(s).
      m0: the base batch size.

    Returns:
      m / m0.
    """
    out = np.asarray(m, dtype=float) / np.asarray(m0, dtype=float)
    return out[()] if out.ndim == 0 else out


def efficiency(k, k_base, m, m0):
    """The scaling efficiency e = (k_base m0) / (k m), one division (no ratio of ratios).

    Args:
      k: iterations to threshold at m.
      k_base: iterations to threshold at m0.
      m: batch size(s).
      m0: the base batch size.

    Returns:
      e (1 for linear scaling); NaN where the speedup is undefined (see `speedup`).
    """
    k = np.asarray(k, dtype=float)
    k_base = np.asarray(k_base, dtype=float)
    ok = np.isfinite(k) & np.isfinite(k_base) & (k > 0) & (k_base > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, (k_base * np.asarray(m0, dtype=float)) / np.where(ok, k * np.asarray(m, dtype=float), 1.0),
                       np.nan)
    return out[()] if out.ndim == 0 else out


def speedup_interval(k_per_seed, k_base_per_seed, samples: int = 1000, confidence: float = 0.9,
                     seed: int = 0) -> dict:
    """The speedup of seed means with an interval of the kind the seeds of both runs allow.

    Percentile bootstrap (paired, `bootstrap_speedup`) from 5 seeds; with 2-4 seeds a Student-t interval of
    the mean of the per-seed log speedups log(k_base[s] / k[s]), exponentiated (ratios are multiplicative);
    NaN bounds when a seed never reached eps; one seed, or every seed the same speedup: no interval (kind
    ``none: one distinct value`` for the latter); past `many_seeds.MAX_BOOTSTRAP_SEEDS` seeds the delta
    method (``normal_approximation``).

    Args:
      k_per_seed: k at m, one per seed (NaN: missing).
      k_base_per_seed: k at m0, for the same seeds.
      samples: bootstrap resamples.
      confidence: the coverage.
      seed: the seed of the resampling.

    Returns:
      ``{"estimate", "low", "high", "interval_kind"}``.
    """
    k = np.asarray(k_per_seed, dtype=float).ravel()
    kb = np.asarray(k_base_per_seed, dtype=float).ravel()
    estimate = float(speedup(seed_mean(k), seed_mean(kb))) if k.size else float("nan")
    both = ~np.isnan(k) & ~np.isnan(kb)
    kind = interval_kind_for(int(both.sum()))
    low = high = float("nan")
    ratios = np.asarray(speedup(k[both], kb[both]), dtype=float).ravel()
    if both.sum() >= 2 and not np.array_equal(k[both], kb[both]) and one_distinct_value(ratios):
        kind = ONE_VALUE  # every seed gave the same speedup: no spread (m0 itself keeps its exact [1, 1])
    elif many(int(both.sum())):
        kind = "normal_approximation"
        low, high = normal_speedup_interval(k[both], kb[both], confidence)
    elif kind == "percentile_bootstrap":
        _e, low, high = bootstrap_speedup(k[both], kb[both], samples, confidence, seed)
    elif kind == "student_t":
        ratios = np.asarray(speedup(k[both], kb[both]), dtype=float)
        low, high = student_t_interval(ratios, confidence, log=True)
    return {"estimate": estimate, "low": low, "high": high, "interval_kind": kind}


def bootstrap_speedup(k_per_seed, k_base_per_seed, samples: int = 1000, confidence: float = 0.9,
                      seed: int = 0) -> tuple[float, float, float]:
    """The speedup of seed means, with a paired bootstrap over seeds.

    Both arrays are indexed by the same seeds (same seed value = same initialisation in batchscale), so one
    resample of seed indices is applied to both; at the base batch size the interval is exactly [1, 1].
    Seed means follow `seed_mean` (NaN ignored, inf propagates), ratios follow `speedup`.

    Args:
      k_per_seed: k at m, one per seed.
      k_base_per_seed: k at m0, for the same seeds.
      samples: bootstrap resamples.
      confidence: the coverage.
      seed: the seed of the resampling.

    Returns:
      (estimate, low, high); NaN bounds when either has no data.

    Raises:
      ValueError: when the two have different numbers of seeds.
    """
    k = np.asarray(k_per_seed, dtype=float).ravel()
    kb = np.asarray(k_base_per_seed, dtype=float).ravel()
    if k.size != kb.size:
        raise ValueError(f"k and k_base need the same seeds ({k.size} vs {kb.size})")
    estimate = float(speedup(seed_mean(k), seed_mean(kb)))
    if k.size == 0 or np.all(np.isnan(k)) or np.all(np.isnan(kb)):
        return estimate, float("nan"), float("nan")
    index = resample_indices(k.size, samples, seed)
    resampled = np.asarray(speedup(seed_mean(k[index]), seed_mean(kb[index])), dtype=float)
    low, high = percentile_interval(resampled, confidence)
    return estimate, low, high


def regimes(batch_sizes, k, base_batch, linear_efficiency: float = 0.8,
            stagnation_gain: float = 0.1) -> list[str]:
    """The regime of each batch size: base, linear, diminishing, stagnation, not_reached, missing, ...

    Batch sizes are visited in increasing order:

    - ``base``: m0 itself (its efficiency is 1 by definition, so it says nothing about the linear regime).
      ``below_base``: a batch size smaller than m0 (the regimes describe growing the batch from m0).
    - ``not_reached``: k is inf; it ends the linear regime. ``missing``: k is NaN (no data).
      ``trivial``: k is 0 (the threshold is met at step 0, so it says nothing about speed). Missing and
      trivial sizes are skipped by the rules below.
    - ``linear``: the prefix of sizes above m0 whose efficiency e(m) = k(m0) m0 / (k(m) m) is at least
      `linear_efficiency` (`at_least`: an efficiency equal to the cut-off up to float rounding counts);
      the first size below the cut-off ends it for good (the regimes are successive phases). No size is
      linear when k(base_batch) is not finite and positive.
    - ``stagnation``: the sizes after the linear prefix from which on doubling the batch never again cuts
      k by `stagnation_gain` or more. With m_p the previous reached size, the per-doubling ratio is
      r = (k(m)/k(m_p)) ** (1 / log2(m/m_p)) (so skipped sizes in the grid are accounted for); a size is
      stagnation when its cut 1 - r, and that of every larger reached size, is below the gain (a cut of
      exactly the gain is not stagnation). (A suffix rule: one noisy flat step followed by real gains is
      not stagnation.)
    - ``diminishing``: every other reached size (after the linear prefix, before stagnation).

    Args:
      batch_sizes: the batch sizes m.
      k: k(m) (steps; inf: not reached; NaN: missing), one per batch size.
      base_batch: m0, one of `batch_sizes`.
      linear_efficiency: the efficiency cut-off of the linear regime.
      stagnation_gain: the per-doubling cut of k below which the curve stagnates.

    Returns:
      one label per batch size, in the input order.

    Raises:
      ValueError: when k and the batch sizes differ in length, or m0 is not among the batch sizes.
    """
    m = np.asarray(batch_sizes, dtype=float).ravel()
    k = np.asarray(k, dtype=float).ravel()
    if m.size != k.size:
        raise ValueError(f"batch_sizes and k differ in length ({m.size} vs {k.size})")
    k_base = k[base_index(m, base_batch)]
    eff = np.asarray(efficiency(k, k_base, m, float(base_batch)), dtype=float)
    labels: list[str] = [""] * m.size
    in_linear = bool(np.isfinite(k_base) and k_base > 0)
    previous = None
    flat: list[tuple[int, bool]] = []  # (index, doubling gained less than the cut-off) after the linear prefix
    for i in np.argsort(m, kind="stable"):
        if np.isnan(k[i]):
            labels[i] = "missing"
            continue
        if k[i] <= 0:
            labels[i] = "trivial"
            continue
        if np.isinf(k[i]):
            labels[i] = "not_reached"
            in_linear = False
            continue
        if m[i] == float(base_batch):
            labels[i] = "base"
            previous = i
            continue
        if m[i] < float(base_batch):
            labels[i] = "below_base"
            continue
        if in_linear and np.isfinite(eff[i]) and at_least(eff[i], linear_efficiency):
            labels[i] = "linear"
            previous = i
            continue
        in_linear = False
        small_gain = False
        if previous is not None and m[i] > m[previous]:
            ratio = (k[i] / k[previous]) ** (1.0 / math.log2(m[i] / m[previous]))
            small_gain = not at_least(1.0 - ratio, stagnation_gain)
        labels[i] = "diminishing"
        flat.append((i, small_gain))
        previous = i
    return mark_stagnation(labels, flat)


def interval_regimes(labels, batch_sizes, efficiency_estimate, efficiency_low, k_base,
                     linear_efficiency: float = 0.8, interval_known=None) -> list[str]:
    """`regimes`' labels checked against the efficiency interval.

    A point estimate of the efficiency above the cut-off says little when its interval reaches far below
    it (one lucky seed), and an efficiency above 1 is not linear scaling but faster than it.

    Args:
      labels: `regimes`' labels, one per batch size.
      batch_sizes: the batch sizes m (the linear prefix is walked in increasing m).
      efficiency_estimate: e(m) per batch size.
      efficiency_low: the lower bound of e(m)'s interval (speedup_low m0/m); NaN where none was computed.
      k_base: k(m0) (the seed mean).
      linear_efficiency: the cut-off.
      interval_known: per batch size, whether an interval exists (False: one seed, no interval; the point
        estimate then decides, as without intervals); None: wherever efficiency_low is finite.

    Returns:
      the labels with: every label but ``missing`` and ``trivial`` replaced by ``no_base`` when k_base is
      not finite (k_base = 0 is `regimes`' case: nothing is linear); a ``linear`` size whose interval's
      lower bound is above 1 (beyond 1e-9; the estimate where no interval exists) as ``superlinear``; a ``linear`` size whose
      interval's lower bound is below the cut-off (or NaN while an interval exists) as ``unresolved``, and
      every ``linear`` size after it too (the linear regime is a prefix).
    """
    labels = list(labels)
    if not np.isfinite(k_base):
        return [label if label in ("missing", "trivial") else "no_base" for label in labels]
    m = np.asarray(batch_sizes, dtype=float).ravel()
    est = np.asarray(efficiency_estimate, dtype=float).ravel()
    low = np.asarray(efficiency_low, dtype=float).ravel()
    known = np.isfinite(low) if interval_known is None else np.asarray(interval_known, dtype=bool).ravel()
    broken = False
    for i in np.argsort(m, kind="stable"):
        if labels[i] != "linear":
            continue
        if broken or (known[i] and not (np.isfinite(low[i]) and at_least(low[i], linear_efficiency))):
            labels[i], broken = "unresolved", True
        elif (low[i] if known[i] else est[i]) > 1.0 and not at_least(1.0, low[i] if known[i] else est[i]):
            labels[i] = "superlinear"  # the whole interval above 1: an estimate of 1.005 is linear scaling
    return labels


def base_index(batch_sizes: np.ndarray, base_batch) -> int:
    """The index of m0 among the batch sizes.

    Args:
      batch_sizes: the batch sizes (floats).
      base_batch: m0.

    Returns:
      the first index of m0.

    Raises:
      ValueError: when m0 is not among them.
    """
    where_base = np.flatnonzero(batch_sizes == float(base_batch))
    if where_base.size == 0:
        raise ValueError(f"base batch {base_batch} is not one of the batch sizes "
                         f"{batch_sizes.astype(np.int64).tolist()}")
    return int(where_base[0])


def mark_stagnation(labels: list[str], flat: list[tuple[int, bool]]) -> list[str]:
    """Relabels the longest suffix of sizes whose doubling gained less than the cut-off as stagnation.

    Args:
      labels: the labels so far (those sizes labelled diminishing).
      flat: (index, whether doubling gained less than the cut-off) of the sizes after the linear prefix,
        in increasing batch size.

    Returns:
      `labels`, updated in place.
    """
    for i, small_gain in reversed(flat):
        if not small_gain:
            break
        labels[i] = "stagnation"
    return labels


def regime_boundaries(batch_sizes, labels) -> dict:
    """Where the regimes end.

    Args:
      batch_sizes: the batch sizes.
      labels: their regimes (`regimes`).

    Returns:
      ``largest_linear`` (the largest batch size labelled linear: None when only m0 qualifies) and
      ``first_stagnation`` (the smallest labelled stagnation); None when the regime does not occur in the
      measured range.
    """
    m = [int(b) for b in batch_sizes]
    linear = [b for b, lab in zip(m, labels) if lab == "linear"]
    stagnation = [b for b, lab in zip(m, labels) if lab == "stagnation"]
    return {"largest_linear": max(linear) if linear else None,
            "first_stagnation": min(stagnation) if stagnation else None}

