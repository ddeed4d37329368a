"""The critical batch size of a k(m) curve.

- Fit of k(m) = S_min (1 + B_crit / m) (McCandlish et al. 2018) in log space, batch sizes that never
  reached eps taken as censored, with its log-RMSE (`fit_critical_batch`), and reported as a bound when
  B_crit lies outside the measured range (`critical_batch_bound`); its intervals by seed count
  (`critical_batch_interval`).
- The overhead-based critical batch of Zhang et al. (2024): directly from k(m) (`overhead_batch_direct`)
  and from the fit (`overhead_batch_from_fit`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares, nnls

from batchscale.analysis.many_seeds import NORMAL_DRAWS, many, mean_curve_draws
from batchscale.analysis.intervals import (
    ONE_VALUE,
    interval_kind_for,
    percentile_interval,
    resample_indices,
    seed_mean,
    student_t_interval,
)
from batchscale.analysis.speedup import at_least

FIT_QUANTITIES = ("S_min", "B_crit", "E_min")
_NAN = float("nan")


def _nnls_start(m: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    """Relative-error NNLS of k = S + E/m: a starting point for the log-space fit."""
    design = np.column_stack([np.ones(m.size), 1.0 / m])
    coef, _ = nnls(design / k[:, None], np.ones(m.size))
    return float(coef[0]), float(coef[1])


def fit_critical_batch(batch_sizes, k, censored_at=None) -> dict:
    """Fits k(m) = S_min (1 + B_crit / m) = S_min + E_min / m (McCandlish et al. 2018) in log space.

    Minimises the sum of squared log residuals log k - log k_fit over the batch sizes with finite k > 0,
    plus, for each censored batch size (k = inf with a finite lower bound: the threshold was not reached
    within that many steps), the squared shortfall max(0, log bound - log k_fit): a censored point only
    pulls when the fit predicts fewer steps than were run without reaching eps. S_min, E_min >= 0 (bounded
    least squares from a relative-error NNLS start). k varies over decades and seed noise is
    multiplicative, hence log space.

    Args:
      batch_sizes: the batch sizes m.
      k: k(m) (steps; inf: not reached).
      censored_at: per batch size, the steps run without reaching eps (NaN or None: not censored).

    Returns:
      S_min (steps), B_crit = E_min / S_min (examples per step), E_min (examples), log_rmse (root mean
      square of all those residuals; 0.1 is a typical miss of about 10%), n_points (finite k), n_censored
      (censored sizes used). Fewer than 3 finite points: NaN. S_min fitted as 0 (k still falls as 1/m
      everywhere): B_crit inf; E_min as 0 (flat k): B_crit 0.
    """
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
    """Where B_crit lies against the measured range.

    Args:
      b_crit: the fitted B_crit.
      smallest_batch: the smallest batch size measured.
      largest_reached: the largest batch size that reached eps.

    Returns:
      ``{"bound", "report"}``: ``bound`` is ``below_range`` (B_crit < the smallest batch size measured: k is
      flat from there on), ``above_range`` (B_crit > the largest batch size that reached eps: the fit
      extrapolates) or None (inside); ``report`` is the text to quote: ``< 4``, ``> 256`` or the value to 4
      significant digits. An infinite B_crit is ``above_range``; NaN gives None for both.
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
    """A lower bound on the seed mean of k at a batch size where some seed never reached eps.

    A seed that never reached eps needed more than the steps it ran, so mean k >= mean of (k, or steps run
    where not reached).

    Args:
      k_row: k per seed (inf: not reached; NaN: missing).
      steps_row: the steps each seed ran.

    Returns:
      the bound; NaN when every seed reached eps (not censored) or a not-reached seed has no finite step
      count (a diverged run: it would never reach eps, so the size is excluded, not censored).
    """
    k = np.asarray(k_row, dtype=float).ravel()
    steps = np.asarray(steps_row, dtype=float).ravel()
    have = ~np.isnan(k)
    k, steps = k[have], steps[have]
    missed = np.isposinf(k)
    if k.size == 0 or not missed.any() or not np.all(np.isfinite(steps[missed])):
        return _NAN
    return float(np.mean(np.where(missed, steps, k)))


def seed_mean_fit(batch_sizes: np.ndarray, k: np.ndarray, steps: np.ndarray) -> dict:
    """`fit_critical_batch` on the seed means of k, with the censoring bound of each batch size.

    Args:
      batch_sizes: the batch sizes m.
      k: k per (batch size, seed) (inf: not reached; NaN: missing).
      steps: the steps each run ran, per (batch size, seed) (NaN: unknown).

    Returns:
      the fit.
    """
    mean = np.array([seed_mean(row) if np.any(~np.isnan(row)) else np.nan for row in k])
    bound = np.array([mean_censoring_bound(k[i], steps[i]) for i in range(batch_sizes.size)])
    return fit_critical_batch(batch_sizes, mean, bound)


def column_fitter(batch_sizes: np.ndarray, k: np.ndarray, steps: np.ndarray):
    """A function from a list of seed columns to `seed_mean_fit` of those columns, fitting each set once.

    Seed means do not depend on the order of the seeds: a bootstrap of 5 seeds draws at most 126 distinct
    multisets in its 1000 resamples.

    Args:
      batch_sizes: the batch sizes m.
      k: k per (batch size, seed).
      steps: the steps each run ran, per (batch size, seed).

    Returns:
      fit_columns(columns) -> the fit.
    """
    fitted = {}

    def fit_columns(columns) -> dict:
        key = tuple(sorted(columns))
        if key not in fitted:
            fitted[key] = seed_mean_fit(batch_sizes, k[:, list(key)], steps[:, list(key)])
        return fitted[key]

    return fit_columns


def _collect(samples: dict, fit: dict) -> None:
    """Add a refit's quantities to `samples` when it succeeded (an infinite B_crit counts as large)."""
    if not (np.isnan(fit["S_min"]) or np.isnan(fit["B_crit"])):
        for name in FIT_QUANTITIES:
            samples[name].append(fit[name])


def residual_refits(batch_sizes: np.ndarray, k: np.ndarray, steps: np.ndarray, fit: dict, samples: int,
                    seed: int) -> list[dict]:
    """Refits of one series with its log residuals resampled (a residual bootstrap).

    Args:
      batch_sizes: the batch sizes m.
      k: k per (batch size, seed), one seed column.
      steps: the steps each run ran, the same shape.
      fit: the series' fit (finite S_min).
      samples: the number of resamples.
      seed: the seed of the resampling.

    Returns:
      one fit per resample: the fitted curve times resampled residuals at the exact points, censored
      points kept.
    """
    mean = k[:, 0]
    bound = np.array([mean_censoring_bound(k[i], steps[i]) for i in range(batch_sizes.size)])
    fitted = fit["S_min"] + fit["E_min"] / batch_sizes
    exact = np.isfinite(mean) & (mean > 0)
    residual = np.log(mean[exact]) - np.log(fitted[exact])
    rng = np.random.default_rng(seed)
    refits = []
    for _ in range(int(samples)):
        synthetic = mean.copy()
        synthetic[exact] = fitted[exact] * np.exp(rng.choice(residual, size=residual.size, replace=True))
        refits.append(fit_critical_batch(batch_sizes, synthetic, bound))
    return refits


def critical_batch_interval(batch_sizes, k_per_seed, steps_per_seed=None, samples: int = 1000,
                            confidence: float = 0.9, seed: int = 0) -> dict:
    """`fit_critical_batch` on the seed means, with intervals of the kind the seeds allow.

    Kinds (``interval_kind``):

    - ``percentile_bootstrap`` (5 seeds and more): seeds resampled as whole columns, seed means refitted;
    - ``student_t`` (2-4 seeds): each seed's own curve fitted, a Student-t interval (log scale) of those
      per-seed values (the estimate stays the fit of the seed means); NaN bounds when a seed's fit fails;
    - ``residual_bootstrap`` (one series): the fit's log residuals resampled and refitted;
    - ``none`` when there is nothing to resample.

    Args:
      batch_sizes: the batch sizes m.
      k_per_seed: k per (batch size, seed) (or one series per batch size).
      steps_per_seed: the steps each run ran, for censoring; None: nothing censored.
      samples: resamples of a bootstrap.
      confidence: the coverage.
      seed: the seed of the resampling.

    Returns:
      the fit (S_min, B_crit, E_min, log_rmse, n_points, n_censored) with ``{name}_low``/``_high`` for S_min,
      B_crit and E_min, ``interval_kind``, ``n_seeds`` and ``n_resamples`` (refits that succeeded; an
      infinite B_crit counts as large).

    Raises:
      ValueError: when k has not one row per batch size.
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
    fit_columns = column_fitter(m, k, steps)
    n_seeds = len(seeds)
    result = dict(seed_mean_fit(m, k, steps))
    kind = "none" if np.isnan(result["S_min"]) else interval_kind_for(n_seeds)
    if kind != "none" and n_seeds >= 2 and all(
            np.allclose(k[:, 0], k[:, j], rtol=1e-9, atol=0.0, equal_nan=True) for j in range(n_seeds)):
        kind = ONE_VALUE  # every seed gave the same curve: no spread to make an interval of
    elif kind != "none" and many(n_seeds):
        kind = "normal_bootstrap"
    collected = {name: [] for name in FIT_QUANTITIES}
    bounds = {}
    if kind == "normal_bootstrap":
        bound = np.array([mean_censoring_bound(k[i], steps[i]) for i in range(m.size)])
        for draw in mean_curve_draws(k, min(int(samples), NORMAL_DRAWS), seed):
            _collect(collected, fit_critical_batch(m, draw, bound))
        bounds = {name: percentile_interval(np.asarray(collected[name]), confidence) for name in FIT_QUANTITIES}
    elif kind == "percentile_bootstrap":
        for index in resample_indices(n_seeds, samples, seed):
            _collect(collected, fit_columns(list(index)))
        bounds = {name: percentile_interval(np.asarray(collected[name]), confidence) for name in FIT_QUANTITIES}
    elif kind == "student_t":
        fits = [fit_columns([j]) for j in range(n_seeds)]
        for name in FIT_QUANTITIES:
            values = np.array([f[name] for f in fits], dtype=float)
            collected[name] = values[np.isfinite(values)].tolist()
            bounds[name] = (student_t_interval(collected[name], confidence, log=True)
                            if len(collected[name]) == n_seeds else (_NAN, _NAN))
    elif n_seeds == 1 and np.isfinite(result["S_min"]):
        kind = "residual_bootstrap"
        for fit in residual_refits(m, k, steps, result, samples, seed):
            _collect(collected, fit)
        bounds = {name: percentile_interval(np.asarray(collected[name]), confidence) for name in FIT_QUANTITIES}
    for name in FIT_QUANTITIES:
        result[f"{name}_low"], result[f"{name}_high"] = bounds.get(name, (_NAN, _NAN))
    result["interval_kind"] = kind
    result["n_seeds"] = n_seeds
    result["n_resamples"] = len(collected["S_min"])
    return result


def overhead_batch_direct(batch_sizes, k, base_batch, overhead: float = 0.2) -> dict:
    """The overhead-based critical batch size (Zhang et al. 2024), read from measured k(m).

    The linear-scaling prediction from m0 is k(m0) m0 / m; the critical batch is where k(m) exceeds it
    by `overhead`, i.e. where k(m) m = (1 + overhead) k(m0) m0. Between the two bracketing measured sizes
    log k is interpolated linearly in log m (so log(k m) is linear too) and the crossing solved exactly.
    Batch sizes are walked upward from m0 and the walk stops at the first that did not reach eps.

    Args:
      batch_sizes: the batch sizes m.
      k: k(m) (steps; inf: not reached; NaN: missing, skipped).
      base_batch: m0.
      overhead: the relative overhead over linear scaling.

    Returns:
      ``{"estimate", "bound", "report"}``: an estimate with bound None; or NaN with bound ``above_range``
      and report ``> m`` (m the largest size reached before the walk stopped) when the overhead is not
      reached; or NaN with bound None when k(m0) is not finite and positive.
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
    """The overhead-based critical batch from the fit.

    k_fit(m) m = (1 + o) k_fit(m0) m0 with k_fit(m) = S_min (1 + B_crit/m) gives
    m + B_crit = (1 + o)(m0 + B_crit), so m = (1 + o) m0 + o B_crit.

    Args:
      s_min: the fitted S_min.
      b_crit: the fitted B_crit (or a bound of its interval).
      base_batch: m0.
      overhead: o.

    Returns:
      m; NaN without a fit; inf when B_crit is.
    """
    if not (np.isfinite(s_min) and s_min > 0) or math.isnan(b_crit):
        return float("inf") if math.isinf(b_crit) else _NAN
    return float((1.0 + overhead) * base_batch + overhead * b_crit)
