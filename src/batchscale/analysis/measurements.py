"""Measurements of batch-size scaling: small pure functions, one measurement each.

Every function takes numpy arrays (or an xarray DataArray where noted) and returns numbers or arrays, so
each can be checked against values computed by hand. The definitions follow the design page
(Definitions) and Golmant et al. (2018), sections 3 and 4:

- k(m; eps), iterations to threshold: the first step at which the traced value is <= eps, interpolated
  linearly in log(step) between the two bracketing evaluation points (linearly in step when the bracket
  starts at step 0); ``inf`` when never reached; ``NaN`` when there is no data (a missing run).
- Threshold eps: ``"lower_quartile_of_largest"`` (the paper's rule), ``{"quantile_of_largest": q}`` or
  ``{"fixed": value}``. A quantile rule is applied to each seed of the source batch size separately (the
  q-quantile of that seed's curve) and eps is the largest of those per-seed quantiles
  (`threshold_from_seeds`), so every seed of the source batch reaches eps. (Pooling the seeds' curves and
  taking one quantile can land below one seed's minimum: that seed, and with it its batch size, would then
  never reach the threshold derived from it.)
- Speedup s(m; m0) = k(m0) / k(m); ideal speedup m / m0; efficiency e(m) = k(m0) m0 / (k(m) m), computed
  as one ratio; cut-offs compare with a relative tolerance of 1e-9 (`at_least`).
- Regimes (see `regimes`): base, linear, diminishing, stagnation, not_reached.
- Intervals (`seed_interval`): a percentile bootstrap over seeds from `MIN_SEEDS_BOOTSTRAP` (5) seeds up,
  a Student-t interval below that, none for one seed; each interval carries its kind.
- Critical batch size: fit of k(m) = S_min (1 + B_crit / m) (McCandlish et al. 2018) in log space, censored
  batch sizes (never reached eps) as censored, with its log-RMSE, and reported as a bound when B_crit lies
  outside the measured range (`critical_batch_bound`); the overhead-based critical batch of Zhang et al.
  (2024) directly from k(m) (`overhead_batch_direct`) and from the fit (`overhead_batch_from_fit`).

Conventions for infinities (a run that never reaches the threshold has k = inf):
- The mean over seeds is inf as soon as one seed is inf: the batch size did not reliably reach the
  threshold. NaN entries (missing runs) are ignored by the seed mean.
- speedup(k, k_base): NaN (empty in the tables) whenever either k is inf or NaN: never reached means no
  speedup was measured, not a speedup of 0. k = 0 (eps met at step 0) gives the regime ``trivial``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping

import numpy as np

LOWER_QUARTILE = "lower_quartile_of_largest"
REGIME_LABELS = ("base", "linear", "diminishing", "stagnation", "not_reached", "trivial", "missing",
                 "below_base")
MIN_SEEDS_BOOTSTRAP = 5
INTERVAL_KINDS = ("percentile_bootstrap", "student_t", "residual_bootstrap", "none")
CUTOFF_REL_TOL = 1e-9


def at_least(value: float, cutoff: float) -> bool:
    """value >= cutoff, counting a value within a relative 1e-9 of the cut-off as at it (an efficiency of
    exactly 0.8 computes as 0.7999999999999999 with some k)."""
    value, cutoff = float(value), float(cutoff)
    return bool(value >= cutoff or math.isclose(value, cutoff, rel_tol=CUTOFF_REL_TOL, abs_tol=0.0))


# --------------------------------------------------------------------------------------------
# Thresholds


def parse_threshold_rule(rule) -> dict:
    """Normalise a threshold rule to ``{"kind": ..., "value": ...}``.

    Accepts the config forms (``"lower_quartile_of_largest"``, ``{"quantile_of_largest": q}``,
    ``{"fixed": v}``) and the command-line forms ``"quantile_of_largest:q"`` and ``"fixed:v"``.
    Raises ValueError with a one-line message otherwise.
    """
    if isinstance(rule, str):
        text = rule.strip()
        if text == LOWER_QUARTILE:
            return {"kind": "quantile_of_largest", "value": 0.25}
        if ":" in text:
            name, _, value = text.partition(":")
            try:
                return parse_threshold_rule({name.strip(): float(value)})
            except (TypeError, ValueError):
                pass
        raise ValueError(
            f"threshold rule {rule!r} is not allowed; use lower_quartile_of_largest, "
            "quantile_of_largest:q (0 < q < 1) or fixed:value (value > 0)")
    if isinstance(rule, Mapping) and len(rule) == 1:
        (name, value), = rule.items()
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if name == "quantile_of_largest" and 0.0 < value < 1.0:
            return {"kind": "quantile_of_largest", "value": value}
        if name == "fixed" and math.isfinite(value) and value > 0:
            return {"kind": "fixed", "value": value}
    raise ValueError(
        f"threshold rule {rule!r} is not allowed; use lower_quartile_of_largest, "
        "{quantile_of_largest: q} with 0 < q < 1, or {fixed: value} with value > 0")


def describe_threshold_rule(rule) -> str:
    """A short, stable text for a rule: ``lower_quartile_of_largest``, ``quantile_of_largest:0.1``, ``fixed:0.5``."""
    if isinstance(rule, str) and rule.strip() == LOWER_QUARTILE:
        return LOWER_QUARTILE
    parsed = parse_threshold_rule(rule)
    return f"{parsed['kind']}:{parsed['value']:g}"


def threshold_from_rule(largest_batch_values: np.ndarray, rule) -> float:
    """The threshold eps given by `rule`.

    `largest_batch_values` are all values traced for the largest batch size (any shape: every seed and
    evaluation point; NaN and inf are dropped). Quantile rules use numpy's default (linear) quantile of the
    finite values; NaN when there is none. ``{"fixed": v}`` returns v and ignores the values.
    """
    parsed = parse_threshold_rule(rule)
    if parsed["kind"] == "fixed":
        return float(parsed["value"])
    values = np.asarray(largest_batch_values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(np.quantile(values, parsed["value"]))


def threshold_from_seeds(curves_per_seed, rule) -> float:
    """eps from the source batch's curves, one array per seed: the largest of the per-seed quantiles.

    Each seed's q-quantile lies at or above that seed's minimum, so every seed reaches the largest of them
    (this is the rule's guarantee; a pooled quantile does not give it). Seeds without finite values are
    skipped; NaN when none has any. ``{"fixed": v}`` returns v.
    """
    parsed = parse_threshold_rule(rule)
    if parsed["kind"] == "fixed":
        return float(parsed["value"])
    per_seed = [threshold_from_rule(curve, rule) for curve in curves_per_seed]
    per_seed = [v for v in per_seed if np.isfinite(v)]
    return float(max(per_seed)) if per_seed else float("nan")


def resample_uniform_in_steps(steps, values, points: int = 1000) -> np.ndarray:
    """A traced curve as values at `points` equally spaced steps from its first to its last finite point.

    Traces are evaluated on a log-spaced grid, which puts most points early in training; the paper's
    quantile of "loss values traced" weights every stretch of training alike, so quantiles are taken
    over the curve interpolated (linearly in step) onto a uniform grid.
    """
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = np.isfinite(steps) & np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if steps.size == 0:
        return np.array([])
    if steps.size == 1 or steps[-1] == steps[0]:
        return values[-1:]
    order = np.argsort(steps)
    grid = np.linspace(steps[order][0], steps[order][-1], points)
    return np.interp(grid, steps[order], values[order])


# --------------------------------------------------------------------------------------------
# Iterations to threshold


def iterations_to_threshold(steps, values, threshold: float) -> float:
    """k: the first step at which `values` <= `threshold`, interpolated in log(step).

    Non-finite points (NaN: not evaluated; inf) are ignored; points are taken in step order. With
    (s_a, v_a) the last point above the threshold and (s_b, v_b) the first point at or below it, and
    t = (v_a - eps) / (v_a - v_b):

        k = exp(log s_a + t (log s_b - log s_a))   when s_a > 0,
        k = s_a + t (s_b - s_a)                    when s_a == 0 (log 0 is undefined).

    Returns s_b itself when v_b == eps, the first point's step when the first finite point is already at
    or below the threshold (0 when it is step 0: there is no earlier point to interpolate from), inf when
    the threshold is never reached, and NaN when there is no finite point or the threshold is NaN.
    """
    steps = np.asarray(steps, dtype=float).ravel()
    values = np.asarray(values, dtype=float).ravel()
    if steps.shape != values.shape:
        raise ValueError(f"steps and values differ in length ({steps.size} vs {values.size})")
    if not np.isfinite(threshold) and not np.isposinf(threshold):
        return float("nan")
    keep = np.isfinite(values) & np.isfinite(steps)
    steps, values = steps[keep], values[keep]
    if steps.size == 0:
        return float("nan")
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    hits = np.flatnonzero(values <= threshold)
    if hits.size == 0:
        return float("inf")
    b = int(hits[0])
    if b == 0:
        return float(steps[0])
    s_a, s_b, v_a, v_b = steps[b - 1], steps[b], values[b - 1], values[b]
    if v_b == threshold:
        return float(s_b)
    t = (v_a - threshold) / (v_a - v_b)
    if s_a <= 0:
        return float(s_a + t * (s_b - s_a))
    return float(math.exp(math.log(s_a) + t * (math.log(s_b) - math.log(s_a))))


def k_for_run(steps, values, threshold: float, status: str = "completed") -> float:
    """k for one run, applying the divergence rule.

    A run whose status is ``diverged`` counts as never reaching a threshold below its last finite value
    (k = inf), even if its trace dipped below the threshold earlier; at or above that value k is taken from
    the trace as usual. ``missing`` runs give NaN.
    """
    if status == "missing":
        return float("nan")
    if status == "diverged":
        finite = np.asarray(values, dtype=float)
        finite_steps = np.asarray(steps, dtype=float)
        mask = np.isfinite(finite)
        if not mask.any():
            return float("inf")
        last = finite[mask][np.argmax(finite_steps[mask])]
        if threshold < last:
            return float("inf")
    return iterations_to_threshold(steps, values, threshold)


def k_per_run(values, threshold, status=None, step_dim: str = "step"):
    """k for every run of a cube variable.

    `values` is an xarray DataArray with a step dimension (typically (strategy, batch_size, seed, step));
    `threshold` a float or a DataArray broadcastable against the other dimensions (e.g. over strategy);
    `status` an optional DataArray of run statuses (``completed`` | ``diverged`` | ``missing``). Returns a
    float DataArray over the remaining dimensions, named ``k`` (unit: steps).
    """
    import xarray as xr

    steps = np.asarray(values[step_dim].values, dtype=float)
    thr = threshold if isinstance(threshold, xr.DataArray) else xr.DataArray(float(threshold))
    stat = status if status is not None else xr.DataArray("completed")
    values_b, thr_b, stat_b = xr.broadcast(values, thr, stat, exclude=[step_dim])
    dims = [d for d in values_b.dims if d != step_dim]
    data = values_b.transpose(*dims, step_dim).values
    thr_v = thr_b.transpose(*dims).values if dims else thr_b.values
    stat_v = stat_b.transpose(*dims).values if dims else stat_b.values
    out = np.empty(data.shape[:-1], dtype=float)
    for index in np.ndindex(out.shape):
        out[index] = k_for_run(steps, data[index], float(thr_v[index]), str(stat_v[index]))
    coords = {d: values_b[d] for d in dims if d in values_b.coords}
    return xr.DataArray(out, dims=dims, coords=coords, name="k", attrs={"units": "steps"})


# --------------------------------------------------------------------------------------------
# Seed statistics and bootstrap


def seed_mean(values, axis: int = -1):
    """Mean over seeds: NaN entries (missing runs) are ignored, any inf makes the mean inf; all-NaN -> NaN."""
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _quantile(samples: np.ndarray, q: float) -> float:
    """Percentile of bootstrap samples; with infinities, take order statistics (no inf - inf = NaN)."""
    if samples.size == 0:
        return float("nan")
    if np.all(np.isfinite(samples)):
        return float(np.quantile(samples, q))
    return float(np.quantile(samples, q, method="lower" if q < 0.5 else "higher"))


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    alpha = (1.0 - confidence) / 2.0
    return _quantile(samples, alpha), _quantile(samples, 1.0 - alpha)


def _resample_indices(n: int, samples: int, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(int(samples), n))


def bootstrap_interval(values_per_seed, statistic: Callable = seed_mean, samples: int = 1000,
                       confidence: float = 0.9, seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap over seeds: (estimate, low, high).

    `values_per_seed` is 1-D (one value per seed; NaN entries, i.e. missing runs, are dropped first).
    `statistic(array, axis=-1)` reduces the last axis (numpy reductions and `seed_mean` do; a statistic
    without `axis` is called once per resample). The estimate is the statistic of the data, the interval
    the central `confidence` range of the statistic over `samples` resamples of the seeds with
    replacement (numpy default_rng(`seed`), so deterministic).

    Infinities: with the default mean, one inf seed (a run that never reached the threshold) makes the
    estimate inf, and each resample that draws it is inf too, so `high` is inf whenever more than about
    (1 - confidence)/2 of resamples contain it; `low` stays finite while enough resamples avoid it. Returns
    (NaN, NaN, NaN) when no seed has data. A single seed gives low == high == estimate.
    """
    values = np.asarray(values_per_seed, dtype=float).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    index = _resample_indices(values.size, samples, seed)
    try:
        estimate = float(statistic(values, axis=-1))
        stats = np.asarray(statistic(values[index], axis=-1), dtype=float)
    except TypeError:  # a statistic without an axis argument: one call per resample
        estimate = float(statistic(values))
        stats = np.array([statistic(values[row]) for row in index], dtype=float)
    low, high = _interval(stats, confidence)
    return estimate, low, high


def student_t_interval(values, confidence: float = 0.9, log: bool = False) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (all finite, at least 2): mean -/+ t sd/sqrt(n), ddof=1.

    With `log` (for positive quantities: steps, speedups, batch sizes) the interval is taken on log(values)
    and exponentiated, so it stays positive and is multiplicative, as seed noise in k is; NaN bounds when a
    value is not positive.
    """
    from scipy import stats

    values = np.asarray(values, dtype=float).ravel()
    n = values.size
    if n < 2 or not np.all(np.isfinite(values)) or (log and np.any(values <= 0)):
        return float("nan"), float("nan")
    data = np.log(values) if log else values
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * float(data.std(ddof=1)) / math.sqrt(n)
    mean = float(data.mean())
    if log:
        return math.exp(mean - half), math.exp(mean + half)
    return mean - half, mean + half


def interval_kind_for(n_seeds: int) -> str:
    """The kind of interval `seed_interval` gives for `n_seeds` seeds with data."""
    if n_seeds >= MIN_SEEDS_BOOTSTRAP:
        return "percentile_bootstrap"
    return "student_t" if n_seeds >= 2 else "none"


def seed_interval(values_per_seed, samples: int = 1000, confidence: float = 0.9, seed: int = 0) -> dict:
    """The seed mean of `values_per_seed` with an interval that says what it is.

    Returns ``{"estimate", "low", "high", "interval_kind", "n"}``: from `MIN_SEEDS_BOOTSTRAP` seeds up a
    percentile bootstrap of the mean (`bootstrap_interval`); with 2 to 4 seeds a Student-t interval on the
    log scale (`student_t_interval(log=True)`: the values are positive; NaN bounds when a seed is infinite:
    a t interval of a mean that is infinite says nothing); one seed gives no interval (NaN bounds, kind ``none``), never low = high = estimate.
    NaN entries (missing runs) are dropped first.
    """
    values = np.asarray(values_per_seed, dtype=float).ravel()
    values = values[~np.isnan(values)]
    n = int(values.size)
    kind = interval_kind_for(n)
    estimate = float(seed_mean(values)) if n else float("nan")
    low = high = float("nan")
    if kind == "percentile_bootstrap":
        estimate, low, high = bootstrap_interval(values, seed_mean, samples, confidence, seed)
    elif kind == "student_t":
        low, high = student_t_interval(values, confidence, log=True)
    return {"estimate": estimate, "low": low, "high": high, "interval_kind": kind, "n": n}


# --------------------------------------------------------------------------------------------
# Speedup and efficiency


def speedup(k, k_base):
    """s = k_base / k (elementwise); NaN when either is inf, NaN or 0 (never reached, missing, or eps met at
    step 0: no speedup was measured, which is not a speedup of 0)."""
    k = np.asarray(k, dtype=float)
    k_base = np.asarray(k_base, dtype=float)
    ok = np.isfinite(k) & np.isfinite(k_base) & (k > 0) & (k_base > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, k_base / np.where(ok, k, 1.0), np.nan)
    return out[()] if out.ndim == 0 else out


def ideal_speedup(m, m0):
    """The ideal (linear) speedup m / m0."""
    out = np.asarray(m, dtype=float) / np.asarray(m0, dtype=float)
    return out[()] if out.ndim == 0 else out


def efficiency(k, k_base, m, m0):
    """e = (k_base m0) / (k m), one division (no ratio of ratios): 1 for linear scaling; NaN where the
    speedup is undefined (see `speedup`)."""
    k = np.asarray(k, dtype=float)
    k_base = np.asarray(k_base, dtype=float)
    ok = np.isfinite(k) & np.isfinite(k_base) & (k > 0) & (k_base > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, (k_base * np.asarray(m0, dtype=float)) / np.where(ok, k * np.asarray(m, dtype=float), 1.0),
                       np.nan)
    return out[()] if out.ndim == 0 else out


def speedup_interval(k_per_seed, k_base_per_seed, samples: int = 1000, confidence: float = 0.9,
                     seed: int = 0) -> dict:
    """The speedup of seed means with an interval of the kind `interval_kind_for` gives for the seeds both
    runs have: ``{"estimate", "low", "high", "interval_kind"}``.

    Percentile bootstrap (paired, `bootstrap_speedup`) from 5 seeds; with 2-4 seeds a Student-t interval of
    the mean of the per-seed log speedups log(k_base[s] / k[s]), exponentiated (ratios are multiplicative);
    NaN bounds when a seed never reached eps; one seed: no interval.
    """
    k = np.asarray(k_per_seed, dtype=float).ravel()
    kb = np.asarray(k_base_per_seed, dtype=float).ravel()
    estimate = float(speedup(seed_mean(k), seed_mean(kb))) if k.size else float("nan")
    both = ~np.isnan(k) & ~np.isnan(kb)
    kind = interval_kind_for(int(both.sum()))
    low = high = float("nan")
    if kind == "percentile_bootstrap":
        _e, low, high = bootstrap_speedup(k[both], kb[both], samples, confidence, seed)
    elif kind == "student_t":
        ratios = np.asarray(speedup(k[both], kb[both]), dtype=float)
        low, high = student_t_interval(ratios, confidence, log=True)
    return {"estimate": estimate, "low": low, "high": high, "interval_kind": kind}


def bootstrap_speedup(k_per_seed, k_base_per_seed, samples: int = 1000, confidence: float = 0.9,
                      seed: int = 0) -> tuple[float, float, float]:
    """Speedup of seed means, with a paired bootstrap over seeds: (estimate, low, high).

    Both arrays are indexed by the same seeds (same seed value = same initialisation in batchscale), so one
    resample of seed indices is applied to both; at the base batch size the interval is exactly [1, 1].
    Seed means follow `seed_mean` (NaN ignored, inf propagates), ratios follow `speedup`.
    """
    k = np.asarray(k_per_seed, dtype=float).ravel()
    kb = np.asarray(k_base_per_seed, dtype=float).ravel()
    if k.size != kb.size:
        raise ValueError(f"k and k_base need the same seeds ({k.size} vs {kb.size})")
    estimate = float(speedup(seed_mean(k), seed_mean(kb)))
    if k.size == 0 or np.all(np.isnan(k)) or np.all(np.isnan(kb)):
        return estimate, float("nan"), float("nan")
    index = _resample_indices(k.size, samples, seed)
    stats = np.asarray(speedup(seed_mean(k[index]), seed_mean(kb[index])), dtype=float)
    low, high = _interval(stats, confidence)
    return estimate, low, high


# --------------------------------------------------------------------------------------------
# Regimes


def regimes(batch_sizes, k, base_batch, linear_efficiency: float = 0.8,
            stagnation_gain: float = 0.1) -> list[str]:
    """Label each batch size base / linear / diminishing / stagnation / not_reached (missing for NaN k).

    Batch sizes are visited in increasing order (labels come back in the input order):

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

    `base_batch` must be one of `batch_sizes`.
    """
    m = np.asarray(batch_sizes, dtype=float).ravel()
    k = np.asarray(k, dtype=float).ravel()
    if m.size != k.size:
        raise ValueError(f"batch_sizes and k differ in length ({m.size} vs {k.size})")
    where_base = np.flatnonzero(m == float(base_batch))
    if where_base.size == 0:
        raise ValueError(f"base batch {base_batch} is not one of the batch sizes {m.astype(np.int64).tolist()}")
    k_base = k[where_base[0]]
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
    for i, small_gain in reversed(flat):  # stagnation is the longest all-flat suffix
        if not small_gain:
            break
        labels[i] = "stagnation"
    return labels


def regime_boundaries(batch_sizes, labels) -> dict:
    """``largest_linear`` (largest batch size labelled linear: None when only m0 qualifies) and
    ``first_stagnation`` (smallest labelled stagnation); None when the regime does not occur in the
    measured range."""
    m = [int(b) for b in batch_sizes]
    linear = [b for b, lab in zip(m, labels) if lab == "linear"]
    stagnation = [b for b, lab in zip(m, labels) if lab == "stagnation"]
    return {"largest_linear": max(linear) if linear else None,
            "first_stagnation": min(stagnation) if stagnation else None}


# --------------------------------------------------------------------------------------------
# Critical batch size

_NAN = float("nan")


def _nnls_start(m: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    """Relative-error NNLS of k = S + E/m: a starting point for the log-space fit."""
    from scipy.optimize import nnls

    design = np.column_stack([np.ones(m.size), 1.0 / m])
    coef, _ = nnls(design / k[:, None], np.ones(m.size))
    return float(coef[0]), float(coef[1])


def fit_critical_batch(batch_sizes, k, censored_at=None) -> dict:
    """Fit k(m) = S_min (1 + B_crit / m) = S_min + E_min / m (McCandlish et al. 2018) in log space.

    Minimises the sum of squared log residuals log k - log k_fit over the batch sizes with finite k > 0,
    plus, for each censored batch size (k = inf with a finite lower bound ``censored_at``: the threshold
    was not reached within that many steps), the squared shortfall max(0, log bound - log k_fit): a
    censored point only pulls when the fit predicts fewer steps than were run without reaching eps.
    S_min, E_min >= 0 (bounded least squares from a relative-error NNLS start). k varies over decades and
    seed noise is multiplicative, hence log space.

    Returns S_min (steps), B_crit = E_min / S_min (examples per step), E_min (examples), log_rmse (root
    mean square of all those residuals; 0.1 is a typical miss of about 10%), n_points (finite k),
    n_censored (censored sizes used). Fewer than 3 finite points: NaN. S_min fitted as 0 (k still falls as
    1/m everywhere): B_crit inf; E_min as 0 (flat k): B_crit 0.
    """
    from scipy.optimize import least_squares

    m = np.asarray(batch_sizes, dtype=float).ravel()
    k = np.asarray(k, dtype=float).ravel()
    bound = (np.full(m.shape, np.nan) if censored_at is None
             else np.asarray(censored_at, dtype=float).ravel())
    exact = np.isfinite(k) & (k > 0) & np.isfinite(m) & (m > 0)
    censored = np.isposinf(k) & np.isfinite(bound) & (bound > 0) & np.isfinite(m) & (m > 0)
    n, n_cens = int(exact.sum()), int(censored.sum())
    result = {"S_min": _NAN, "B_crit": _NAN, "E_min": _NAN, "log_rmse": _NAN, "n_points": n,
              "n_censored": n_cens}
    if n < 3:
        return result
    m_e, log_k = m[exact], np.log(k[exact])
    m_c, log_c = m[censored], np.log(bound[censored])
    s0, e0 = _nnls_start(m_e, k[exact])
    scale = float(np.exp(log_k).min())
    x0 = np.array([max(s0, 1e-3 * scale), max(e0, 1e-3 * scale * m_e.min())])

    def residuals(p):
        fit_e = np.log(np.maximum(p[0] + p[1] / m_e, 1e-300))
        fit_c = np.log(np.maximum(p[0] + p[1] / m_c, 1e-300))
        return np.concatenate([log_k - fit_e, np.maximum(0.0, log_c - fit_c)])

    def jacobian(p):
        # d/dS and d/dE of -log(S + E/m); a censored residual is flat where it is 0
        q_e = np.maximum(p[0] + p[1] / m_e, 1e-300)
        q_c = np.maximum(p[0] + p[1] / m_c, 1e-300)
        pulls = (log_c - np.log(q_c)) > 0.0
        rows_e = -np.column_stack([1.0 / q_e, 1.0 / (m_e * q_e)])
        rows_c = -np.column_stack([1.0 / q_c, 1.0 / (m_c * q_c)]) * pulls[:, None]
        return np.vstack([rows_e, rows_c])

    solution = least_squares(residuals, x0, jac=jacobian, bounds=([0.0, 0.0], [np.inf, np.inf]), x_scale=x0,
                             xtol=1e-12, ftol=1e-12, gtol=1e-12)
    # the optimum may lie on a bound (no plateau: S_min = 0; flat k: E_min = 0), which the solver only
    # approaches; those two edges have closed-form fits of the exact points, so compare them directly
    best = solution.x
    for edge in (np.array([0.0, float(np.exp(np.mean(log_k + np.log(m_e))))]),
                 np.array([float(np.exp(np.mean(log_k))), 0.0])):
        if np.sum(residuals(edge) ** 2) <= np.sum(residuals(best) ** 2) * (1 + 1e-9) + 1e-18:
            best = edge
    s_min, e_min = (float(v) for v in best)
    if s_min < 1e-6 * scale:  # at the bound: no plateau within the measured range
        s_min = 0.0
    if e_min < 1e-6 * scale * m_e.min():
        e_min = 0.0
    r = residuals(np.array([s_min, e_min]) if s_min + e_min > 0 else solution.x)
    if s_min > 0:
        b_crit = e_min / s_min
    else:
        b_crit = float("inf") if e_min > 0 else _NAN
    result.update({"S_min": s_min, "B_crit": float(b_crit), "E_min": e_min,
                   "log_rmse": float(np.sqrt(np.mean(r ** 2)))})
    return result


def critical_batch_bound(b_crit: float, smallest_batch: float, largest_reached: float) -> dict:
    """Where B_crit lies against the measured range: ``{"bound", "report"}``.

    ``bound`` is ``below_range`` (B_crit < the smallest batch size measured: k is flat from there on),
    ``above_range`` (B_crit > the largest batch size that reached eps: the fit extrapolates) or None
    (inside); ``report`` is the text to quote: ``< 4``, ``> 256`` or the value to 4 significant digits.
    An infinite B_crit is ``above_range``; NaN gives None for both.
    """
    b = float(b_crit)
    if math.isnan(b):
        return {"bound": None, "report": None}
    if b < float(smallest_batch):
        return {"bound": "below_range", "report": f"< {float(smallest_batch):g}"}
    if not math.isfinite(float(largest_reached)) or b > float(largest_reached):
        return {"bound": "above_range", "report": f"> {float(largest_reached):g}"}
    return {"bound": None, "report": f"{b:.4g}"}


def mean_censoring_bound(k_row, steps_row) -> float:
    """Lower bound on the seed mean of k at a batch size where some seed never reached eps.

    `k_row` per seed (inf = not reached, NaN = missing), `steps_row` the steps each seed ran. A seed that
    never reached eps needed more than the steps it ran, so mean k >= mean of (k, or steps run where not
    reached). NaN when every seed reached eps (not censored) or a not-reached seed has no finite step count
    (a diverged run: it would never reach eps, so the size is excluded, not censored).
    """
    k = np.asarray(k_row, dtype=float).ravel()
    steps = np.asarray(steps_row, dtype=float).ravel()
    have = ~np.isnan(k)
    k, steps = k[have], steps[have]
    missed = np.isposinf(k)
    if k.size == 0 or not missed.any() or not np.all(np.isfinite(steps[missed])):
        return _NAN
    return float(np.mean(np.where(missed, steps, k)))


def _fit_quantities(fit: dict) -> dict:
    return {name: fit[name] for name in ("S_min", "B_crit", "E_min")}


def critical_batch_interval(batch_sizes, k_per_seed, steps_per_seed=None, samples: int = 1000,
                            confidence: float = 0.9, seed: int = 0) -> dict:
    """`fit_critical_batch` on the seed means, with intervals of the kind the seeds allow.

    `k_per_seed` and `steps_per_seed` (steps each run ran, for censoring; None: nothing censored) have
    shape (batch size, seed). Kinds (``interval_kind``):

    - ``percentile_bootstrap`` (5 seeds and more): seeds resampled as whole columns, seed means refitted;
    - ``student_t`` (2-4 seeds): each seed's own curve fitted, a Student-t interval (log scale) of those
      per-seed values (the estimate stays the fit of the seed means); NaN bounds when a seed's fit fails;
    - ``residual_bootstrap`` (one series): the fit's log residuals resampled and refitted;
    - ``none`` when there is nothing to resample.

    Returns the fit (S_min, B_crit, E_min, log_rmse, n_points, n_censored) with ``{name}_low``/``_high``
    for S_min, B_crit and E_min and ``n_resamples`` (refits that succeeded; an infinite B_crit counts as
    large).
    """
    m = np.asarray(batch_sizes, dtype=float).ravel()
    k = np.asarray(k_per_seed, dtype=float)
    if k.ndim == 1:
        k = k[:, None]
    if k.shape[0] != m.size:
        raise ValueError(f"k_per_seed needs one row per batch size ({k.shape[0]} rows, {m.size} sizes)")
    steps = (np.full(k.shape, np.nan) if steps_per_seed is None
             else np.asarray(steps_per_seed, dtype=float).reshape(k.shape))
    seeds = [j for j in range(k.shape[1]) if np.any(~np.isnan(k[:, j]))]
    k, steps = k[:, seeds], steps[:, seeds]

    fitted = {}

    def fit_columns(cols):
        # seed means do not depend on the order of the seeds: a bootstrap of 5 seeds draws at most 126
        # distinct multisets in its 1000 resamples, so each is fitted once
        key = tuple(sorted(cols))
        if key not in fitted:
            kk, ss = k[:, list(key)], steps[:, list(key)]
            mean = np.array([seed_mean(row) if np.any(~np.isnan(row)) else np.nan for row in kk])
            bound = np.array([mean_censoring_bound(kk[i], ss[i]) for i in range(m.size)])
            fitted[key] = fit_critical_batch(m, mean, bound)
        return fitted[key]

    result = dict(fit_columns(list(range(len(seeds)))))
    names = ("S_min", "B_crit", "E_min")
    stats = {name: [] for name in names}
    n_seeds = len(seeds)
    kind = interval_kind_for(n_seeds)
    if np.isnan(result["S_min"]):
        kind = "none"
    if kind == "percentile_bootstrap":
        for index in _resample_indices(n_seeds, samples, seed):
            fit = fit_columns(list(index))
            if not (np.isnan(fit["S_min"]) or np.isnan(fit["B_crit"])):
                for name in names:
                    stats[name].append(fit[name])
        for name in names:
            result[f"{name}_low"], result[f"{name}_high"] = _interval(np.asarray(stats[name]), confidence)
    elif kind == "student_t":
        fits = [fit_columns([j]) for j in range(n_seeds)]
        for name in names:
            values = np.array([f[name] for f in fits], dtype=float)
            stats[name] = values[np.isfinite(values)].tolist()
            result[f"{name}_low"], result[f"{name}_high"] = (
                student_t_interval(stats[name], confidence, log=True) if len(stats[name]) == n_seeds
                else (_NAN, _NAN))
    elif kind == "none" and n_seeds == 1 and np.isfinite(result["S_min"]):
        kind = "residual_bootstrap"
        mean = k[:, 0]
        bound = np.array([mean_censoring_bound(k[i], steps[i]) for i in range(m.size)])
        fitted = result["S_min"] + result["E_min"] / m
        exact = np.isfinite(mean) & (mean > 0)
        residual = np.log(mean[exact]) - np.log(fitted[exact])
        rng = np.random.default_rng(seed)
        for _ in range(int(samples)):
            synthetic = mean.copy()
            synthetic[exact] = fitted[exact] * np.exp(rng.choice(residual, size=residual.size, replace=True))
            fit = fit_critical_batch(m, synthetic, bound)
            if not (np.isnan(fit["S_min"]) or np.isnan(fit["B_crit"])):
                for name in names:
                    stats[name].append(fit[name])
        for name in names:
            result[f"{name}_low"], result[f"{name}_high"] = _interval(np.asarray(stats[name]), confidence)
    for name in names:
        result.setdefault(f"{name}_low", _NAN)
        result.setdefault(f"{name}_high", _NAN)
    result["interval_kind"] = kind
    result["n_seeds"] = n_seeds
    result["n_resamples"] = len(stats["S_min"])
    return result


def overhead_batch_direct(batch_sizes, k, base_batch, overhead: float = 0.2) -> dict:
    """The overhead-based critical batch size (Zhang et al. 2024) read from measured k(m).

    The linear-scaling prediction from m0 is k(m0) m0 / m; the critical batch is where k(m) exceeds it
    by `overhead`, i.e. where k(m) m = (1 + overhead) k(m0) m0. Between the two bracketing measured sizes
    log k is interpolated linearly in log m (so log(k m) is linear too) and the crossing solved exactly.
    Batch sizes are walked upward from m0 and the walk stops at the first that did not reach eps.

    Returns ``{"estimate", "bound", "report"}``: an estimate with bound None; or NaN with bound
    ``above_range`` and report ``> m`` (m the largest size reached before the walk stopped) when the
    overhead is not reached; or NaN with bound None when k(m0) is not finite and positive.
    """
    m = np.asarray(batch_sizes, dtype=float).ravel()
    k = np.asarray(k, dtype=float).ravel()
    order = np.argsort(m, kind="stable")
    m, k = m[order], k[order]
    base = np.flatnonzero(m == float(base_batch))
    if base.size == 0 or not (np.isfinite(k[base[0]]) and k[base[0]] > 0):
        return {"estimate": _NAN, "bound": None, "report": None}
    target = math.log1p(float(overhead))
    i0 = int(base[0])
    prev_m, prev_g = m[i0], 0.0  # log of k m / (k0 m0), 0 at m0
    last = m[i0]
    for i in range(i0 + 1, m.size):
        if np.isnan(k[i]):
            continue
        if not (np.isfinite(k[i]) and k[i] > 0):
            break
        g = math.log(k[i] * m[i] / (k[i0] * m[i0]))
        if at_least(g, target):
            if g == prev_g:
                estimate = float(m[i])
            else:
                t = (target - prev_g) / (g - prev_g)
                estimate = float(math.exp(math.log(prev_m) + t * (math.log(m[i]) - math.log(prev_m))))
            return {"estimate": estimate, "bound": None, "report": f"{estimate:.4g}"}
        prev_m, prev_g, last = m[i], g, m[i]
    return {"estimate": _NAN, "bound": "above_range", "report": f"> {last:g}"}


def overhead_batch_from_fit(s_min: float, b_crit: float, base_batch: float, overhead: float = 0.2) -> float:
    """The overhead-based critical batch from the fit: k_fit(m) m = (1 + o) k_fit(m0) m0 with
    k_fit(m) = S_min (1 + B_crit/m) gives m + B_crit = (1 + o)(m0 + B_crit), so
    m = (1 + o) m0 + o B_crit (NaN without a fit; inf when B_crit is)."""
    if not (np.isfinite(s_min) and s_min > 0) or math.isnan(b_crit):
        return float("inf") if math.isinf(b_crit) else _NAN
    return float((1.0 + overhead) * base_batch + overhead * b_crit)
