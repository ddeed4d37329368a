"""Study tables: thresholds, iterations to threshold, speedup, regimes, critical batch size, accuracy and
linear approximation error. Every number the figures draw is computed here, once, and written to a file.

Inputs: a study cube (xarray Dataset, dims strategy, batch_size, seed, step; see docs/contracts.md) and the
resolved study config (keys used: base_batch, threshold, metrics, regimes {linear_efficiency,
stagnation_gain}, bootstrap {samples, confidence}, critical_batch {overhead, max_log_rmse}). Outputs,
written by `write_study_tables`:

``speedup.csv`` (each strategy at its own eps) and ``speedup_common.csv`` (every strategy at the metric's
common eps, for overlays and comparisons) -- tidy, one row per strategy x batch size x metric:

==========================  =====================================================================
column                      meaning (unit)
==========================  =====================================================================
strategy                    learning-rate strategy (blr, lsr, srsr, longer)
batch_size                  m (examples per step)
metric                      train_loss, test_loss or test_error (= 1 - test accuracy, a fraction)
threshold                   eps, in the metric's unit (loss in nats, error as a fraction)
threshold_scope             ``strategy`` (the strategy's own eps) or ``common`` (the metric's common eps:
                            by default the smallest of the strategies' own eps, see `common_threshold`)
threshold_rule              lower_quartile_of_largest, quantile_of_largest:q or fixed:v
threshold_batch_size        the strategy's source batch size: the largest at which every seed completed and trained
                            (empty for fixed rules)
base_batch                  m0, the batch size speedups are relative to (examples per step)
k_mean                      mean over seeds of k(m; eps), iterations to threshold (steps); inf if any
                            seed never reached eps
k_low, k_high               interval of k_mean over seeds (steps), of the kind in interval_kind
interval_kind               percentile_bootstrap (>= 5 seeds), student_t (2-4 seeds), none (1 seed:
                            no interval, the bounds are empty)
n_seeds                     seeds with data (missing runs excluded)
n_reached                   seeds that reached eps (finite k)
n_diverged                  seeds whose run diverged
examples_to_threshold       m * k_mean (examples)
speedup                     k_mean(m0) / k_mean(m) (dimensionless); empty when m or m0 never reached eps
speedup_low, speedup_high   interval of the speedup (paired bootstrap from 5 seeds; with 2-4 seeds a
                            Student-t interval of the per-seed log speedups, exponentiated)
speedup_interval_kind       kind of that interval
ideal_speedup               m / m0
efficiency                  k(m0) m0 / (k(m) m) (1 = linear scaling); empty when never reached
regime                      base (m0), linear, diminishing, stagnation, not_reached, trivial (k = 0:
                            eps met at step 0), missing (see measurements.regimes)
status                      diverged (any seed diverged), not_reached (k_mean is inf: some seed never
                            reached eps), completed, or missing (no data)
==========================  =====================================================================

Not-reached and diverged rows are kept, never dropped: pandas reads ``inf`` back as float infinity and
empty cells as NaN. Bootstraps use numpy seed 0 (deterministic), at the study's ``bootstrap.confidence``.

Thresholds: a quantile rule is applied per strategy and metric to the source batch size (the largest at
which every seed completed): the q-quantile of each seed's curve, resampled uniformly in steps (the
evaluation grid is log-spaced; the paper weights every stretch of training alike), and eps is the largest
of those per-seed quantiles, so every seed of the source batch reaches eps (checked, and written as
``source_seeds_all_reached`` in critical_batch.json). Per-strategy panels use each strategy's own eps;
wherever strategies are compared (overlays, comparisons) one common eps per metric is used: by default
(``common_threshold: smallest``) the strictest of the strategies' own eps, so a strategy that stalls at
large batch sizes shows as not reached there; ``largest`` takes the loosest, which every strategy's source
batch reaches.

``critical_batch.json`` -- ``thresholds`` {metric: {strategies: {strategy: {threshold, source_batch_size,
source_seeds_all_reached}}, common}}; ``strategies`` {strategy: {metric: entry}} at the strategy's own eps;
``common`` {metric: {threshold, strategies: {strategy: entry}}} at the common eps. An entry holds B_crit,
S_min, E_min (each {estimate, low, high, interval_kind}; B_crit also {bound: below_range | above_range |
null, report: "< 4" | "> 256" | value}), log_rmse of the fit, n_points, n_censored, excluded {m: reason},
fit_meaningful (inside the measured range and log_rmse <= critical_batch.max_log_rmse: only then is the fit
drawn), measured_range, overhead_critical_batch {overhead, direct {estimate, low, high, interval_kind,
bound, report}, from_fit {estimate, low, high, interval_kind}} and the regime boundaries
largest_linear_batch_size (null when only m0 qualifies) and first_stagnation_batch_size; ``null`` marks a
quantity that cannot be estimated.

``accuracy.csv`` / ``accuracy.md`` -- the paper's Table 2 with the final train loss and train accuracy beside
the final test accuracy (so under-training and a generalization gap can be told apart): columns strategy,
batch_size, test_acc_mean_pct, test_acc_sd_pct, train_acc_mean_pct, train_acc_sd_pct, train_loss_mean,
train_loss_sd (nats), n_seeds, n_diverged (sd over seeds, ddof=1, empty for one seed).

``linear_error.csv`` -- the linear approximation error (paper Fig. 2 right) per strategy, batch size and
point: ``at_threshold`` (the evaluation point nearest, in log step, to where the run first reaches its
strategy's train-loss eps), ``warmup_end`` and ``final`` (the final weights, or a diverged run's last finite
weights); columns strategy, batch_size, point, absolute_mean, absolute_sd (nats), relative_mean,
relative_sd (divided by |L(w) - L(w*)|), n_seeds, available (false when the traces do not hold that
measurement: the values are then empty).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from batchscale.analysis.critical import (
    critical_batch_bound,
    critical_batch_interval,
    mean_censoring_bound,
    overhead_batch_direct,
    overhead_batch_from_fit,
)
from batchscale.analysis.intervals import seed_interval, seed_mean
from batchscale.analysis.speedup import (
    efficiency,
    ideal_speedup,
    regime_boundaries,
    regimes,
    speedup,
    speedup_interval,
)
from batchscale.analysis.steps import k_for_run, k_per_run
from batchscale.analysis.thresholds import (
    LOWER_QUARTILE,
    describe_threshold_rule,
    parse_threshold_rule,
    resample_uniform_in_steps,
    threshold_from_seeds,
)
from batchscale.analysis import tuned_tables
from batchscale.analysis.accessors import last_finite, metric_values, run_status  # noqa: F401 (public here too)

METRICS = ("train_loss", "test_loss", "test_error")

SPEEDUP_COLUMNS = (
    "strategy", "batch_size", "metric", "threshold", "threshold_scope", "threshold_rule",
    "threshold_batch_size", "base_batch", "k_mean", "k_low", "k_high", "interval_kind", "n_seeds",
    "n_reached", "n_diverged", "examples_to_threshold", "speedup", "speedup_low", "speedup_high",
    "speedup_interval_kind", "ideal_speedup", "efficiency", "regime", "status",
)
ACCURACY_COLUMNS = ("strategy", "batch_size", "test_acc_mean_pct", "test_acc_sd_pct", "train_acc_mean_pct",
                    "train_acc_sd_pct", "train_loss_mean", "train_loss_sd", "n_seeds", "n_diverged")
LINEAR_ERROR_COLUMNS = ("strategy", "batch_size", "point", "absolute_mean", "absolute_sd", "relative_mean",
                        "relative_sd", "n_seeds", "available")
LINEAR_ERROR_POINTS = ("at_threshold", "warmup_end", "final")

DEFAULT_STUDY = {
    "threshold": LOWER_QUARTILE,
    "metrics": list(METRICS),
    "regimes": {"linear_efficiency": 0.8, "stagnation_gain": 0.1},
    "bootstrap": {"samples": 1000, "confidence": 0.9},
    "critical_batch": {"overhead": 0.2, "max_log_rmse": 0.25},
    "common_threshold": "smallest",
}
BOOTSTRAP_SEED = 0

INTERVAL_NOTE = (
    "percentile_bootstrap: over seeds, from 5 seeds; student_t: a Student-t interval over seeds (2-4 seeds; "
    "for a fit, of the per-seed fits); residual_bootstrap: one series, the fit's log residuals resampled; "
    "none: no interval (its bounds are null).")
NULL_NOTE = (
    "null marks a value that cannot be estimated: fewer than 3 batch sizes reached the threshold (no fit), "
    "S_min fitted as 0 so B_crit is infinite (k still falls as 1/m over the measured range: the critical "
    "batch size lies above it), an interval bound that is infinite or not computed (see interval_kind), or "
    "a regime that does not occur in the measured batch sizes.")


# --------------------------------------------------------------------------------------------
# Study config and thresholds


def resolve_study(cube, study) -> dict:
    """Fill the keys the tables need from the cube attributes and defaults."""
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


def _seed_curves(per_strategy, steps) -> list:
    """Each seed's curve at one batch size, resampled uniformly in steps (NaN-only curves dropped)."""
    curves = []
    seeds = per_strategy["seed"].values if "seed" in per_strategy.dims else [None]
    for seed in seeds:
        curve = per_strategy if seed is None else per_strategy.sel(seed=seed)
        values = np.asarray(curve.values, dtype=float)
        if np.isfinite(values).any():
            curves.append(resample_uniform_in_steps(steps, values))
    return curves


# A batch size whose runs end less than 10% below where they started has not trained (a rate too large that
# neither diverges nor learns): the lower quartile of its values would measure the escape from initialisation.
TRAINED_DROP = 0.1


def _trained(curves) -> bool:
    """Whether every seed's last finite value is at least TRAINED_DROP below its first (values (seed, step))."""
    for curve in np.atleast_2d(np.asarray(curves, dtype=float)):
        finite = curve[np.isfinite(curve)]
        if finite.size and not finite[-1] <= (1.0 - TRAINED_DROP) * finite[0]:
            return False
    return True


def threshold_source_batch(status_of_strategy, values_of_strategy):
    """The batch size whose curves set a quantile threshold: the largest at which every seed with data
    completed (none diverged, none missing among seeds that have data) and trained (`_trained`: each seed
    ends at least 10% below its first value). None when there is none."""
    best = None
    for size in values_of_strategy["batch_size"].values:
        stat = np.atleast_1d(np.asarray(status_of_strategy.sel(batch_size=size).values).astype(str))
        present = stat != "missing"
        if (present.any() and np.all(stat[present] == "completed")
                and _trained(values_of_strategy.sel(batch_size=size).transpose("seed", "step").values)):
            best = int(size) if best is None else max(best, int(size))
    return best


def study_thresholds(cube, metric: str, rule) -> dict:
    """eps per strategy: ``{strategy: (threshold, source batch size or None)}``.

    Quantile rules use each strategy's source batch size (`threshold_source_batch`: the largest batch size
    at which every seed completed and trained), each seed's curve resampled uniformly in steps
    (`measurements.resample_uniform_in_steps`: the evaluation grid is log-spaced, and the paper weights
    every stretch of training alike); eps is the largest of the per-seed quantiles
    (`measurements.threshold_from_seeds`), so every seed of the source batch reaches it.
    """
    values = metric_values(cube, metric)
    status = run_status(cube)
    parsed = parse_threshold_rule(rule)
    strategies = [str(s) for s in cube["strategy"].values]
    if parsed["kind"] == "fixed":
        return {s: (float(parsed["value"]), None) for s in strategies}
    steps = cube["step"].values
    out = {}
    for strategy in strategies:
        per_strategy = values.sel(strategy=strategy)
        source = threshold_source_batch(status.sel(strategy=strategy), per_strategy)
        if source is None:
            out[strategy] = (float("nan"), None)
            continue
        curves = _seed_curves(per_strategy.sel(batch_size=source), steps)
        out[strategy] = (threshold_from_seeds(curves, rule), source)
    return out


COMMON_THRESHOLD_CHOICES = ("largest", "smallest")


def common_threshold(thresholds: dict, choice: str = "smallest") -> float:
    """The common eps of a metric where strategies (or studies) are compared, from their own eps
    (`thresholds` {name: eps or (eps, source)}). ``smallest`` (default): the strictest target any curve
    sets; a curve whose own eps is looser may never reach it at large batch sizes (shown as not reached),
    which is the finding (BLR stalls where LSR goes on). ``largest``: every seed of every curve's source
    batch reaches it, but it can be so loose that large batches reach it within a few steps, where
    speedups say little. NaN if none."""
    if choice not in COMMON_THRESHOLD_CHOICES:
        raise ValueError(f"common_threshold {choice!r} is not allowed; use {' or '.join(COMMON_THRESHOLD_CHOICES)}")
    values = [float(v[0] if isinstance(v, (tuple, list)) else v) for v in thresholds.values()]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return float("nan")
    return max(values) if choice == "largest" else min(values)


# --------------------------------------------------------------------------------------------
# Rows from k per seed (shared with the external-CSV backend)


def speedup_rows(batch_sizes, k_per_seed, status_per_seed, base_batch: int, regimes_cfg: dict,
                 bootstrap_cfg: dict) -> pd.DataFrame:
    """Speedup rows for one curve (one strategy and metric).

    `k_per_seed` has shape (batch size, seed) (steps; inf = not reached, NaN = missing),
    `status_per_seed` the same shape of run statuses. Returns a DataFrame with the columns of
    SPEEDUP_COLUMNS from batch_size to status (no strategy/metric/threshold columns).
    """
    m = np.asarray(batch_sizes, dtype=float)
    k = np.asarray(k_per_seed, dtype=float)
    status = np.asarray(status_per_seed, dtype=object)
    samples = int(bootstrap_cfg.get("samples", 1000))
    confidence = float(bootstrap_cfg.get("confidence", 0.9))
    where_base = np.flatnonzero(m == float(base_batch))
    if where_base.size == 0:
        raise ValueError(f"base batch {base_batch} is not one of the batch sizes {m.astype(np.int64).tolist()}")
    k_base_seeds = k[where_base[0]]
    k_mean = np.array([seed_mean(row) if np.any(~np.isnan(row)) else np.nan for row in k])
    labels = regimes(m, k_mean, base_batch, float(regimes_cfg.get("linear_efficiency", 0.8)),
                        float(regimes_cfg.get("stagnation_gain", 0.1)))
    k_base = k_mean[where_base[0]]
    rows = []
    for i, size in enumerate(m):
        k_int = seed_interval(k[i], samples, confidence, BOOTSTRAP_SEED)
        s_int = speedup_interval(k[i], k_base_seeds, samples, confidence, BOOTSTRAP_SEED)
        n_seeds = int(np.sum(~np.isnan(k[i])))
        n_diverged = int(np.sum(status[i] == "diverged"))
        if n_seeds == 0:
            row_status = "missing"
        elif n_diverged:
            row_status = "diverged"
        elif np.isinf(k_mean[i]):
            row_status = "not_reached"
        else:
            row_status = "completed"
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
            "status": row_status,
        })
    return pd.DataFrame(rows)


def _quantity(fit: dict, name: str, kind: str) -> dict:
    return {"estimate": fit[name], "low": fit[f"{name}_low"], "high": fit[f"{name}_high"], "interval_kind": kind}


def critical_entry(batch_sizes, k_per_seed, regime_labels, bootstrap_cfg: dict, steps_per_seed=None,
                   status_per_seed=None, base_batch=None, critical_cfg: dict | None = None) -> dict:
    """One JSON-safe critical-batch entry for a curve: the censored log-space fit with its log-RMSE and
    intervals (kind by seed count), B_crit as a bound when outside the measured range, whether the fit is
    meaningful (drawn), the overhead-based critical batch (directly and from the fit), regime boundaries."""
    cfg = {**DEFAULT_STUDY["critical_batch"], **(critical_cfg or {})}
    samples = int(bootstrap_cfg.get("samples", 1000))
    confidence = float(bootstrap_cfg.get("confidence", 0.9))
    m = np.asarray(batch_sizes, dtype=float)
    k = np.asarray(k_per_seed, dtype=float)
    if k.ndim == 1:
        k = k[:, None]
    fit = critical_batch_interval(m, k, steps_per_seed, samples, confidence, BOOTSTRAP_SEED)
    kind = fit["interval_kind"]
    bounds = regime_boundaries(batch_sizes, regime_labels)
    k_mean = np.array([seed_mean(row) if np.any(~np.isnan(row)) else np.nan for row in k])
    reached = m[np.isfinite(k_mean) & (k_mean > 0)]
    measured = m[~np.isnan(k_mean)]
    excluded = {}
    steps = None if steps_per_seed is None else np.asarray(steps_per_seed, dtype=float).reshape(k.shape)
    for i, size in enumerate(m):
        if np.isposinf(k_mean[i]):
            bound = mean_censoring_bound(k[i], steps[i]) if steps is not None else float("nan")
            if not np.isfinite(bound):
                excluded[str(int(size))] = ("a seed diverged or has no step count: k has no lower bound, so "
                                            "the size is left out rather than censored")
    where = critical_batch_bound(fit["B_crit"], measured.min() if measured.size else float("nan"),
                                    reached.max() if reached.size else float("nan"))
    b_crit = _quantity(fit, "B_crit", kind)
    b_crit.update(where)
    meaningful = bool(np.isfinite(fit["S_min"]) and fit["S_min"] > 0 and where["bound"] is None
                      and np.isfinite(fit["log_rmse"]) and fit["log_rmse"] <= float(cfg["max_log_rmse"]))
    overhead = float(cfg["overhead"])
    base = float(base_batch if base_batch is not None else m.min())
    direct = overhead_batch_direct(m, k_mean, base, overhead)
    per_seed = [overhead_batch_direct(m, k[:, j], base, overhead)["estimate"] for j in range(k.shape[1])
                if np.any(~np.isnan(k[:, j]))]
    direct_int = seed_interval(per_seed, samples, confidence, BOOTSTRAP_SEED)
    direct.update({"low": direct_int["low"], "high": direct_int["high"],
                   "interval_kind": direct_int["interval_kind"] if len(per_seed) == direct_int["n"] else "none"})
    if direct["interval_kind"] == "none":
        direct["low"] = direct["high"] = None
    from_fit = {
        "estimate": overhead_batch_from_fit(fit["S_min"], fit["B_crit"], base, overhead),
        "low": overhead_batch_from_fit(fit["S_min"], fit["B_crit_low"], base, overhead),
        "high": overhead_batch_from_fit(fit["S_min"], fit["B_crit_high"], base, overhead),
        "interval_kind": kind,
    }
    entry = {
        "B_crit": b_crit,
        "S_min": _quantity(fit, "S_min", kind),
        "E_min": _quantity(fit, "E_min", kind),
        "interval_kind": kind,
        "n_seeds": fit["n_seeds"],
        "log_rmse": fit["log_rmse"],
        "n_points": fit["n_points"],
        "n_censored": fit["n_censored"],
        "excluded": excluded,
        "n_resamples": fit["n_resamples"],
        "fit_meaningful": meaningful,
        "measured_range": [float(measured.min()) if measured.size else None,
                           float(reached.max()) if reached.size else None],
        "overhead_critical_batch": {"overhead": overhead, "direct": direct, "from_fit": from_fit},
        "largest_linear_batch_size": bounds["largest_linear"],
        "first_stagnation_batch_size": bounds["first_stagnation"],
    }
    if fit["n_points"] < 3:
        entry["note"] = f"only {fit['n_points']} batch size(s) reached the threshold; the fit needs 3"
    elif math.isinf(fit["B_crit"]):
        entry["note"] = "S_min fitted as 0: k still falls as 1/m, the critical batch size is above the range"
    elif where["bound"] is not None:
        entry["note"] = f"B_crit {where['report']}: outside the measured range, reported as a bound"
    elif not meaningful:
        entry["note"] = (f"log-RMSE {fit['log_rmse']:.3g} above {cfg['max_log_rmse']:g}: the model does not "
                         "describe k(m); the fit is not drawn")
    return json_safe(entry)


def json_safe(obj):
    """Replace NaN/inf floats by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------------------------
# Cube analysis


def _last_steps(values, steps) -> np.ndarray:
    """Last step with a finite value, per run (batch_size x seed): how far a run that never reached eps was
    followed (its k is larger than that)."""
    data = np.asarray(values.transpose("batch_size", "seed", "step").values, dtype=float)
    steps = np.asarray(steps, dtype=float)
    out = np.full(data.shape[:2], np.nan)
    for index in np.ndindex(out.shape):
        finite = np.isfinite(data[index])
        if finite.any():
            out[index] = steps[finite].max()
    return out


def k_at(cube, strategy: str, metric: str, eps: float):
    """(batch sizes, k (batch x seed), status (batch x seed), last step of each completed run) of one
    strategy's `metric` at threshold `eps`."""
    sizes = np.asarray(cube["batch_size"].values, dtype=np.int64)
    per = metric_values(cube, metric).sel(strategy=strategy).transpose("batch_size", "seed", "step")
    stat = run_status(cube).sel(strategy=strategy).transpose("batch_size", "seed")
    k = k_per_run(per, eps, stat).transpose("batch_size", "seed").values
    last = np.where(stat.values.astype(str) == "completed", _last_steps(per, cube["step"].values), np.nan)
    return sizes, k, stat.values, last


def metric_thresholds(cube, study: dict, metric: str):
    """({strategy: (eps, source batch)}, common eps) of a metric; a cube with tuned trials adds ``tuned``
    (its own eps: the rule applied to the best trial of the largest batch), which takes part in the common
    eps like any strategy."""
    thresholds = study_thresholds(cube, metric, study["threshold"])
    if tuned_tables.has_tuned(cube):
        own = tuned_tables.own_threshold(cube, metric, study["threshold"])
        thresholds[tuned_tables.TUNED] = (own["eps"], own)
    return thresholds, common_threshold(thresholds, study["common_threshold"])


def tuned_entry_builder(study: dict):
    """The `entry_of` that `tuned_tables.tuned_at` takes: `critical_entry` with the study's settings."""
    def entry_of(sizes, k, labels, status):
        return critical_entry(sizes, k, labels, study["bootstrap"], None, status, study["base_batch"],
                              study["critical_batch"])
    return entry_of


def tuned_analysis(cube, study: dict) -> dict:
    """tuned.csv and tuned_trials.csv frames and the tuned critical-batch entries {scope: {metric: entry}}."""
    entry_of = tuned_entry_builder(study)
    rows, trials, entries = [], [], {"strategy": {}, "common": {}}
    for metric in study["metrics"]:
        thresholds, common = metric_thresholds(cube, study, metric)
        own, source = thresholds[tuned_tables.TUNED]
        for scope, eps in (("strategy", own), ("common", common)):
            if not np.isfinite(eps):
                continue
            got = tuned_tables.tuned_at(cube, study, metric, eps, scope, source, entry_of)
            rows.append(got["rows"])
            trials.append(got["trials"])
            entries[scope][metric] = got["entry"]
    return {"tuned": pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(tuned_tables.TUNED_COLUMNS)),
            "tuned_trials": pd.concat(trials, ignore_index=True) if trials else
            pd.DataFrame(columns=list(tuned_tables.TRIAL_COLUMNS)),
            "entries": entries}


def _curves(cube, study: dict, scope: str = "strategy"):
    """Yield (strategy, metric, eps, source batch, batch sizes, k (batch x seed), status, last steps)
    at each strategy's own eps (`scope` ``strategy``) or at the metric's common eps (``common``)."""
    for metric in study["metrics"]:
        thresholds, common = metric_thresholds(cube, study, metric)
        thresholds.pop(tuned_tables.TUNED, None)
        for strategy in [str(s) for s in cube["strategy"].values]:
            eps, source = thresholds[strategy]
            if scope == "common":
                eps = common
            yield (strategy, metric, eps, source) + k_at(cube, strategy, metric, eps)


def source_check(k, sizes, source) -> bool | None:
    """Whether every seed with data at the source batch size reached eps (finite k); None without a source."""
    if source is None:
        return None
    row = np.asarray(k, dtype=float)[list(np.asarray(sizes)).index(source)]
    row = row[~np.isnan(row)]
    return bool(row.size and np.all(np.isfinite(row)))


def critical_document(study: dict, threshold_rule: str, entries: dict, common: dict | None = None,
                      thresholds: dict | None = None) -> dict:
    """The critical_batch.json document around per-strategy entries (see `critical_batch_summary`)."""
    return json_safe({
        "model": "k(m) = S_min * (1 + B_crit / m); E_min = S_min * B_crit (McCandlish et al. 2018), fitted in "
                 "log space with never-reached batch sizes as censored",
        "units": {"B_crit": "examples per step", "S_min": "steps", "E_min": "examples",
                  "overhead_critical_batch": "examples per step", "log_rmse": "natural log of steps",
                  "largest_linear_batch_size": "examples per step",
                  "first_stagnation_batch_size": "examples per step"},
        "base_batch": int(study["base_batch"]),
        "threshold_rule": threshold_rule,
        "confidence": float(study["bootstrap"]["confidence"]),
        "bootstrap_samples": int(study["bootstrap"]["samples"]),
        "interval_kinds": INTERVAL_NOTE,
        "regimes": {k: float(v) for k, v in study["regimes"].items()},
        "common_threshold": study.get("common_threshold", "smallest"),
        "critical_batch": {k: float(v) for k, v in study["critical_batch"].items()},
        "null": NULL_NOTE,
        "thresholds": thresholds or {},
        "strategies": entries,
        "common": common or {},
    })


def with_curve_columns(rows, strategy, metric, eps, rule_text, source, scope):
    rows.insert(0, "strategy", strategy)
    rows.insert(2, "metric", metric)
    rows.insert(3, "threshold", eps)
    rows.insert(4, "threshold_scope", scope)
    rows.insert(5, "threshold_rule", rule_text)
    rows.insert(6, "threshold_batch_size", pd.array([source] * len(rows), dtype="Int64"))
    return rows


def analyse_cube(cube, study=None) -> dict:
    """Every number of a study, computed once: ``{"speedup": DataFrame at each strategy's own eps,
    "speedup_common": DataFrame at each metric's common eps, "critical_batch": dict}`` (columns and layout
    in the module docstring). `study` is the study config; None reads it from the cube."""
    study = resolve_study(cube, study)
    rule_text = describe_threshold_rule(study["threshold"])
    out = {}
    summary, common_entries, thresholds = {}, {}, {}
    for scope in ("strategy", "common"):
        frames = []
        for strategy, metric, eps, source, sizes, k, stat, last in _curves(cube, study, scope):
            rows = speedup_rows(sizes, k, stat, study["base_batch"], study["regimes"], study["bootstrap"])
            frames.append(with_curve_columns(rows, strategy, metric, eps, rule_text, source, scope))
            entry = critical_entry(sizes, k, rows["regime"].tolist(), study["bootstrap"], last, stat,
                                   study["base_batch"], study["critical_batch"])
            if scope == "strategy":
                reached = source_check(k, sizes, source)
                thresholds.setdefault(metric, {"strategies": {}})["strategies"][strategy] = {
                    "threshold": eps, "source_batch_size": source, "source_seeds_all_reached": reached}
                summary.setdefault(strategy, {})[metric] = {
                    "threshold": json_safe(eps), "threshold_batch_size": source, **entry}
            else:
                thresholds[metric]["common"] = eps
                common_entries.setdefault(metric, {"threshold": json_safe(eps), "strategies": {}})
                common_entries[metric]["strategies"][strategy] = entry
        key = "speedup" if scope == "strategy" else "speedup_common"
        out[key] = pd.concat(frames, ignore_index=True)[list(SPEEDUP_COLUMNS)] if frames else \
            pd.DataFrame(columns=list(SPEEDUP_COLUMNS))
    if tuned_tables.has_tuned(cube):
        tuned = tuned_analysis(cube, study)
        out["tuned"], out["tuned_trials"] = tuned["tuned"], tuned["tuned_trials"]
        for metric, entry in tuned["entries"]["strategy"].items():
            summary.setdefault(tuned_tables.TUNED, {})[metric] = entry
            thresholds.setdefault(metric, {"strategies": {}})["strategies"][tuned_tables.TUNED] = {
                "threshold": entry["threshold"], "source_batch_size": entry["threshold_batch_size"],
                "source_trial": entry["threshold_trial"]}
        for metric, entry in tuned["entries"]["common"].items():
            common_entries.setdefault(metric, {"threshold": entry["threshold"], "strategies": {}})
            common_entries[metric]["strategies"][tuned_tables.TUNED] = entry
    document = critical_document(study, rule_text, summary, common_entries, thresholds)
    if "study" in getattr(cube, "attrs", {}):
        document = {"study": str(cube.attrs["study"]), **document}
    out["critical_batch"] = json_safe(document)
    return out


def speedup_table(cube, study=None, scope: str = "strategy") -> pd.DataFrame:
    """The tidy speedup table (columns SPEEDUP_COLUMNS, documented in the module docstring) at each
    strategy's own eps (`scope` ``strategy``) or at the common eps per metric (``common``)."""
    return analyse_cube(cube, study)["speedup" if scope == "strategy" else "speedup_common"]


def critical_batch_summary(cube, study=None) -> dict:
    """Critical batch size per strategy and metric, JSON-serialisable (``json.dumps(..., allow_nan=False)``);
    layout in the module docstring. NaN and inf are written as null (see the ``null`` text)."""
    return analyse_cube(cube, study)["critical_batch"]


def _interval_text(quantity: dict | None) -> str:
    quantity = quantity or {}
    kind = quantity.get("interval_kind") or "none"
    if kind == "none" or quantity.get("low") is None and quantity.get("high") is None:
        return "(no interval)"
    low = "?" if quantity.get("low") is None else f"{quantity['low']:.4g}"
    high = "inf" if quantity.get("high") is None else f"{quantity['high']:.4g}"
    return f"[{low}, {high}] ({kind.replace('_', ' ')})"


def headline(document: dict) -> list[str]:
    """The headline of a critical_batch.json document, one line per strategy and metric: eps, B_crit (or its
    bound) and S_min with their intervals and interval kind, the log-RMSE, the overhead-based critical
    batch, and the regimes (largest linear batch size, first stagnating one)."""
    lines = []
    for metric, entry in (document.get("thresholds") or {}).items():
        for strategy, check in (entry.get("strategies") or {}).items():
            if check.get("source_seeds_all_reached") is False:
                lines.append(f"WARNING: {strategy} {metric}: a seed of the source batch size "
                             f"{check.get('source_batch_size')} never reached its own eps")
    for strategy, per_metric in (document.get("strategies") or {}).items():
        for metric, entry in per_metric.items():
            b_crit, s_min = entry.get("B_crit") or {}, entry.get("S_min") or {}
            eps = entry.get("threshold")
            where = f"{strategy} {metric}" + (f" at eps = {eps:.4g}" if eps is not None else "")
            if b_crit.get("estimate") is None and b_crit.get("report") is None:
                lines.append(f"{where}: no fit ({entry.get('note', 'not enough batch sizes reached the target')})")
            else:
                report = b_crit.get("report") or f"{b_crit['estimate']:.4g}"
                b_text = f"B_crit {report}" if report[:1] in "<>" else f"B_crit = {report}"
                s_text = "S_min = n/a" if s_min.get("estimate") is None else f"S_min = {s_min['estimate']:.4g}"
                rmse = entry.get("log_rmse")
                lines.append(f"{where}: {b_text} {_interval_text(b_crit)}, {s_text} {_interval_text(s_min)}"
                             + (f", log-RMSE {rmse:.3g}" if rmse is not None else ""))
            overhead = (entry.get("overhead_critical_batch") or {})
            direct = overhead.get("direct") or {}
            linear = entry.get("largest_linear_batch_size")
            stagnation = entry.get("first_stagnation_batch_size")
            lines.append(
                f"  overhead-based critical batch ({100 * overhead.get('overhead', 0.2):g}% over linear): "
                f"{direct.get('report') or 'n/a'}; regimes: linear up to "
                f"{linear if linear is not None else 'none beyond m0'}, stagnation from "
                f"{stagnation if stagnation is not None else 'none measured'}")
    return lines


# --------------------------------------------------------------------------------------------
# Accuracy (paper Table 2)


def _final(cube, per_run: str, traced: str):
    """The final value per run: the cube's per-run variable when present, else the run's last traced one."""
    if per_run in cube:
        return cube[per_run]
    if traced not in cube:
        return None
    return last_finite(cube[traced])


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    return (float(values.mean()) if values.size else float("nan"),
            float(values.std(ddof=1)) if values.size > 1 else float("nan"))


def accuracy_table(cube) -> pd.DataFrame:
    """Final test accuracy, train accuracy (percent) and train loss (nats) per strategy and batch size: mean
    and sd over seeds; n_seeds (runs with a final test accuracy, diverged ones included), n_diverged."""
    status = run_status(cube)
    finals = {"test": _final(cube, "final_test_acc", "test_acc"), "train": _final(cube, "final_train_acc", "train_acc"),
              "loss": _final(cube, "final_train_loss", "train_loss")}
    rows = []
    for strategy in [str(s) for s in cube["strategy"].values]:
        for size in cube["batch_size"].values:
            stat = np.asarray(status.sel(strategy=strategy, batch_size=size).values).astype(str)
            got = {}
            for name, final in finals.items():
                if final is None:
                    got[name] = np.array([])
                    continue
                v = np.asarray(final.sel(strategy=strategy, batch_size=size).values, dtype=float)
                got[name] = v[np.isfinite(v) & (stat != "missing")]
            test, train, loss = _mean_sd(got["test"] * 100), _mean_sd(got["train"] * 100), _mean_sd(got["loss"])
            rows.append({
                "strategy": strategy, "batch_size": int(size),
                "test_acc_mean_pct": test[0], "test_acc_sd_pct": test[1],
                "train_acc_mean_pct": train[0], "train_acc_sd_pct": train[1],
                "train_loss_mean": loss[0], "train_loss_sd": loss[1],
                "n_seeds": int(got["test"].size), "n_diverged": int(np.sum(stat == "diverged")),
            })
    return pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS))


def accuracy_markdown(df: pd.DataFrame) -> str:
    """A Markdown table, batch sizes as rows; per strategy three columns: final test accuracy (headed by the
    strategy's name), train
    accuracy (``mean ± sd`` percent) and train loss (``mean ± sd`` nats). Cells with diverged runs say so,
    e.g. ``13.00 ± 1.41 (diverged 2/2)``; a cell without runs is ``—``."""
    strategies = list(dict.fromkeys(df["strategy"]))
    sizes = sorted(set(int(b) for b in df["batch_size"]))
    columns = [("test_acc_mean_pct", "test_acc_sd_pct", "test acc %", ".2f"),
               ("train_acc_mean_pct", "train_acc_sd_pct", "train acc %", ".2f"),
               ("train_loss_mean", "train_loss_sd", "train loss", ".3g")]
    # the test-accuracy column keeps the bare strategy name (the paper's Table 2 column)
    header = [f"{s} {title}" if i else s for s in strategies for i, (_m, _sd, title, _f) in enumerate(columns)]
    lines = ["| batch size | " + " | ".join(header) + " |", "|---:|" + "---:|" * len(header)]
    for size in sizes:
        cells = []
        for strategy in strategies:
            match = df[(df["strategy"] == strategy) & (df["batch_size"] == size)]
            for mean_col, sd_col, _title, fmt in columns:
                if match.empty or match.iloc[0]["n_seeds"] == 0 or not np.isfinite(match.iloc[0][mean_col]):
                    cells.append("—")
                    continue
                row = match.iloc[0]
                cell = format(row[mean_col], fmt)
                if np.isfinite(row[sd_col]):
                    cell += f" ± {format(row[sd_col], fmt)}"
                if row["n_diverged"]:
                    cell += f" (diverged {int(row['n_diverged'])}/{int(row['n_seeds'])})"
                cells.append(cell)
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Linear approximation error (paper Fig. 2 right)


def _run_scalar(cube, names) -> "np.ndarray | None":
    """A per-run variable (no step dimension) under the first of `names` the cube has."""
    for name in names:
        if name in cube and "step" not in cube[name].dims:
            return cube[name]
    return None


def _run_trace(cube, name):
    return cube[name] if name in cube and "step" in cube[name].dims else None


def nearest_point_value(steps, values, k: float) -> float:
    """The value at the evaluation point (finite value, step > 0) nearest to step `k` in log step; NaN
    when k is not finite and positive or the run has no such point."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = np.isfinite(values) & (steps > 0)
    if not (np.isfinite(k) and k > 0) or not keep.any():
        return float("nan")
    s, v = steps[keep], values[keep]
    return float(v[np.argmin(np.abs(np.log(s) - math.log(k)))])


def linear_error_table(cube, train_thresholds: dict) -> pd.DataFrame:
    """LINEAR_ERROR_COLUMNS rows (see the module docstring) from whichever linear-approximation-error
    measurements the cube holds: traces ``linear_approx_error`` / ``linear_approx_error_rel`` over the
    evaluation points, per-run ``linear_approx_error_warmup_end`` (and ``_rel``) and the final (or last
    finite) ``linear_approx_error`` (per-run, also read as ``final_linear_approx_error``). A point without
    its measurement has ``available`` false and empty values. `train_thresholds` {strategy: eps} locate
    the at-threshold point."""
    status = run_status(cube)
    steps = np.asarray(cube["step"].values, dtype=float)
    trace_abs, trace_rel = _run_trace(cube, "linear_approx_error"), _run_trace(cube, "linear_approx_error_rel")
    sources = {
        "warmup_end": (_run_scalar(cube, ["linear_approx_error_warmup_end"]),
                       _run_scalar(cube, ["linear_approx_error_warmup_end_rel"])),
        "final": (_run_scalar(cube, ["linear_approx_error", "final_linear_approx_error"]),
                  _run_scalar(cube, ["linear_approx_error_final_rel", "final_linear_approx_error_rel"])),
    }
    train = cube["train_loss"] if "train_loss" in cube else None
    rows = []
    for strategy in [str(s) for s in cube["strategy"].values]:
        eps = float(train_thresholds.get(strategy, float("nan")))
        for size in cube["batch_size"].values:
            stat = np.atleast_1d(np.asarray(status.sel(strategy=strategy, batch_size=size).values).astype(str))
            present = stat != "missing"
            for point in LINEAR_ERROR_POINTS:
                values = {"absolute": np.full(stat.shape, np.nan), "relative": np.full(stat.shape, np.nan)}
                if point == "at_threshold":
                    available = trace_abs is not None or trace_rel is not None
                    if available and train is not None:
                        loss = np.atleast_2d(train.sel(strategy=strategy, batch_size=size).transpose("seed", "step").values)
                        for j in range(loss.shape[0]):
                            k = k_for_run(steps, loss[j], eps, stat[j])
                            for kind, trace in (("absolute", trace_abs), ("relative", trace_rel)):
                                if trace is not None:
                                    run = np.atleast_2d(trace.sel(strategy=strategy, batch_size=size)
                                                        .transpose("seed", "step").values)[j]
                                    values[kind][j] = nearest_point_value(steps, run, k)
                else:
                    absolute, relative = sources[point]
                    available = absolute is not None or relative is not None
                    for kind, var in (("absolute", absolute), ("relative", relative)):
                        if var is not None:
                            values[kind] = np.atleast_1d(np.asarray(
                                var.sel(strategy=strategy, batch_size=size).values, dtype=float))
                row = {"strategy": strategy, "batch_size": int(size), "point": point}
                for kind in ("absolute", "relative"):
                    v = values[kind][present]
                    mean, sd = _mean_sd(v[np.isfinite(v)])
                    row[f"{kind}_mean"], row[f"{kind}_sd"] = mean, sd
                row["n_seeds"] = int(np.sum(np.isfinite(values["absolute"][present]) |
                                            np.isfinite(values["relative"][present])))
                row["available"] = bool(available)
                rows.append(row)
    return pd.DataFrame(rows, columns=list(LINEAR_ERROR_COLUMNS))


# --------------------------------------------------------------------------------------------
# Files


def write_tables(out_dir, frames: dict, critical: dict) -> dict:
    """Write each DataFrame of `frames` ({stem: DataFrame}, e.g. speedup, speedup_common, accuracy,
    linear_error) as ``{stem}.csv``, critical_batch.json and, with an accuracy table, accuracy.md; returns
    the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, frame in frames.items():
        if frame is not None:
            paths[stem] = out / f"{stem}.csv"
            frame.to_csv(paths[stem], index=False)
    paths["critical_batch"] = out / "critical_batch.json"
    with open(paths["critical_batch"], "w") as handle:
        json.dump(json_safe(critical), handle, indent=2, allow_nan=False)
        handle.write("\n")
    if frames.get("accuracy") is not None:
        paths["accuracy_md"] = out / "accuracy.md"
        paths["accuracy_md"].write_text(accuracy_markdown(frames["accuracy"]))
    return paths


def study_tables(cube, study_config=None) -> dict:
    """Every table of a study: ``{"speedup", "speedup_common", "accuracy", "linear_error": DataFrame or
    None, "critical_batch": dict}``."""
    result = analyse_cube(cube, study_config)
    has_acc = "test_acc" in cube or "final_test_acc" in cube
    result["accuracy"] = accuracy_table(cube) if has_acc else None
    train = result["speedup"][result["speedup"]["metric"] == "train_loss"]
    eps = {str(s): float(g["threshold"].iloc[0]) for s, g in train.groupby("strategy")}
    result["linear_error"] = linear_error_table(cube, eps) if "train_loss" in cube else None
    from batchscale.analysis.noise import study_noise_tables  # noise_scale.csv, noise_over_training.csv
    raw = study_config if study_config is not None else json.loads(cube.attrs.get("study_config_json", "{}"))
    window = (raw.get("noise_scale") or {}).get("window", 3)
    result.update(study_noise_tables(cube, result["critical_batch"], window))
    return result


def write_study_tables(cube_path, study_config=None, out_dir=None) -> dict:
    """Read a cube and write speedup.csv, speedup_common.csv, critical_batch.json, accuracy.csv,
    accuracy.md and linear_error.csv into `out_dir` (default: the cube's folder). Returns `study_tables`'
    dict with ``paths`` added."""
    import xarray as xr

    cube_path = Path(cube_path)
    with xr.open_dataset(cube_path, engine="h5netcdf") as handle:
        cube = handle.load()
    result = study_tables(cube, study_config)
    frames = {name: result.get(name) for name in ("speedup", "speedup_common", "accuracy", "linear_error",
                                                  "noise_scale", "noise_over_training", "tuned", "tuned_trials")}
    result["paths"] = write_tables(out_dir if out_dir is not None else cube_path.parent, frames,
                                   result["critical_batch"])
    return result
