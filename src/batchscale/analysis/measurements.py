"""Measurements of batch-size scaling: small pure functions, one measurement each.

Every function takes numpy arrays (or an xarray DataArray where noted) and returns numbers or arrays, so
each can be checked against values computed by hand. The definitions follow the design page
(Definitions) and Golmant et al. (2018), sections 3 and 4:

- k(m; eps), iterations to threshold: the first step at which the traced value is <= eps, interpolated
  linearly in log(step) between the two bracketing evaluation points (linearly in step when the bracket
  starts at step 0); ``inf`` when never reached; ``NaN`` when there is no data (a missing run).
- Threshold eps: ``"lower_quartile_of_largest"`` (the paper's rule: the 25% quantile of all finite values
  traced for the largest batch size, every seed and evaluation point pooled),
  ``{"quantile_of_largest": q}``, or ``{"fixed": value}``.
- Speedup s(m; m0) = k(m0) / k(m); ideal speedup m / m0; efficiency e(m) = s / (m / m0).
- Regimes (see `regimes`): linear, diminishing, stagnation, not_reached.
- Critical batch size: least-squares fit of k(m) = S_min (1 + B_crit / m) (McCandlish et al. 2018),
  E_min = S_min * B_crit, with a bootstrap over seeds.

Conventions for infinities (a run that never reaches the threshold has k = inf):
- The mean over seeds is inf as soon as one seed is inf: the batch size did not reliably reach the
  threshold. NaN entries (missing runs) are ignored by the seed mean.
- speedup(k, k_base): inf/inf -> NaN, finite/inf -> 0 (never reached: no speedup),
  inf/finite -> inf (the base batch itself never reached it). k = 0 (eps met at step 0) gives an
  infinite or undefined speedup and the regime ``trivial``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping

import numpy as np

LOWER_QUARTILE = "lower_quartile_of_largest"
REGIME_LABELS = ("linear", "diminishing", "stagnation", "not_reached", "trivial", "missing")


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
            "quantile_of_largest:q (0 < q < 1) or fixed:value")
    if isinstance(rule, Mapping) and len(rule) == 1:
        (name, value), = rule.items()
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if name == "quantile_of_largest" and 0.0 < value < 1.0:
            return {"kind": "quantile_of_largest", "value": value}
        if name == "fixed" and math.isfinite(value):
            return {"kind": "fixed", "value": value}
    raise ValueError(
        f"threshold rule {rule!r} is not allowed; use lower_quartile_of_largest, "
        "{quantile_of_largest: q} with 0 < q < 1, or {fixed: value}")


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


# --------------------------------------------------------------------------------------------
# Speedup and efficiency


def speedup(k, k_base):
    """s = k_base / k (elementwise). finite/inf -> 0, inf/finite -> inf; inf/inf, 0/0 and NaN -> NaN
    (k = 0: the threshold was met at step 0)."""
    k = np.asarray(k, dtype=float)
    k_base = np.asarray(k_base, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.divide(k_base, k)
    out = np.where(np.isposinf(k) & np.isfinite(k_base), 0.0, out)
    out = np.where(np.isposinf(k_base) & np.isfinite(k), np.inf, out)
    out = np.where(np.isposinf(k_base) & np.isposinf(k), np.nan, out)
    return out[()] if out.ndim == 0 else out


def ideal_speedup(m, m0):
    """The ideal (linear) speedup m / m0."""
    out = np.asarray(m, dtype=float) / np.asarray(m0, dtype=float)
    return out[()] if out.ndim == 0 else out


def efficiency(k, k_base, m, m0):
    """e = speedup(k, k_base) / (m / m0): 1 for perfect linear scaling, 0 when never reached."""
    out = np.asarray(speedup(k, k_base), dtype=float) / np.asarray(ideal_speedup(m, m0), dtype=float)
    return out[()] if out.ndim == 0 else out


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
    """Label each batch size linear / diminishing / stagnation / not_reached (missing for NaN k).

    Batch sizes are visited in increasing order (labels come back in the input order):

    - ``not_reached``: k is inf; it ends the linear regime. ``missing``: k is NaN (no data).
      ``trivial``: k is 0 (the threshold is met at step 0, so it says nothing about speed). Missing and
      trivial sizes are skipped by the rules below.
    - ``linear``: the prefix of sizes whose efficiency e(m) = (k(m0)/k(m)) / (m/m0) is >= `linear_efficiency`;
      the first size below the cut-off ends it for good (the regimes are successive phases). No size is
      linear when k(base_batch) is not finite and positive.
    - ``stagnation``: the sizes after the linear prefix from which on doubling the batch never again cuts
      k by `stagnation_gain` or more. With m_p the previous reached size, the per-doubling ratio is
      r = (k(m)/k(m_p)) ** (1 / log2(m/m_p)) (so skipped sizes in the grid are accounted for); a size is
      stagnation when its r and the r of every larger reached size exceed 1 - stagnation_gain, i.e.
      k(2m) > (1 - gain) k(m) from there on. (A suffix rule: one noisy flat step followed by real gains is
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
        raise ValueError(f"base batch {base_batch} is not one of the batch sizes {m.astype(int).tolist()}")
    k_base = k[where_base[0]]
    with np.errstate(divide="ignore", invalid="ignore"):
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
        if in_linear and np.isfinite(eff[i]) and eff[i] >= linear_efficiency:
            labels[i] = "linear"
            previous = i
            continue
        in_linear = False
        small_gain = False
        if previous is not None and m[i] > m[previous]:
            ratio = (k[i] / k[previous]) ** (1.0 / math.log2(m[i] / m[previous]))
            small_gain = bool(ratio > 1.0 - stagnation_gain)
        labels[i] = "diminishing"
        flat.append((i, small_gain))
        previous = i
    for i, small_gain in reversed(flat):  # stagnation is the longest all-flat suffix
        if not small_gain:
            break
        labels[i] = "stagnation"
    return labels


def regime_boundaries(batch_sizes, labels) -> dict:
    """``largest_linear`` (largest batch size labelled linear) and ``first_stagnation`` (smallest labelled
    stagnation); None when the regime does not occur in the measured range."""
    m = [int(b) for b in batch_sizes]
    linear = [b for b, lab in zip(m, labels) if lab == "linear"]
    stagnation = [b for b, lab in zip(m, labels) if lab == "stagnation"]
    return {"largest_linear": max(linear) if linear else None,
            "first_stagnation": min(stagnation) if stagnation else None}


# --------------------------------------------------------------------------------------------
# Critical batch size


def fit_critical_batch(batch_sizes, k, relative: bool = True, iterations: int = 3) -> dict:
    """Fit k(m) = S_min (1 + B_crit / m) (McCandlish et al. 2018) by least squares.

    The model is linear in (S_min, E_min) with E_min = S_min * B_crit: k = S_min + E_min * (1/m). It is
    solved as non-negative least squares (S_min, E_min >= 0). With `relative` (default) the residuals are
    relative, (k_obs - k_fit) / k_fit, by iteratively reweighted least squares (`iterations` rounds, first
    weighted by k_obs): k spans decades across batch sizes and seed noise is multiplicative, so this
    approximates a fit in log space and keeps the small batch sizes from dominating. `relative=False` is
    the plain unweighted fit.

    Only finite k enter; fewer than 3 finite points give NaN everywhere. Returns a dict with S_min (steps),
    B_crit (examples per step), E_min (examples, = S_min * B_crit) and n_points. S_min == 0 (k still falls
    as 1/m over the whole range: no plateau measured) gives B_crit = inf; E_min == 0 (flat k) gives 0.
    """
    from scipy.optimize import nnls

    m = np.asarray(batch_sizes, dtype=float).ravel()
    k = np.asarray(k, dtype=float).ravel()
    keep = np.isfinite(k) & np.isfinite(m) & (m > 0) & (k > 0)
    m, k = m[keep], k[keep]
    n = int(m.size)
    nan = float("nan")
    if n < 3:
        return {"S_min": nan, "B_crit": nan, "E_min": nan, "n_points": n}
    design = np.column_stack([np.ones(n), 1.0 / m])
    scale = k.copy()
    coef = None
    for _ in range(max(1, int(iterations)) if relative else 1):
        weights = 1.0 / scale if relative else np.ones(n)
        coef, _ = nnls(design * weights[:, None], k * weights)
        fitted = design @ coef
        if not relative or np.any(fitted <= 0):
            break
        scale = fitted
    s_min, e_min = float(coef[0]), float(coef[1])
    if s_min > 0:
        b_crit = e_min / s_min
    else:
        b_crit = float("inf") if e_min > 0 else nan
    return {"S_min": s_min, "B_crit": float(b_crit), "E_min": e_min, "n_points": n}


def bootstrap_critical_batch(batch_sizes, k_per_seed, samples: int = 1000, confidence: float = 0.9,
                             seed: int = 0, relative: bool = True) -> dict:
    """`fit_critical_batch` on seed means, with a percentile bootstrap over seeds.

    `k_per_seed` has shape (batch size, seed); seeds are resampled with replacement as whole columns (one
    seed index drawn applies to every batch size), seed means taken with `seed_mean` (a batch size whose
    resampled seeds include an inf is left out of that refit), and the fit repeated. Returns the point
    estimates (S_min, B_crit, E_min, n_points, from all seeds) and for each of S_min, B_crit, E_min the
    ``_low``/``_high`` percentile bounds over the resamples whose fit succeeded (``n_resamples`` of them;
    an infinite B_crit counts as a large value).
    """
    m = np.asarray(batch_sizes, dtype=float).ravel()
    k = np.asarray(k_per_seed, dtype=float)
    if k.ndim == 1:
        k = k[:, None]
    if k.shape[0] != m.size:
        raise ValueError(f"k_per_seed needs one row per batch size ({k.shape[0]} rows, {m.size} sizes)")
    result = dict(fit_critical_batch(m, seed_mean(k, axis=1), relative=relative))
    names = ("S_min", "B_crit", "E_min")
    stats = {name: [] for name in names}
    if k.shape[1] > 0 and np.isfinite(result["S_min"]):
        for index in _resample_indices(k.shape[1], samples, seed):
            fit = fit_critical_batch(m, seed_mean(k[:, index], axis=1), relative=relative)
            if np.isnan(fit["S_min"]) or np.isnan(fit["B_crit"]):
                continue
            for name in names:
                stats[name].append(fit[name])
    for name in names:
        low, high = _interval(np.asarray(stats[name], dtype=float), confidence)
        result[f"{name}_low"], result[f"{name}_high"] = low, high
    result["n_resamples"] = len(stats["S_min"])
    return result
