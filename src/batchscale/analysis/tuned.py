"""Measurements of the `tuned` strategy: steps to result over a learning-rate search (Shallue et al. 2018).

Small pure functions over a tidy pandas table of trials, one row per (batch size, trial, seed) with
columns ``batch_size``, ``trial``, ``seed``, ``k`` (steps to ε; inf when not reached or diverged) and
the trial's hyperparameters (``lr`` and, where searched, ``momentum``, ``beta2``, ``schedule``); a
``strategy`` column, when present, is carried through as a grouping key.

- Steps to result (Shallue et al.): for each batch size, the fewest steps any trial needs to reach ε,
  a trial's steps being its mean over seeds (inf as soon as one seed misses ε, as in
  `intervals.seed_mean`). The best trial's hyperparameters give η*(m).
- Edge warning: η*(m) is the smallest or largest learning rate tried at that batch size, so the optimum
  may lie outside the searched range and the steps to result are then an upper bound.
- Intervals: a percentile bootstrap that resamples seeds and trials with replacement (the same draw at
  every batch size, since seeds and trial numbers are shared across batch sizes), so the interval also
  reflects how lucky the search was. Note that the minimum over a resample of trials is never below the
  minimum over all trials: the interval sits at or above the point estimate where trials matter.
- η*(m) = η_max / (1 + B_noise/m), McCandlish et al.'s optimal-step law, fitted as the linear model
  1/η* = 1/η_max + (B_noise/η_max)·(1/m) with relative residuals.
- The threshold of a tuned study: the same rule as the fixed strategies' (`thresholds.threshold_from_seeds`:
  each seed's curve resampled uniformly in steps, its q-quantile, the largest over seeds), applied to the
  seeds of the best trial of the largest batch size (the trial whose seeds end at the lowest mean loss, as ε
  is not known yet), or a fixed target. One rule for every strategy, so own ε are comparable.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from batchscale.analysis.critical import fit_critical_batch
from batchscale.analysis.intervals import sample_quantile
from batchscale.analysis.thresholds import resample_uniform_in_steps, threshold_from_seeds

KEY_COLUMNS = ("strategy", "batch_size", "trial", "seed", "k", "round")
EDGE_LABELS = ("low", "high", "")


def hyperparameter_columns(table: pd.DataFrame) -> list[str]:
    """The columns that describe a trial's hyperparameters.

    Args:
      table: a table of trials.

    Returns:
      every column of `table` but the keys (KEY_COLUMNS).
    """
    return [column for column in table.columns if column not in KEY_COLUMNS]


def _group_keys(table: pd.DataFrame) -> list[str]:
    return ["strategy", "batch_size"] if "strategy" in table.columns else ["batch_size"]


def trial_steps(table: pd.DataFrame) -> pd.DataFrame:
    """k per (batch size, trial) averaged over seeds.

    Args:
      table: the trials, one row per (batch size, trial, seed).

    Returns:
      one row per trial with its hyperparameters, ``k`` (the mean over seeds: inf if any seed is inf; NaN
      seeds are ignored) and ``n_seeds``.
    """
    keys = _group_keys(table) + ["trial"]
    hyper = hyperparameter_columns(table)

    def seed_mean(values: pd.Series) -> float:
        values = values.to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return math.nan
        return math.inf if np.isinf(values).any() else float(values.mean())

    grouped = table.groupby(keys, sort=True)
    result = grouped["k"].agg(seed_mean).rename("k").to_frame()
    result["n_seeds"] = grouped["seed"].nunique()
    if hyper:
        result = result.join(grouped[hyper].first())
    return result.reset_index()


def lr_edge(lrs, best_lr: float, rel_tol: float = 1e-9) -> str:
    """Whether the best learning rate lies at an edge of the searched range.

    Args:
      lrs: the learning rates tried (non-finite ones ignored).
      best_lr: the best trial's rate.
      rel_tol: the relative tolerance of "at the edge".

    Returns:
      "low" / "high" when `best_lr` is the smallest / largest of `lrs` (at least two), else "".
    """
    lrs = np.asarray(lrs, dtype=float)
    lrs = lrs[np.isfinite(lrs)]
    if lrs.size < 2 or not math.isfinite(best_lr):
        return ""
    if math.isclose(best_lr, lrs.min(), rel_tol=rel_tol):
        return "low"
    if math.isclose(best_lr, lrs.max(), rel_tol=rel_tol):
        return "high"
    return ""


def steps_to_result(table: pd.DataFrame) -> pd.DataFrame:
    """Steps to result: per batch size, the fewest steps any trial needs to reach ε, and its trial.

    Args:
      table: the trials, one row per (batch size, trial, seed) with k and the hyperparameters.

    Returns:
      columns [strategy,] batch_size, k (steps to result; inf when no trial reached ε), trial (the best;
      ties go to the lowest trial number; -1 when none reached ε), the best trial's hyperparameters (lr is
      η*(m)), n_trials, n_reached (trials whose every seed reached ε), lr_min/lr_max (the range tried) and
      lr_edge ("low"/"high" when η*(m) is at an edge of the tried range, the warning; "" otherwise).
    """
    per_trial = trial_steps(table)
    hyper = hyperparameter_columns(per_trial.drop(columns=["n_seeds"]))
    rows = []
    for key, group in per_trial.groupby(_group_keys(per_trial), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(_group_keys(per_trial), key))
        finite = group[np.isfinite(group["k"].to_numpy(dtype=float))]
        row["n_trials"] = int(len(group))
        row["n_reached"] = int(len(finite))
        row["lr_min"] = float(group["lr"].min())
        row["lr_max"] = float(group["lr"].max())
        if finite.empty:
            row.update({"k": math.inf, "trial": -1, "lr_edge": ""})
            row.update({name: (math.nan if name == "lr" else None) for name in hyper})
        else:
            best = finite.sort_values(["k", "trial"], kind="stable").iloc[0]
            row.update({"k": float(best["k"]), "trial": int(best["trial"])})
            row.update({name: best[name] for name in hyper})
            row["lr_edge"] = lr_edge(group["lr"], float(best["lr"]))
        rows.append(row)
    columns = _group_keys(per_trial) + ["k", "trial"] + hyper + ["n_trials", "n_reached", "lr_min",
                                                                  "lr_max", "lr_edge"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# The optimal-step law


def fit_optimal_lr(batch_sizes, best_lrs, iterations: int = 3) -> dict:
    """Fits η*(m) = η_max / (1 + B_noise/m) (McCandlish et al. 2018) to the best learning rates.

    1/η* = a + b/m is linear in (a, b) = (1/η_max, B_noise/η_max); it is solved as non-negative least
    squares with relative residuals (iteratively reweighted), so batch sizes count equally in log terms.

    Args:
      batch_sizes: the batch sizes m.
      best_lrs: η*(m) (non-finite or non-positive ones are left out).
      iterations: reweighting rounds.

    Returns:
      eta_max, B_noise, n_points and max_abs_log_residual; NaN with fewer than 3 finite points. b = 0 (η*
      flat) gives B_noise = 0; a = 0 (η* still linear in m over the whole range) gives eta_max = B_noise =
      inf.
    """
    m = np.asarray(batch_sizes, dtype=float).ravel()
    lr = np.asarray(best_lrs, dtype=float).ravel()
    keep = np.isfinite(m) & np.isfinite(lr) & (m > 0) & (lr > 0)
    m, inverse = m[keep], 1.0 / lr[keep]
    n = int(m.size)
    if n < 3:
        return {"eta_max": math.nan, "B_noise": math.nan, "n_points": n, "max_abs_log_residual": math.nan}
    design = np.column_stack([np.ones(n), 1.0 / m])
    scale = inverse.copy()
    for _ in range(max(1, int(iterations))):
        coef, _ = nnls(design / scale[:, None], inverse / scale)
        fitted = design @ coef
        if np.any(fitted <= 0):
            break
        scale = fitted
    a, b = float(coef[0]), float(coef[1])
    fitted = design @ coef
    residual = float(np.max(np.abs(np.log(inverse / fitted)))) if np.all(fitted > 0) else math.inf
    if a > 0:
        return {"eta_max": 1.0 / a, "B_noise": b / a, "n_points": n, "max_abs_log_residual": residual}
    return {"eta_max": math.inf, "B_noise": math.inf, "n_points": n, "max_abs_log_residual": residual}


def critical_batch_fit_residual(batch_sizes, k, fit: dict) -> float:
    """How well the hyperbola fits.

    Args:
      batch_sizes: the batch sizes m.
      k: k(m).
      fit: {S_min, B_crit}.

    Returns:
      max |log(k / (S_min (1 + B_crit/m)))| over the finite k.
    """
    m = np.asarray(batch_sizes, dtype=float)
    k = np.asarray(k, dtype=float)
    keep = np.isfinite(k) & (k > 0)
    fitted = fit["S_min"] * (1.0 + fit["B_crit"] / m[keep])
    return float(np.max(np.abs(np.log(k[keep] / fitted))))


# --------------------------------------------------------------------------------------------
# Intervals over seeds and trials


def _k_cube(table: pd.DataFrame):
    """k as an array (batch size, trial, seed) with NaN where a (trial, seed) was not run, and the lr."""
    batch_sizes = np.sort(table["batch_size"].unique())
    trials = np.sort(table["trial"].unique())
    seeds = np.sort(table["seed"].unique())
    cube = np.full((batch_sizes.size, trials.size, seeds.size), np.nan)
    lrs = np.full((batch_sizes.size, trials.size), np.nan)
    bi = np.searchsorted(batch_sizes, table["batch_size"].to_numpy())
    ti = np.searchsorted(trials, table["trial"].to_numpy())
    si = np.searchsorted(seeds, table["seed"].to_numpy())
    cube[bi, ti, si] = table["k"].to_numpy(dtype=float)
    lrs[bi, ti] = table["lr"].to_numpy(dtype=float)
    return batch_sizes, cube, lrs


def _envelope(cube: np.ndarray, lrs: np.ndarray):
    """Per batch size: min over trials of the seed mean of k, and the lr of that trial (NaN if none)."""
    with np.errstate(invalid="ignore"):
        present = ~np.isnan(cube)
        counts = present.sum(axis=2)
        sums = np.where(present, cube, 0.0).sum(axis=2)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # inf propagates
    means = np.where(np.isnan(means), np.inf, means)
    best = np.argmin(means, axis=1)
    rows = np.arange(cube.shape[0])
    k = means[rows, best]
    lr = np.where(np.isfinite(k), lrs[rows, best], np.nan)
    return k, lr


def percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided percentile interval of each column of resampled values.

    Args:
      samples: resamples x quantities (NaN dropped per column).
      confidence: the coverage.

    Returns:
      (low, high) per column; a column with infinite samples (resamples where no trial reached eps) takes
      order statistics (`intervals.sample_quantile`), so an upper bound is inf rather than NaN.
    """
    tail = (1.0 - confidence) / 2.0
    low, high = [], []
    for column in np.asarray(samples, dtype=float).reshape(samples.shape[0], -1).T:
        column = column[~np.isnan(column)]
        low.append(sample_quantile(column, tail))
        high.append(sample_quantile(column, 1.0 - tail))
    return np.asarray(low), np.asarray(high)


def bootstrap_tuned(table: pd.DataFrame, samples: int = 1000, confidence: float = 0.9, seed: int = 0,
                    resample_trials: bool = True, resample_seeds: bool = True) -> dict:
    """A percentile bootstrap of the steps to result, η*(m), B_crit and B_noise over seeds and trials.

    Each resample draws seeds and trial numbers with replacement (one draw shared by every batch size),
    recomputes the envelope (min over the drawn trials of the mean over the drawn seeds), and refits
    k(m) = S_min (1 + B_crit/m) and η*(m) = η_max/(1 + B_noise/m). Infinite values count as large
    (percentiles of inf are inf).

    Args:
      table: the trials of one strategy (filter `strategy` first), one row per (batch size, trial, seed).
      samples: the number of resamples.
      confidence: the coverage.
      seed: the seed of the resampling.
      resample_trials: False gives the seeds-only interval, to compare.
      resample_seeds: whether seeds are resampled.

    Returns:
      {"table": DataFrame(batch_size, k, k_low, k_high, lr, lr_low, lr_high), "B_crit", "B_crit_low",
      "B_crit_high", "B_noise", "B_noise_low", "B_noise_high", "n_resamples", "interval": a words
      description of what was resampled}.

    Raises:
      ValueError: for a table of several strategies.
    """
    if "strategy" in table.columns and table["strategy"].nunique() > 1:
        raise ValueError("bootstrap_tuned takes one strategy at a time; filter the table first")
    batch_sizes, cube, lrs = _k_cube(table)
    k_point, lr_point = _envelope(cube, lrs)
    rng = np.random.default_rng(seed)
    n_trials, n_seeds = cube.shape[1], cube.shape[2]
    k_samples = np.empty((samples, batch_sizes.size))
    lr_samples = np.empty((samples, batch_sizes.size))
    b_crit, b_noise = np.empty(samples), np.empty(samples)
    for index in range(samples):
        trials = rng.integers(0, n_trials, n_trials) if resample_trials else np.arange(n_trials)
        seeds = rng.integers(0, n_seeds, n_seeds) if resample_seeds else np.arange(n_seeds)
        k, lr = _envelope(cube[:, trials][:, :, seeds], lrs[:, trials])
        k_samples[index], lr_samples[index] = k, lr
        b_crit[index] = fit_critical_batch(batch_sizes, k)["B_crit"]
        b_noise[index] = fit_optimal_lr(batch_sizes, lr)["B_noise"]
    k_low, k_high = percentiles(k_samples, confidence)
    lr_low, lr_high = percentiles(lr_samples, confidence)
    result = {"table": pd.DataFrame({"batch_size": batch_sizes, "k": k_point, "k_low": k_low,
                                     "k_high": k_high, "lr": lr_point, "lr_low": lr_low,
                                     "lr_high": lr_high})}
    result["B_crit"] = fit_critical_batch(batch_sizes, k_point)["B_crit"]
    result["B_noise"] = fit_optimal_lr(batch_sizes, lr_point)["B_noise"]
    for name, values in (("B_crit", b_crit), ("B_noise", b_noise)):
        low, high = percentiles(values[:, None], confidence)
        result[f"{name}_low"], result[f"{name}_high"] = float(low[0]), float(high[0])
    result["n_resamples"] = int(samples)
    what = [word for word, on in (("seeds", resample_seeds), ("trials", resample_trials)) if on]
    result["interval"] = f"bootstrap over {' and '.join(what) or 'nothing'}, {confidence:.0%}"
    return result


# --------------------------------------------------------------------------------------------
# The threshold


def tuned_threshold(traces: pd.DataFrame, rule, value_column: str = "loss") -> dict:
    """ε of a tuned study: the fixed strategies' rule applied to the best trial of the largest batch size.

    The best trial of the largest batch is the one whose seeds end at the lowest mean final value (each
    seed's last finite value; a trial with a seed that has none is out), since the steps to ε cannot rank
    trials before ε is known. Its seeds' curves then go through the rule of the fixed strategies
    (`thresholds.study_thresholds`): each seed's curve resampled uniformly in steps, its quantile, and the
    largest of the per-seed quantiles, so every seed of that trial reaches ε. (Pooling the raw log-spaced
    evaluation points instead weights early training heavily and gave a looser ε than the fixed rules'.)

    Args:
      traces: a long table with columns batch_size, trial, seed, step and `value_column` (NaN past a run's
        end or after divergence).
      rule: the threshold rule (``{"fixed": v}`` returns v).
      value_column: the column of the traced values.

    Returns:
      {"eps", "batch_size", "trial"}.
    """
    largest = traces["batch_size"].max()
    at_largest = traces[traces["batch_size"] == largest]
    best = lowest_final_trial(at_largest, value_column)
    if best is None:
        return {"eps": math.nan, "batch_size": int(largest), "trial": -1}
    chosen = at_largest[at_largest["trial"] == best].sort_values("step")
    curves = [resample_uniform_in_steps(group["step"].to_numpy(dtype=float), group[value_column].to_numpy(dtype=float))
              for _, group in chosen.groupby("seed", sort=True)]
    curves = [curve for curve in curves if curve.size]
    return {"eps": threshold_from_seeds(curves, rule), "batch_size": int(largest), "trial": best}


def lowest_final_trial(at_size: pd.DataFrame, value_column: str = "loss") -> int | None:
    """The trial of one batch size whose seeds end at the lowest mean final value.

    Args:
      at_size: a long table (trial, seed, step, `value_column`) of one batch size.
      value_column: the column of the traced values.

    Returns:
      the trial (each seed's last finite value counts; a trial with a seed that has none is out); None when
      no trial has a final value for every seed.
    """
    finals = (at_size.sort_values("step").dropna(subset=[value_column])
              .groupby(["trial", "seed"])[value_column].last()
              .groupby("trial").agg(["mean", "count"]))
    seeds_per_trial = at_size.groupby("trial")["seed"].nunique()
    complete = finals[finals["count"] == seeds_per_trial.reindex(finals.index)]
    complete = complete[np.isfinite(complete["mean"])]
    return None if complete.empty else int(complete["mean"].idxmin())
