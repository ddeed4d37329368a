"""Study tables: iterations to threshold, speedup, regimes, critical batch size, final accuracy.

Inputs: a study cube (xarray Dataset, dims strategy, batch_size, seed, step; see docs/contracts.md) and the
resolved study config (keys used: base_batch, threshold, metrics, regimes {linear_efficiency,
stagnation_gain}, bootstrap {samples, confidence}). Outputs, written by `write_study_tables`:

``speedup.csv`` -- tidy, one row per strategy x batch size x metric:

==========================  =====================================================================
column                      meaning (unit)
==========================  =====================================================================
strategy                    learning-rate strategy (blr, lsr, srsr, longer)
batch_size                  m (examples per step)
metric                      train_loss, test_loss or test_error (= 1 - test accuracy, a fraction)
threshold                   eps, in the metric's unit (loss in nats, error as a fraction)
threshold_rule              lower_quartile_of_largest, quantile_of_largest:q or fixed:v
threshold_batch_size        batch size whose traces set eps (empty for fixed rules)
base_batch                  m0, the batch size speedups are relative to (examples per step)
k_mean                      mean over seeds of k(m; eps), iterations to threshold (steps); inf if any
                            seed never reached eps
k_low, k_high               bootstrap interval of k_mean over seeds (steps)
n_seeds                     seeds with data (missing runs excluded)
n_reached                   seeds that reached eps (finite k)
n_diverged                  seeds whose run diverged
examples_to_threshold       m * k_mean (examples)
speedup                     k_mean(m0) / k_mean(m) (dimensionless); 0 when m never reached eps
speedup_low, speedup_high   paired bootstrap interval of the speedup over seeds
ideal_speedup               m / m0
efficiency                  speedup / ideal_speedup (1 = linear scaling)
regime                      linear, diminishing, stagnation, not_reached, trivial (k = 0: eps met at
                            step 0), missing (see measurements.regimes)
status                      diverged (any seed diverged), not_reached (k_mean is inf: some seed never
                            reached eps), completed, or missing (no data)
==========================  =====================================================================

Not-reached and diverged rows are kept, never dropped: pandas reads ``inf`` back as float infinity and
empty cells as NaN. Intervals are percentile bootstraps over seeds with numpy seed 0 (deterministic), at
the study's ``bootstrap.confidence``.

Threshold choice: the quantile rules are applied per strategy and metric, to the values that strategy
traced at its largest batch size with a completed (not diverged) run, each curve resampled uniformly in
steps (the evaluation grid is log-spaced; the paper weights every stretch of training alike), as in the paper, where each speedup
curve's eps comes from its own largest batch. A pooled per-study threshold would make k comparable across
strategies, but one strategy that fails at the largest batch (LSR diverging) or trains for many more steps
there (``longer``) would then move eps for every other strategy; per strategy keeps each curve
self-consistent. `speedup_table(..., threshold_scope="study")` pools the largest batch size of every
strategy instead.

``critical_batch.json`` -- per strategy and metric: the fit k(m) = S_min (1 + B_crit/m) with bootstrap
intervals and the regime boundaries; ``null`` marks a quantity that cannot be estimated (see
`critical_batch_summary`).

``accuracy.csv`` / ``accuracy.md`` -- the paper's Table 2: final test accuracy per batch size and strategy,
columns strategy, batch_size, test_acc_mean_pct, test_acc_sd_pct (percent; sd over seeds, ddof=1, empty for
one seed), n_seeds, n_diverged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from batchscale.analysis import measurements as ms

METRICS = ("train_loss", "test_loss", "test_error")

SPEEDUP_COLUMNS = (
    "strategy", "batch_size", "metric", "threshold", "threshold_rule", "threshold_batch_size", "base_batch",
    "k_mean", "k_low", "k_high", "n_seeds", "n_reached", "n_diverged", "examples_to_threshold",
    "speedup", "speedup_low", "speedup_high", "ideal_speedup", "efficiency", "regime", "status",
)
ACCURACY_COLUMNS = ("strategy", "batch_size", "test_acc_mean_pct", "test_acc_sd_pct", "n_seeds", "n_diverged")

DEFAULT_STUDY = {
    "threshold": ms.LOWER_QUARTILE,
    "metrics": list(METRICS),
    "regimes": {"linear_efficiency": 0.8, "stagnation_gain": 0.1},
    "bootstrap": {"samples": 1000, "confidence": 0.9},
}
BOOTSTRAP_SEED = 0

NULL_NOTE = (
    "null marks a value that cannot be estimated: fewer than 3 batch sizes reached the threshold (no fit), "
    "S_min fitted as 0 so B_crit is infinite (k still falls as 1/m over the measured range: the critical "
    "batch size lies above it), a bootstrap bound that is infinite, or a regime that does not occur in the "
    "measured batch sizes.")


# --------------------------------------------------------------------------------------------
# Cube accessors


def metric_values(cube, metric: str):
    """The traced values of `metric` over (..., step): ``test_error`` is 1 - test_acc, other names are
    cube variables (train_loss, test_loss, or any loss-like variable such as ``loss``)."""
    if metric == "test_error":
        if "test_acc" not in cube:
            raise KeyError("the cube has no test_acc variable, needed for test_error")
        return (1.0 - cube["test_acc"]).rename("test_error")
    if metric not in cube:
        raise KeyError(f"the cube has no {metric!r} variable")
    return cube[metric]


def run_status(cube):
    """Status per run (strategy, batch_size, seed): the cube's ``status`` when present, else completed;
    a run without any finite train/test value is ``missing``."""
    import xarray as xr

    run_dims = [d for d in ("strategy", "batch_size", "seed") if d in cube.dims]
    if "status" in cube:
        status = cube["status"].astype(str)
    else:
        shape = [cube.sizes[d] for d in run_dims]
        status = xr.DataArray(np.full(shape, "completed", dtype=object), dims=run_dims,
                              coords={d: cube[d] for d in run_dims})
    traced = [v for v in ("train_loss", "test_loss", "test_acc", "loss") if v in cube]
    if traced:
        has_data = None
        for name in traced:
            present = np.isfinite(cube[name]).any("step")
            has_data = present if has_data is None else (has_data | present)
        status = xr.where(has_data, status, "missing")
    return status.transpose(*run_dims)


def _resolve_study(cube, study) -> dict:
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


def study_thresholds(cube, metric: str, rule, scope: str = "strategy") -> dict:
    """eps per strategy: ``{strategy: (threshold, source batch size or None)}``.

    Quantile rules use the largest batch size with at least one completed (not diverged) run, per
    strategy (`scope` ``"strategy"``) or pooled over the strategies' own largest batch sizes
    (``"study"``). The pool is every completed run of that batch size, each curve resampled uniformly in
    steps (`measurements.resample_uniform_in_steps`), so the log-spaced grid does not overweight the
    first steps.
    """
    values = metric_values(cube, metric)
    status = run_status(cube)
    parsed = ms.parse_threshold_rule(rule)
    strategies = [str(s) for s in cube["strategy"].values]
    if parsed["kind"] == "fixed":
        return {s: (float(parsed["value"]), None) for s in strategies}
    steps = cube["step"].values
    pools, sources = {}, {}
    for strategy in strategies:
        per_strategy = values.sel(strategy=strategy)
        completed = (status.sel(strategy=strategy) == "completed")
        usable = completed.any("seed") if "seed" in completed.dims else completed
        sizes = per_strategy["batch_size"].values[np.asarray(usable.values, dtype=bool)]
        if sizes.size == 0:
            pools[strategy], sources[strategy] = np.array([]), None
            continue
        largest = int(sizes.max())
        curves = per_strategy.sel(batch_size=largest)
        runs_ok = completed.sel(batch_size=largest)
        seeds = curves["seed"].values if "seed" in curves.dims else [None]
        pool = []
        for seed in seeds:
            if seed is None:
                curve, ok = curves, bool(runs_ok)
            else:
                curve, ok = curves.sel(seed=seed), bool(runs_ok.sel(seed=seed))
            if ok:
                pool.append(ms.resample_uniform_in_steps(steps, np.asarray(curve.values, dtype=float)))
        pools[strategy] = np.concatenate(pool) if pool else np.array([])
        sources[strategy] = largest
    if scope == "study":
        pooled = np.concatenate([p for p in pools.values()]) if pools else np.array([])
        eps = ms.threshold_from_rule(pooled, rule)
        return {s: (eps, sources[s]) for s in strategies}
    if scope != "strategy":
        raise ValueError(f"threshold scope {scope!r} is not allowed; use strategy or study")
    return {s: (ms.threshold_from_rule(pools[s], rule), sources[s]) for s in strategies}


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
        raise ValueError(f"base batch {base_batch} is not one of the batch sizes {m.astype(int).tolist()}")
    k_base_seeds = k[where_base[0]]
    k_mean = np.array([ms.seed_mean(row) if np.any(~np.isnan(row)) else np.nan for row in k])
    labels = ms.regimes(m, k_mean, base_batch, float(regimes_cfg.get("linear_efficiency", 0.8)),
                        float(regimes_cfg.get("stagnation_gain", 0.1)))
    k_base = k_mean[where_base[0]]
    rows = []
    for i, size in enumerate(m):
        est, low, high = ms.bootstrap_interval(k[i], ms.seed_mean, samples, confidence, BOOTSTRAP_SEED)
        s, s_low, s_high = ms.bootstrap_speedup(k[i], k_base_seeds, samples, confidence, BOOTSTRAP_SEED)
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
            "k_low": low,
            "k_high": high,
            "n_seeds": n_seeds,
            "n_reached": int(np.sum(np.isfinite(k[i]))),
            "n_diverged": n_diverged,
            "examples_to_threshold": float(size * k_mean[i]) if n_seeds else float("nan"),
            "speedup": float(ms.speedup(k_mean[i], k_base)),
            "speedup_low": s_low,
            "speedup_high": s_high,
            "ideal_speedup": float(ms.ideal_speedup(size, base_batch)),
            "efficiency": float(ms.efficiency(k_mean[i], k_base, size, base_batch)),
            "regime": labels[i],
            "status": row_status,
        })
    return pd.DataFrame(rows)


def critical_entry(batch_sizes, k_per_seed, regime_labels, bootstrap_cfg: dict) -> dict:
    """One JSON-safe critical-batch entry for a curve: fit, intervals, regime boundaries."""
    samples = int(bootstrap_cfg.get("samples", 1000))
    confidence = float(bootstrap_cfg.get("confidence", 0.9))
    fit = ms.bootstrap_critical_batch(batch_sizes, k_per_seed, samples, confidence, BOOTSTRAP_SEED)
    bounds = ms.regime_boundaries(batch_sizes, regime_labels)
    entry = {
        name: {"estimate": fit[name], "low": fit[f"{name}_low"], "high": fit[f"{name}_high"]}
        for name in ("B_crit", "S_min", "E_min")
    }
    entry.update({
        "n_points": fit["n_points"],
        "n_resamples": fit["n_resamples"],
        "largest_linear_batch_size": bounds["largest_linear"],
        "first_stagnation_batch_size": bounds["first_stagnation"],
    })
    if fit["n_points"] < 3:
        entry["note"] = f"only {fit['n_points']} batch size(s) reached the threshold; the fit needs 3"
    elif math.isinf(fit["B_crit"]):
        entry["note"] = "S_min fitted as 0: k still falls as 1/m, the critical batch size is above the range"
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


def _curves(cube, study: dict, threshold_scope: str):
    """Yield (strategy, metric, eps, source batch, batch sizes, k (batch x seed), status (batch x seed))."""
    status = run_status(cube)
    sizes = np.asarray(cube["batch_size"].values, dtype=int)
    rule = study["threshold"]
    for metric in study["metrics"]:
        thresholds = study_thresholds(cube, metric, rule, threshold_scope)
        values = metric_values(cube, metric)
        for strategy in [str(s) for s in cube["strategy"].values]:
            eps, source = thresholds[strategy]
            per = values.sel(strategy=strategy).transpose("batch_size", "seed", "step")
            stat = status.sel(strategy=strategy).transpose("batch_size", "seed")
            k = ms.k_per_run(per, eps, stat).transpose("batch_size", "seed").values
            yield strategy, metric, eps, source, sizes, k, stat.values


def critical_document(study: dict, threshold_rule: str, threshold_scope, entries: dict) -> dict:
    """The critical_batch.json document around per-strategy entries (see `critical_batch_summary`)."""
    return json_safe({
        "model": "k(m) = S_min * (1 + B_crit / m); E_min = S_min * B_crit (McCandlish et al. 2018)",
        "units": {"B_crit": "examples per step", "S_min": "steps", "E_min": "examples",
                  "largest_linear_batch_size": "examples per step",
                  "first_stagnation_batch_size": "examples per step"},
        "base_batch": int(study["base_batch"]),
        "threshold_rule": threshold_rule,
        "threshold_scope": threshold_scope,
        "confidence": float(study["bootstrap"]["confidence"]),
        "bootstrap_samples": int(study["bootstrap"]["samples"]),
        "regimes": {k: float(v) for k, v in study["regimes"].items()},
        "null": NULL_NOTE,
        "strategies": entries,
    })


def _analyse(cube, study, threshold_scope: str = "strategy"):
    study = _resolve_study(cube, study)
    rule_text = ms.describe_threshold_rule(study["threshold"])
    frames, summary = [], {}
    for strategy, metric, eps, source, sizes, k, stat in _curves(cube, study, threshold_scope):
        rows = speedup_rows(sizes, k, stat, study["base_batch"], study["regimes"], study["bootstrap"])
        rows.insert(0, "strategy", strategy)
        rows.insert(2, "metric", metric)
        rows.insert(3, "threshold", eps)
        rows.insert(4, "threshold_rule", rule_text)
        rows.insert(5, "threshold_batch_size", pd.array([source] * len(rows), dtype="Int64"))
        frames.append(rows)
        entry = critical_entry(sizes, k, rows["regime"].tolist(), study["bootstrap"])
        entry = {"threshold": json_safe(eps), "threshold_batch_size": source, **entry}
        summary.setdefault(strategy, {})[metric] = entry
    table = pd.concat(frames, ignore_index=True)[list(SPEEDUP_COLUMNS)] if frames else \
        pd.DataFrame(columns=list(SPEEDUP_COLUMNS))
    document = critical_document(study, rule_text, threshold_scope, summary)
    if "study" in getattr(cube, "attrs", {}):
        document = {"study": str(cube.attrs["study"]), **document}
    return table, json_safe(document)


def speedup_table(cube, study=None, threshold_scope: str = "strategy") -> pd.DataFrame:
    """The tidy speedup table (columns SPEEDUP_COLUMNS, documented in the module docstring).

    `study` is the resolved study config; None reads it from the cube's ``study_config_json`` attribute.
    """
    return _analyse(cube, study, threshold_scope)[0]


def critical_batch_summary(cube, study=None, threshold_scope: str = "strategy") -> dict:
    """Critical batch size per strategy and metric, JSON-serialisable (``json.dumps(..., allow_nan=False)``).

    Layout: ``{"model", "units", "base_batch", "threshold_rule", "threshold_scope", "confidence",
    "bootstrap_samples", "regimes", "null", "strategies": {strategy: {metric: entry}}}`` where entry is
    ``{"threshold", "threshold_batch_size", "B_crit": {"estimate", "low", "high"}, "S_min": {...},
    "E_min": {...}, "n_points", "n_resamples", "largest_linear_batch_size", "first_stagnation_batch_size"
    [, "note"]}``. NaN and inf are written as null (see the ``null`` text; ``note`` says why a fit failed).
    """
    return _analyse(cube, study, threshold_scope)[1]


# --------------------------------------------------------------------------------------------
# Accuracy (paper Table 2)


def _final_test_acc(cube):
    if "final_test_acc" in cube:
        return cube["final_test_acc"]
    acc = cube["test_acc"]
    return acc.ffill("step").isel(step=-1)


def accuracy_table(cube) -> pd.DataFrame:
    """Final test accuracy per strategy and batch size: mean and sd over seeds in percent (test_acc is a
    fraction in [0, 1]), n_seeds (runs with a final accuracy, diverged ones included) and n_diverged."""
    final = _final_test_acc(cube).transpose("strategy", "batch_size", "seed")
    status = run_status(cube)
    rows = []
    for strategy in [str(s) for s in cube["strategy"].values]:
        for size in cube["batch_size"].values:
            acc = np.asarray(final.sel(strategy=strategy, batch_size=size).values, dtype=float)
            stat = np.asarray(status.sel(strategy=strategy, batch_size=size).values).astype(str)
            acc = acc[np.isfinite(acc) & (stat != "missing")] * 100.0
            rows.append({
                "strategy": strategy,
                "batch_size": int(size),
                "test_acc_mean_pct": float(acc.mean()) if acc.size else float("nan"),
                "test_acc_sd_pct": float(acc.std(ddof=1)) if acc.size > 1 else float("nan"),
                "n_seeds": int(acc.size),
                "n_diverged": int(np.sum(stat == "diverged")),
            })
    return pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS))


def accuracy_markdown(df: pd.DataFrame) -> str:
    """A Markdown table, batch sizes as rows and strategies as columns, cells ``mean ± sd`` (percent).

    Cells with diverged runs say so, e.g. ``13.00 ± 1.41 (diverged 2/2)``; a cell without runs is ``—``.
    """
    strategies = list(dict.fromkeys(df["strategy"]))
    sizes = sorted(set(int(b) for b in df["batch_size"]))
    lines = ["| batch size | " + " | ".join(strategies) + " |",
             "|---:|" + "---:|" * len(strategies)]
    for size in sizes:
        cells = []
        for strategy in strategies:
            match = df[(df["strategy"] == strategy) & (df["batch_size"] == size)]
            if match.empty or match.iloc[0]["n_seeds"] == 0:
                cells.append("—")
                continue
            row = match.iloc[0]
            cell = f"{row['test_acc_mean_pct']:.2f}"
            if np.isfinite(row["test_acc_sd_pct"]):
                cell += f" ± {row['test_acc_sd_pct']:.2f}"
            if row["n_diverged"]:
                cell += f" (diverged {int(row['n_diverged'])}/{int(row['n_seeds'])})"
            cells.append(cell)
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Files


def write_tables(out_dir, speedup: pd.DataFrame, critical: dict, accuracy: pd.DataFrame | None = None) -> dict:
    """Write speedup.csv, critical_batch.json and (when given) accuracy.csv/accuracy.md; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"speedup": out / "speedup.csv", "critical_batch": out / "critical_batch.json"}
    speedup.to_csv(paths["speedup"], index=False)
    with open(paths["critical_batch"], "w") as handle:
        json.dump(json_safe(critical), handle, indent=2, allow_nan=False)
        handle.write("\n")
    if accuracy is not None:
        paths["accuracy"] = out / "accuracy.csv"
        paths["accuracy_md"] = out / "accuracy.md"
        accuracy.to_csv(paths["accuracy"], index=False)
        paths["accuracy_md"].write_text(accuracy_markdown(accuracy))
    return paths


def write_study_tables(cube_path, study_config=None, out_dir=None, threshold_scope: str = "strategy") -> dict:
    """Read a cube and write speedup.csv, critical_batch.json, accuracy.csv, accuracy.md into `out_dir`
    (default: the cube's folder). Returns ``{"speedup": DataFrame, "critical_batch": dict,
    "accuracy": DataFrame, "paths": {name: Path}}``."""
    import xarray as xr

    cube_path = Path(cube_path)
    with xr.open_dataset(cube_path, engine="h5netcdf") as handle:
        cube = handle.load()
    table, critical = _analyse(cube, study_config, threshold_scope)
    accuracy = accuracy_table(cube) if ("test_acc" in cube or "final_test_acc" in cube) else None
    paths = write_tables(out_dir if out_dir is not None else cube_path.parent, table, critical, accuracy)
    return {"speedup": table, "critical_batch": critical, "accuracy": accuracy, "paths": paths}
