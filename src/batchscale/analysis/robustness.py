"""How far a study's answer depends on choices a reviewer questions: the warm-up and the threshold.

``warmup_check.csv`` -- one row per strategy x batch size at the common eps of the training loss (where the
strategies are compared): ``strategy``, ``batch_size``, ``metric``, ``threshold``, ``k`` (k_mean, steps to
eps), ``warmup_steps`` (the run's warm-up in weight updates: the study's ``warmup_steps`` when set, else
``warmup_epochs`` x the run's steps per epoch, steps_total / epochs; 0 for a strategy outside
``warmup_strategies``), ``ratio`` (k / warmup_steps; empty without a warm-up), ``inside_warmup`` (k reached
before the warm-up ended: the rate was still below its target), ``factor`` (the study's
``warmup_check_factor``) and ``flagged`` (k < factor x warm-up: the scaling rule is measured mostly inside its
warm-up, so its k(m) says more about the warm-up than about the rule).

``critical_vs_threshold.csv`` -- B_crit across a family of eps (`THRESHOLD_FAMILY`: q = 0.1, stricter than the
paper's lower quartile, 0.25, and 0.5, looser), one row per strategy x metric x q, each eps the rule
``quantile_of_largest: q`` on the strategy's source batch (as its own eps): ``strategy``, ``metric``,
``quantile``, ``threshold``, ``b_crit`` with ``low``/``high``/``interval_kind``, ``bound`` (``> m``/``< m`` when
B_crit lies outside the measured range, else empty), ``log_rmse``, ``accepted`` (the fit's log-RMSE is within
``critical_batch.max_log_rmse``) and the overhead-based critical batch read off k(m) with its interval
(``overhead_critical_batch``, ``overhead_low``, ``overhead_high``). The fixed strategies only (tuned's would
rerun its search bootstrap per eps).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from batchscale.analysis.curves import critical_entry, k_at, seed_means
from batchscale.analysis.speedup import regimes
from batchscale.analysis.thresholds import study_thresholds

WARMUP_METRIC = "train_loss"
WARMUP_COLUMNS = ("strategy", "batch_size", "metric", "threshold", "k", "warmup_steps", "ratio", "inside_warmup",
                  "factor", "flagged")
THRESHOLD_FAMILY = (0.1, 0.25, 0.5)
CRITICAL_COLUMNS = ("strategy", "metric", "quantile", "threshold", "b_crit", "low", "high", "interval_kind", "bound",
                    "log_rmse", "accepted", "overhead_critical_batch", "overhead_low", "overhead_high")


def warmup_length(warmup_steps, warmup_epochs: float, steps_total, epochs) -> np.ndarray:
    """A run's warm-up in weight updates, as the engine sets it (engine.state.RunState.create).

    Args:
      warmup_steps: the study's warm-up in steps (None: given in epochs).
      warmup_epochs: the warm-up in epochs.
      steps_total: the runs' total steps (array).
      epochs: the runs' epochs (array).

    Returns:
      warmup_steps where set; else round(warmup_epochs x steps_total / epochs) (steps per epoch times the
      warm-up's epochs; NaN where a run has no steps).
    """
    steps_total = np.asarray(steps_total, dtype=float)
    if warmup_steps is not None:
        return np.full(steps_total.shape, float(warmup_steps))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_epoch = np.floor(steps_total / np.asarray(epochs, dtype=float))
    return np.round(float(warmup_epochs) * per_epoch)


def warmup_rows(strategy: str, batch_sizes, k, warmup, metric: str, eps: float, factor: float) -> list[dict]:
    """One strategy's rows of warmup_check.csv.

    Args:
      strategy: the strategy.
      batch_sizes: its batch sizes.
      k: k_mean per batch size (inf: not reached).
      warmup: the warm-up in steps per batch size (0: none).
      metric: the metric of k.
      eps: the threshold of k.
      factor: the study's warmup_check_factor.

    Returns:
      rows with WARMUP_COLUMNS: ratio k / warm-up (NaN without a warm-up or without a finite k),
      inside_warmup k < warm-up, flagged k < factor x warm-up (False without a warm-up or a finite k).
    """
    rows = []
    for m, k_m, w in zip(batch_sizes, np.asarray(k, dtype=float), np.asarray(warmup, dtype=float)):
        has = bool(np.isfinite(w) and w > 0 and np.isfinite(k_m))
        rows.append({"strategy": strategy, "batch_size": int(m), "metric": metric, "threshold": eps, "k": float(k_m),
                     "warmup_steps": float(w), "ratio": float(k_m / w) if has else math.nan,
                     "inside_warmup": bool(has and k_m < w), "factor": float(factor),
                     "flagged": bool(has and k_m < factor * w)})
    return rows


def warmup_check_table(cube, study: dict, common: pd.DataFrame, tuned: pd.DataFrame | None = None) -> pd.DataFrame:
    """warmup_check.csv (module docstring) of a study.

    Args:
      cube: the study cube (steps_total and epochs per run; tuned_ ones for the trials).
      study: the study config (warmup_steps, warmup_epochs, warmup_strategies, warmup_check_factor).
      common: speedup_common.csv's rows (k_mean at the common eps).
      tuned: tuned.csv's rows (its best trial per m at the common eps), or None.

    Returns:
      the table; the warm-up of a batch size is the mean over its seeds' runs.
    """
    warmed = set(study.get("warmup_strategies", ["lsr"]))
    args = (study.get("warmup_steps"), float(study.get("warmup_epochs", 0) or 0))
    factor = float(study.get("warmup_check_factor", 4))
    rows = []
    part = common[common["metric"] == WARMUP_METRIC]
    for strategy, group in part.groupby("strategy", sort=False):
        group = group.sort_values("batch_size")
        sizes = group["batch_size"].to_numpy(dtype=int)
        if strategy in warmed and "steps_total" in cube and "epochs" in cube:
            runs = cube.sel(strategy=strategy, batch_size=sizes)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a batch size without runs: NaN
                warmup = np.nanmean(warmup_length(*args, runs["steps_total"].values, runs["epochs"].values), axis=1)
        elif strategy in warmed:
            warmup = np.full(sizes.size, float(args[0]) if args[0] is not None else math.nan)
        else:
            warmup = np.zeros(sizes.size)
        rows += warmup_rows(str(strategy), sizes, group["k_mean"], warmup, WARMUP_METRIC,
                            float(group["threshold"].iloc[0]), factor)
    if tuned is not None and len(tuned):
        best = tuned[(tuned["metric"] == WARMUP_METRIC) & (tuned["threshold_scope"] == "common")].sort_values("batch_size")
        if len(best):
            warmup = np.zeros(len(best))
            if "tuned" in warmed and "tuned_steps_total" not in cube:  # a cube without run lengths
                warmup[:] = float(args[0]) if args[0] is not None else math.nan
            elif "tuned" in warmed:
                for i, (m, trial) in enumerate(zip(best["batch_size"], best["best_trial"])):
                    run = cube.sel(batch_size=int(m), trial=max(int(trial), int(cube["trial"].min())))
                    warmup[i] = np.nanmean(warmup_length(*args, run["tuned_steps_total"].values, run["tuned_epochs"].values))
            rows += warmup_rows("tuned", best["batch_size"], best["k"], warmup, WARMUP_METRIC,
                                float(best["threshold"].iloc[0]), factor)
    return pd.DataFrame(rows, columns=list(WARMUP_COLUMNS))


def warmup_headline(table: pd.DataFrame) -> dict:
    """Where each warmed-up strategy's k(m) sits against its warm-up, from warmup_check.csv.

    Args:
      table: warmup_check.csv.

    Returns:
      {strategy: {factor, warmup_low, warmup_high (its warm-up in steps over the batch sizes), flagged [m where
      k < factor x warm-up], inside [m where k < warm-up]}} for the strategies with a warm-up.
    """
    out = {}
    for strategy, rows in table.groupby("strategy", sort=False):
        warm = rows[rows["warmup_steps"].astype(float) > 0].sort_values("batch_size")
        if warm.empty:
            continue
        flagged = warm["flagged"].astype(str).str.lower() == "true"
        inside = warm["inside_warmup"].astype(str).str.lower() == "true"
        out[str(strategy)] = {"factor": float(warm["factor"].iloc[0]),
                              "warmup_low": float(warm["warmup_steps"].min()),
                              "warmup_high": float(warm["warmup_steps"].max()),
                              "flagged": [int(m) for m in warm.loc[flagged, "batch_size"]],
                              "inside": [int(m) for m in warm.loc[inside, "batch_size"]]}
    return out


def eta_edge_status(eta_star: dict, lr_edge: dict, lr_range: dict, searched: dict | None,
                    rel_tol: float = 1e-6) -> dict:
    """Per batch size, whether the tuned search's eta*(m) is interior or at an edge of what it tried.

    The refine round extends the range past an edge (tuning.refine.extend_at_edge): a batch size whose
    tried range reaches beyond the configured [lr.min, lr.max] was extended, and an eta* still at its edge
    there sits at the extension's cap.

    Args:
      eta_star: {m: eta*(m)} (NaN: no trial reached eps).
      lr_edge: {m: "low" | "high"} for the rates at an edge.
      lr_range: {m: [lowest, highest] rate tried} (may be {}: older tables).
      searched: the configured {min, max} of the first round (None: unknown).

    Returns:
      {m: "interior" | "low edge" | "high edge" | "low edge, extended to its cap" | "high edge, extended to
      its cap" | "none reached"}.
    """
    out = {}
    for m, rate in eta_star.items():
        if rate is None or not np.isfinite(float(rate)):
            out[str(m)] = "none reached"
            continue
        side = lr_edge.get(str(m), lr_edge.get(m, ""))
        if not side:
            out[str(m)] = "interior"
            continue
        low, high = (lr_range.get(str(m)) or [math.nan, math.nan])
        extended = bool(searched) and (
            (side == "high" and high > float(searched["max"]) * (1 + rel_tol))
            or (side == "low" and low < float(searched["min"]) * (1 - rel_tol)))
        out[str(m)] = f"{side} edge" + (", extended to its cap" if extended else "")
    return out


def interval_verdict(a: tuple, b: tuple) -> str:
    """Whether two estimates with intervals are told apart.

    Args:
      a: (estimate, low, high) of the first.
      b: the same of the second.

    Returns:
      ``higher`` / ``lower`` (a against b) when both intervals exist and are disjoint; ``not resolved`` when
      they overlap or either has no interval (NaN bounds).
    """
    (_ea, a_low, a_high), (_eb, b_low, b_high) = a, b
    bounds = np.array([a_low, a_high, b_low, b_high], dtype=float)
    if np.isnan(bounds).any():
        return "not resolved"
    if a_low > b_high:
        return "higher"
    if a_high < b_low:
        return "lower"
    return "not resolved"


def comparison_conclusions(curves: list[dict]) -> list[dict]:
    """B_crit and the speedup at the largest batch size of each pair of curves of a comparison, told apart
    only where their intervals are disjoint.

    Args:
      curves: the comparison headline's curves (label, b_crit, b_crit_low, b_crit_high, speedup_at_largest,
        speedup_low_at_largest, speedup_high_at_largest, largest_batch).

    Returns:
      [{quantity ("B_crit" | "speedup at m = M"), a, b (labels), verdict (`interval_verdict`, a against b)}].
    """
    out = []
    for i, a in enumerate(curves):
        for b in curves[i + 1:]:
            out.append({"quantity": "B_crit", "a": a["label"], "b": b["label"], "verdict": interval_verdict(
                (a["b_crit"], a["b_crit_low"], a["b_crit_high"]), (b["b_crit"], b["b_crit_low"], b["b_crit_high"]))})
            if a["largest_batch"] == b["largest_batch"]:
                keys = ("speedup_at_largest", "speedup_low_at_largest", "speedup_high_at_largest")
                out.append({"quantity": f"speedup at m = {a['largest_batch']}", "a": a["label"], "b": b["label"],
                            "verdict": interval_verdict(tuple(a[k] for k in keys), tuple(b[k] for k in keys))})
    return out


def number(value) -> float:
    """A value of a JSON-safe entry (None for NaN) as a float."""
    return math.nan if value is None else float(value)


def critical_row(strategy: str, metric: str, q: float, eps: float, entry: dict) -> dict:
    """One row of critical_vs_threshold.csv from a critical-batch entry (`curves.critical_entry`)."""
    b = entry["B_crit"]
    direct = entry["overhead_critical_batch"]["direct"]
    return {"strategy": strategy, "metric": metric, "quantile": q, "threshold": eps,
            "b_crit": number(b["estimate"]), "low": number(b["low"]), "high": number(b["high"]),
            "interval_kind": b["interval_kind"], "bound": b["report"] if b.get("bound") else "",
            "log_rmse": number(entry["log_rmse"]), "accepted": not b.get("rejected", False) and
            entry["log_rmse"] is not None,
            "overhead_critical_batch": number(direct["estimate"]), "overhead_low": number(direct.get("low")),
            "overhead_high": number(direct.get("high"))}


def critical_vs_threshold_table(cube, study: dict, quantiles=THRESHOLD_FAMILY) -> pd.DataFrame:
    """critical_vs_threshold.csv (module docstring) of a study.

    Args:
      cube: the study cube.
      study: the resolved study config (metrics, base_batch, regimes, bootstrap, critical_batch).
      quantiles: the family of q.

    Returns:
      one row per strategy x metric x q whose eps is finite.
    """
    rows = []
    base = study["base_batch"]
    for metric in study["metrics"]:
        for q in quantiles:
            for strategy, (eps, _source) in study_thresholds(cube, metric, {"quantile_of_largest": q}).items():
                if not np.isfinite(eps):
                    continue
                sizes, k, _stat, last = k_at(cube, strategy, metric, eps)
                labels = regimes(sizes, seed_means(k), base, float(study["regimes"]["linear_efficiency"]),
                                 float(study["regimes"]["stagnation_gain"]))
                entry = critical_entry(sizes, k, labels, study["bootstrap"], last, base, study["critical_batch"])
                rows.append(critical_row(strategy, metric, float(q), float(eps), entry))
    return pd.DataFrame(rows, columns=list(CRITICAL_COLUMNS))
