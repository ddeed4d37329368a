"""One curve: a strategy's metric at one threshold, from k per (batch size, seed) to its table rows and its
critical-batch entry. Shared by a study's tables (`study`), comparisons of studies (`comparison`) and sweeps
run elsewhere (`external`); the columns are documented in `batchscale.analysis.study`.

A study config needs these keys (`resolve_study` fills them from the cube and `DEFAULT_STUDY`): base_batch,
threshold, metrics, regimes {linear_efficiency, stagnation_gain}, bootstrap {samples, confidence},
critical_batch {overhead, max_log_rmse}, common_threshold. Bootstraps use numpy seed `BOOTSTRAP_SEED` (0),
so every table is deterministic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from batchscale.analysis.accessors import metric_values, run_status
from batchscale.analysis.critical import (
    critical_batch_bound,
    critical_batch_interval,
    mean_censoring_bound,
)
from batchscale.analysis.documents import json_safe
from batchscale.analysis.intervals import seed_interval, seed_mean
from batchscale.analysis.overhead import overhead_entry
from batchscale.analysis.speedup import (
    base_index,
    efficiency,
    ideal_speedup,
    interval_regimes,
    regime_boundaries,
    regimes,
    speedup,
    speedup_interval,
)
from batchscale.analysis.steps import k_per_run, last_steps
from batchscale.analysis.thresholds import LOWER_QUARTILE, unstable_runs

METRICS = ("train_loss", "test_loss", "test_error")
SPEEDUP_COLUMNS = (
    "strategy", "batch_size", "metric", "threshold", "threshold_scope", "threshold_rule",
    "threshold_batch_size", "base_batch", "k_mean", "k_low", "k_high", "interval_kind", "n_seeds",
    "n_reached", "n_diverged", "examples_to_threshold", "speedup", "speedup_low", "speedup_high",
    "speedup_interval_kind", "ideal_speedup", "efficiency", "regime", "status",
)
DEFAULT_STUDY = {
    "threshold": LOWER_QUARTILE,
    "metrics": list(METRICS),
    "regimes": {"linear_efficiency": 0.8, "stagnation_gain": 0.1},
    "bootstrap": {"samples": 1000, "confidence": 0.9},
    "critical_batch": {"overhead": 0.2, "max_log_rmse": 0.15},
    "common_threshold": "smallest",
    "k_smoothing_decades": 0.1,
}
BOOTSTRAP_SEED = 0
EXCLUDED_NOTE = ("a seed diverged, did not train or rose again (learning-rate instability), or has no step "
                 "count: k has no lower bound, so the size is left out of the fit rather than censored")


def resolve_study(cube, study) -> dict:
    """The study settings the tables need.

    Args:
      cube: a study cube (its ``study_config_json`` attribute is read when `study` is None), or None.
      study: the study config, or None.

    Returns:
      every key of `DEFAULT_STUDY` (nested mappings merged over the defaults) and ``base_batch`` (the
      config's, the cube's attribute, or else the smallest batch size of the cube).
    """
    resolved = {}
    if study is None and "study_config_json" in getattr(cube, "attrs", {}):
        study = json.loads(cube.attrs["study_config_json"])
    study = dict(study or {})
    for key, default in DEFAULT_STUDY.items():
        value = study.get(key, default)
        if isinstance(default, dict):
            value = {**default, **(value or {})}
        resolved[key] = value
    base = study.get("base_batch", getattr(cube, "attrs", {}).get("base_batch"))
    if base is None:
        base = int(np.min(cube["batch_size"].values))
    resolved["base_batch"] = int(base)
    return resolved


def seed_means(k: np.ndarray) -> np.ndarray:
    """k_mean per batch size: `intervals.seed_mean` of each row (NaN for a row without data).

    Args:
      k: k per (batch size, seed).

    Returns:
      one mean per batch size.
    """
    return np.array([seed_mean(row) if np.any(~np.isnan(row)) else np.nan for row in k])


def row_status(n_seeds: int, n_diverged: int, k_mean: float) -> str:
    """The status column of a speedup row.

    Args:
      n_seeds: seeds with data.
      n_diverged: seeds whose run diverged.
      k_mean: the seed mean of k.

    Returns:
      ``missing`` (no data), ``diverged`` (a seed diverged), ``not_reached`` (k_mean is inf) or ``completed``.
    """
    if n_seeds == 0:
        return "missing"
    if n_diverged:
        return "diverged"
    if np.isinf(k_mean):
        return "not_reached"
    return "completed"


def speedup_rows(batch_sizes, k_per_seed, status_per_seed, base_batch: int, regimes_cfg: dict,
                 bootstrap_cfg: dict) -> pd.DataFrame:
    """The speedup rows of one curve (one strategy and metric at one eps).

    Args:
      batch_sizes: the batch sizes m.
      k_per_seed: k per (batch size, seed) (steps; inf: not reached; NaN: missing).
      status_per_seed: run statuses of the same shape.
      base_batch: m0, one of the batch sizes.
      regimes_cfg: {linear_efficiency, stagnation_gain}.
      bootstrap_cfg: {samples, confidence}.

    Returns:
      a DataFrame with the columns of SPEEDUP_COLUMNS from batch_size to status, without the strategy,
      metric and threshold columns (`with_curve_columns` adds them).
    """
    m = np.asarray(batch_sizes, dtype=float)
    k = np.asarray(k_per_seed, dtype=float)
    status = np.asarray(status_per_seed, dtype=object)
    samples = int(bootstrap_cfg.get("samples", 1000))
    confidence = float(bootstrap_cfg.get("confidence", 0.9))
    base = base_index(m, base_batch)
    k_base_seeds = k[base]
    k_mean = seed_means(k)
    labels = regimes(m, k_mean, base_batch, float(regimes_cfg.get("linear_efficiency", 0.8)),
                     float(regimes_cfg.get("stagnation_gain", 0.1)))
    k_base = k_mean[base]
    rows = []
    # the interval of e(m) is the speedup's scaled by m0/m; no interval with one seed (the point decides)
    for i, size in enumerate(m):
        k_int = seed_interval(k[i], samples, confidence, BOOTSTRAP_SEED)
        s_int = speedup_interval(k[i], k_base_seeds, samples, confidence, BOOTSTRAP_SEED)
        n_seeds = int(np.sum(~np.isnan(k[i])))
        n_diverged = int(np.sum(status[i] == "diverged"))
        rows.append({
            "batch_size": int(size),
            "base_batch": int(base_batch),
            "k_mean": float(k_mean[i]),
            "k_low": k_int["low"],
            "k_high": k_int["high"],
            "interval_kind": k_int["interval_kind"],
            "n_seeds": n_seeds,
            "n_reached": int(np.sum(np.isfinite(k[i]))),
            "n_diverged": n_diverged,
            "examples_to_threshold": float(size * k_mean[i]) if n_seeds else float("nan"),
            "speedup": float(speedup(k_mean[i], k_base)),
            "speedup_low": s_int["low"],
            "speedup_high": s_int["high"],
            "speedup_interval_kind": s_int["interval_kind"],
            "ideal_speedup": float(ideal_speedup(size, base_batch)),
            "efficiency": float(efficiency(k_mean[i], k_base, size, base_batch)),
            "regime": labels[i],
            "status": row_status(n_seeds, n_diverged, k_mean[i]),
        })
    table = pd.DataFrame(rows)
    low = table["speedup_low"].to_numpy(dtype=float) * float(base_batch) / m
    table["regime"] = interval_regimes(labels, m, table["efficiency"], low, k_base,
                                       float(regimes_cfg.get("linear_efficiency", 0.8)),
                                       ~table["speedup_interval_kind"].str.startswith("none").to_numpy())
    return table


def quantity(fit: dict, name: str, kind: str) -> dict:
    """A fitted quantity with its interval: ``{"estimate", "low", "high", "interval_kind"}``."""
    return {"estimate": fit[name], "low": fit[f"{name}_low"], "high": fit[f"{name}_high"], "interval_kind": kind}


def excluded_sizes(batch_sizes: np.ndarray, k: np.ndarray, k_mean: np.ndarray, steps_per_seed) -> dict:
    """The batch sizes the fit leaves out, with why.

    Args:
      batch_sizes: the batch sizes m.
      k: k per (batch size, seed).
      k_mean: its seed means.
      steps_per_seed: the steps each run ran (None: unknown).

    Returns:
      {str(m): reason} for every size never reached whose k has no censoring bound.
    """
    excluded = {}
    steps = None if steps_per_seed is None else np.asarray(steps_per_seed, dtype=float).reshape(k.shape)
    for i, size in enumerate(batch_sizes):
        if np.isposinf(k_mean[i]):
            bound = mean_censoring_bound(k[i], steps[i]) if steps is not None else float("nan")
            if not np.isfinite(bound):
                excluded[str(int(size))] = EXCLUDED_NOTE
    return excluded


def critical_note(fit: dict, bound: str | None, report: str | None, meaningful: bool, max_log_rmse: float):
    """Why a curve's fit is not drawn, in words; None when it is."""
    if fit["n_points"] < 3:
        return f"only {fit['n_points']} batch size(s) reached the threshold; the fit needs 3"
    if np.isfinite(fit["log_rmse"]) and fit["log_rmse"] > max_log_rmse:
        return (f"log-RMSE {fit['log_rmse']:.3g} above {max_log_rmse:g}: the hyperbola is rejected (it does not "
                "describe k(m)); the fit is not drawn, the overhead-based critical batch stands")
    if math.isinf(fit["B_crit"]):
        return "S_min fitted as 0: k still falls as 1/m, the critical batch size is above the range"
    if bound is not None:
        return f"B_crit {report}: outside the measured range, reported as a bound"
    if not meaningful:
        return "the fit is not drawn"
    return None


def critical_entry(batch_sizes, k_per_seed, regime_labels, bootstrap_cfg: dict, steps_per_seed=None,
                   base_batch=None, critical_cfg: dict | None = None) -> dict:
    """The critical-batch entry of one curve, JSON-safe.

    Args:
      batch_sizes: the batch sizes m.
      k_per_seed: k per (batch size, seed) (or one series per batch size).
      regime_labels: the curve's regimes (`speedup.regimes`).
      bootstrap_cfg: {samples, confidence}.
      steps_per_seed: the steps each run ran, for censoring (None: nothing censored).
      base_batch: m0 (default: the smallest batch size).
      critical_cfg: {overhead, max_log_rmse} over DEFAULT_STUDY's.

    Returns:
      the censored log-space fit with its log-RMSE and intervals (kind by seed count), B_crit as a bound
      when outside the measured range, whether the fit is meaningful (drawn), the overhead-based critical
      batch (directly and from the fit) and the regime boundaries; layout in `batchscale.analysis.study`.
    """
    cfg = {**DEFAULT_STUDY["critical_batch"], **(critical_cfg or {})}
    m = np.asarray(batch_sizes, dtype=float)
    k = np.asarray(k_per_seed, dtype=float)
    if k.ndim == 1:
        k = k[:, None]
    fit = critical_batch_interval(m, k, steps_per_seed, int(bootstrap_cfg.get("samples", 1000)),
                                  float(bootstrap_cfg.get("confidence", 0.9)), BOOTSTRAP_SEED)
    kind = fit["interval_kind"]
    bounds = regime_boundaries(batch_sizes, regime_labels)
    k_mean = seed_means(k)
    reached = m[np.isfinite(k_mean) & (k_mean > 0)]
    measured = m[~np.isnan(k_mean)]
    where = critical_batch_bound(fit["B_crit"], measured.min() if measured.size else float("nan"),
                                 reached.max() if reached.size else float("nan"))
    b_crit = quantity(fit, "B_crit", kind)
    b_crit.update(where)
    meaningful = bool(np.isfinite(fit["S_min"]) and fit["S_min"] > 0 and where["bound"] is None
                      and np.isfinite(fit["log_rmse"]) and fit["log_rmse"] <= float(cfg["max_log_rmse"]))
    # a hyperbola that misses k(m) by more than the cut-off is rejected, bound or not: its B_crit is kept for
    # the figures (drawn hollow) but the summary reports it as rejected, the overhead-based batch first
    b_crit["rejected"] = bool(np.isfinite(fit["log_rmse"]) and fit["log_rmse"] > float(cfg["max_log_rmse"]))
    base = float(base_batch if base_batch is not None else m.min())
    entry = {
        "B_crit": b_crit,
        "S_min": quantity(fit, "S_min", kind),
        "E_min": quantity(fit, "E_min", kind),
        "interval_kind": kind,
        "n_seeds": fit["n_seeds"],
        "log_rmse": fit["log_rmse"],
        "n_points": fit["n_points"],
        "n_censored": fit["n_censored"],
        "excluded": excluded_sizes(m, k, k_mean, steps_per_seed),
        "n_resamples": fit["n_resamples"],
        "fit_meaningful": meaningful,
        "measured_range": [float(measured.min()) if measured.size else None,
                           float(reached.max()) if reached.size else None],
        "overhead_critical_batch": overhead_entry(m, k, k_mean, fit, base, float(cfg["overhead"]), bootstrap_cfg,
                                                  BOOTSTRAP_SEED),
        "largest_linear_batch_size": bounds["largest_linear"],
        "first_stagnation_batch_size": bounds["first_stagnation"],
    }
    note = critical_note(fit, where["bound"], where["report"], meaningful, float(cfg["max_log_rmse"]))
    if note is not None:
        entry["note"] = note
    return json_safe(entry)


def k_at(cube, strategy: str, metric: str, eps: float):
    """k of one strategy's curve at a threshold.

    Args:
      cube: a study cube.
      strategy: a strategy of the cube.
      metric: a metric (`accessors.metric_values`).
      eps: the threshold.

    Returns:
      (batch sizes, k (batch x seed), status (batch x seed), last step of each completed run).
    """
    sizes = np.asarray(cube["batch_size"].values, dtype=np.int64)
    per = metric_values(cube, metric).sel(strategy=strategy).transpose("batch_size", "seed", "step")
    stat = run_status(cube).sel(strategy=strategy).transpose("batch_size", "seed")
    k = k_per_run(per, eps, stat).transpose("batch_size", "seed").values
    # an unstable run (did not train, or rose again) would never reach eps: no censoring bound, left out
    stable = ~unstable_runs(per.values)
    last = np.where((stat.values.astype(str) == "completed") & stable, last_steps(per, cube["step"].values), np.nan)
    return sizes, k, stat.values, last


def source_check(k, sizes, source) -> bool | None:
    """Whether every seed with data at the source batch size reached eps.

    Args:
      k: k per (batch size, seed).
      sizes: the batch sizes.
      source: the source batch size (None for a fixed rule).

    Returns:
      True when every such seed has a finite k; None without a source.
    """
    if source is None:
        return None
    row = np.asarray(k, dtype=float)[list(np.asarray(sizes)).index(source)]
    row = row[~np.isnan(row)]
    return bool(row.size and np.all(np.isfinite(row)))


def with_curve_columns(rows, strategy, metric, eps, rule_text, source, scope):
    """`speedup_rows` with the columns that name the curve (strategy, metric, threshold, ...) inserted.

    Args:
      rows: the curve's speedup rows.
      strategy: its strategy.
      metric: its metric.
      eps: its threshold.
      rule_text: the threshold rule (`thresholds.describe_threshold_rule`).
      source: the source batch size of eps (None: none).
      scope: ``strategy``, ``common``, ``study`` or ``given``.

    Returns:
      `rows`, with the columns in SPEEDUP_COLUMNS' order.
    """
    rows.insert(0, "strategy", strategy)
    rows.insert(2, "metric", metric)
    rows.insert(3, "threshold", eps)
    rows.insert(4, "threshold_scope", scope)
    rows.insert(5, "threshold_rule", rule_text)
    rows.insert(6, "threshold_batch_size", pd.array([source] * len(rows), dtype="Int64"))
    return rows
