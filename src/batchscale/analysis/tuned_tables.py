"""The tables of the `tuned` strategy from a study cube: tuned.csv, tuned_trials.csv and the tuned entries
of critical_batch.json. The measurements themselves are `batchscale.analysis.tuned`'s; this module reads
the cube's tuned_ variables (dims batch_size, trial, seed [, step]; see batchscale.cube) into its tables.

``tuned.csv`` -- one row per metric x threshold scope x batch size: ``strategy`` (tuned), ``metric``,
``batch_size``, ``threshold`` (eps), ``threshold_scope`` (``strategy``: tuned's own eps, the configured
rule applied as for the fixed strategies (per-seed quantile of the curve resampled uniformly in steps, the
largest over seeds) to the seeds of the best trial of the largest batch size, `tuned.tuned_threshold`; ``common``: the
metric's one common eps shared with the fixed rules), ``threshold_rule``, ``threshold_batch_size`` and
``threshold_trial`` (the source of tuned's own eps), ``base_batch``, ``k`` (steps to result: the fewest
steps any trial needs, a trial's k being its mean over seeds; inf when no trial reached eps), ``k_low``,
``k_high`` and ``interval_kind`` (a percentile bootstrap resampling seeds and trials together,
``bootstrap_seeds_trials``), ``best_trial`` (-1 when none reached eps), ``lr`` (eta*(m), the best trial's
peak learning rate) and the other searched hyperparameters (``momentum``, ``schedule``), ``n_trials``,
``n_reached``, ``lr_min``/``lr_max`` (the range tried), ``lr_edge`` (``low``/``high`` when eta*(m) is at an
edge of that range: the optimum may lie outside it and k is then an upper bound; empty otherwise),
``speedup`` (k(m0)/k(m)), ``ideal_speedup`` (m/m0) and ``efficiency``.

``tuned_trials.csv`` -- every trial's k against its hyperparameters: ``metric``, ``threshold_scope``,
``threshold``, ``batch_size``, ``trial``, ``lr`` (and ``momentum``/``schedule`` when searched), ``k``
(mean over seeds; inf when a seed missed eps or diverged), ``n_seeds``, ``n_diverged``.

critical_batch.json gains ``tuned`` under ``strategies`` (tuned's own eps) and under ``common`` (the common
eps): the usual entry of `curves.critical_entry` computed on the per-seed k of each batch size's best
trial, whose B_crit interval is replaced by the bootstrap over seeds and trials of the envelope, plus
``B_noise`` and ``eta_max`` of the fit eta*(m) = eta_max / (1 + B_noise/m) with the same bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr

from batchscale.analysis.curves import critical_entry
from batchscale.analysis.speedup import efficiency, ideal_speedup, regimes, speedup
from batchscale.analysis.steps import k_per_run
from batchscale.analysis.thresholds import describe_threshold_rule
from batchscale.analysis import tuned as tn

PREFIX = "tuned_"
TUNED = "tuned"
INTERVAL_KIND = "bootstrap_seeds_trials"
HYPER_NAMES = ("lr", "momentum", "beta2", "schedule")
TUNED_COLUMNS = ("strategy", "metric", "batch_size", "threshold", "threshold_scope", "threshold_rule",
                 "threshold_batch_size", "threshold_trial", "base_batch", "k", "k_low", "k_high",
                 "interval_kind", "best_trial", "lr", "momentum", "schedule", "n_trials", "n_reached", "lr_min",
                 "lr_max", "lr_edge", "speedup", "ideal_speedup", "efficiency")
TRIAL_COLUMNS = ("metric", "threshold_scope", "threshold", "batch_size", "trial", "lr", "momentum", "schedule",
                 "k", "n_seeds", "n_diverged")


def has_tuned(cube) -> bool:
    """Whether the cube holds the trials of a tuned search."""
    return f"{PREFIX}status" in cube


def trial_view(cube):
    """The tuned_ variables of a cube without their prefix (dims batch_size, trial, seed [, step])."""
    names = [name for name in cube.data_vars if name.startswith(PREFIX)]
    return cube[names].rename({name: name[len(PREFIX):] for name in names})


def trial_values(view, metric: str):
    """The trials' traced `metric` (test_error is 1 - test_acc) of a `trial_view`."""
    if metric == "test_error":
        return 1.0 - view["test_acc"]
    return view[metric]


def trial_status(view):
    """Each trial run's status; ``missing`` where the run has no finite value of `metric`'s traces."""
    present = np.isfinite(view["train_loss"]).any("step")
    return xr.where(present, view["status"].astype(str), "missing")


def completed_values(cube, metric: str) -> pd.DataFrame:
    """The completed trial runs' `metric` as a long table (batch_size, trial, seed, step, value)."""
    view = trial_view(cube)
    values = trial_values(view, metric).where(trial_status(view) == "completed")
    return values.rename("value").to_dataframe().reset_index()[["batch_size", "trial", "seed", "step", "value"]]


def own_threshold(cube, metric: str, rule) -> dict:
    """Tuned's own eps for `metric`: `tuned.tuned_threshold` over the completed trial runs."""
    return tn.tuned_threshold(completed_values(cube, metric), rule, value_column="value")


def trial_table(cube, metric: str, eps: float) -> pd.DataFrame:
    """k of every trial run at one threshold.

    Args:
      cube: a study cube with tuned trials.
      metric: the metric.
      eps: the threshold.

    Returns:
      one row per (batch size, trial, seed): k at `eps` (inf when not reached or diverged, NaN when the run
      is missing), status and the trial's hyperparameters.
    """
    view = trial_view(cube)
    status = trial_status(view)
    k = k_per_run(trial_values(view, metric).transpose("batch_size", "trial", "seed", "step"), eps, status)
    table = k.to_dataframe().reset_index()[["batch_size", "trial", "seed", "k"]]
    table["status"] = status.transpose("batch_size", "trial", "seed").values.ravel()
    for name in HYPER_NAMES:
        if name in view:
            hyper = view[name].to_dataframe().reset_index()[["batch_size", "trial", name]]
            table = table.merge(hyper, on=["batch_size", "trial"])
    table.loc[table["status"] == "missing", "k"] = np.nan
    return table


def _per_seed_of_best(table: pd.DataFrame, best: pd.DataFrame, sizes, seeds) -> tuple[np.ndarray, np.ndarray]:
    """(k, status) per (batch size, seed) of each batch size's best trial (inf rows where none reached)."""
    k = np.full((len(sizes), len(seeds)), np.inf)
    status = np.full(k.shape, "completed", dtype=object)
    for i, size in enumerate(sizes):
        trial = int(best.loc[best["batch_size"] == size, "trial"].iloc[0])
        rows = table[(table["batch_size"] == size) & (table["trial"] == (trial if trial >= 0 else table["trial"].min()))]
        for _, row in rows.iterrows():
            j = seeds.index(int(row["seed"]))
            k[i, j] = row["k"] if trial >= 0 else np.inf
            status[i, j] = row["status"]
    return k, status


def tuned_at(cube, study: dict, metric: str, eps: float, scope: str, source: dict) -> dict:
    """The tuned strategy's curve of one metric at one eps.

    Args:
      cube: a study cube with tuned trials.
      study: the resolved study config.
      metric: the metric.
      eps: the threshold.
      scope: ``strategy`` (tuned's own eps) or ``common``.
      source: where tuned's own eps comes from ({batch_size, trial}).

    Returns:
      {"rows": tuned.csv rows, "trials": tuned_trials.csv rows, "entry": the critical-batch entry
      (`curves.critical_entry` on the best trials' seeds, with the B_crit interval of the bootstrap over
      seeds and trials and the optimal-step fit), "sizes", "k_per_seed" and "status_per_seed" of each batch
      size's best trial (the envelope's seeds)}.
    """
    base = int(study["base_batch"])
    table = trial_table(cube, metric, eps)
    keep = [c for c in table.columns if c != "status"]
    best = tn.steps_to_result(table[keep])
    boot = tn.bootstrap_tuned(table[keep].dropna(subset=["k"]), samples=int(study["bootstrap"]["samples"]),
                              confidence=float(study["bootstrap"]["confidence"]), seed=0)
    sizes = [int(m) for m in best["batch_size"]]
    seeds = sorted(int(s) for s in table["seed"].unique())
    k = best["k"].to_numpy(dtype=float)
    k_base = k[sizes.index(base)] if base in sizes else math.nan
    rows = best.rename(columns={"trial": "best_trial"}).copy()
    rows = rows.merge(boot["table"][["batch_size", "k_low", "k_high"]], on="batch_size", how="left")
    rows["strategy"], rows["metric"], rows["threshold"], rows["threshold_scope"] = TUNED, metric, eps, scope
    rows["threshold_rule"] = describe_threshold_rule(study["threshold"])
    rows["threshold_batch_size"], rows["threshold_trial"] = source.get("batch_size"), source.get("trial")
    rows["base_batch"], rows["interval_kind"] = base, INTERVAL_KIND
    rows["speedup"] = [float(speedup(v, k_base)) for v in k]
    rows["ideal_speedup"] = [float(ideal_speedup(m, base)) for m in sizes]
    rows["efficiency"] = [float(efficiency(v, k_base, m, base)) for v, m in zip(k, sizes)]
    rows = rows.reindex(columns=list(TUNED_COLUMNS))

    per_trial = tn.trial_steps(table[keep])
    diverged = table[table["status"] == "diverged"].groupby(["batch_size", "trial"]).size()
    per_trial["n_diverged"] = [int(diverged.get((m, t), 0)) for m, t in zip(per_trial["batch_size"], per_trial["trial"])]
    per_trial["metric"], per_trial["threshold_scope"], per_trial["threshold"] = metric, scope, eps
    trials = per_trial.reindex(columns=list(TRIAL_COLUMNS))

    k_seed, status = _per_seed_of_best(table, best, sizes, seeds)
    labels = regimes(np.asarray(sizes, dtype=float), k, base, float(study["regimes"]["linear_efficiency"]),
                        float(study["regimes"]["stagnation_gain"]))
    entry = critical_entry(sizes, k_seed, labels, study["bootstrap"], None, study["base_batch"],
                           study["critical_batch"])
    entry["B_crit"].update({"low": boot["B_crit_low"], "high": boot["B_crit_high"], "interval_kind": INTERVAL_KIND})
    fit = tn.fit_optimal_lr(sizes, best["lr"].to_numpy(dtype=float))
    entry["B_noise"] = {"estimate": fit["B_noise"], "low": boot["B_noise_low"], "high": boot["B_noise_high"],
                        "interval_kind": INTERVAL_KIND}
    entry["eta_max"] = fit["eta_max"]
    entry["eta_fit_max_abs_log_residual"] = fit["max_abs_log_residual"]
    entry["eta_star"] = {str(m): lr for m, lr in zip(sizes, best["lr"].to_numpy(dtype=float))}
    entry["lr_edge"] = {str(m): edge for m, edge in zip(sizes, best["lr_edge"]) if edge}
    entry["lr_range"] = {str(m): [float(lo), float(hi)] for m, lo, hi in zip(sizes, best["lr_min"], best["lr_max"])}
    entry["interval"] = boot["interval"]
    entry["threshold"] = eps
    entry["threshold_batch_size"], entry["threshold_trial"] = source.get("batch_size"), source.get("trial")
    return {"rows": rows, "trials": trials, "entry": entry, "sizes": sizes, "k_per_seed": k_seed,
            "status_per_seed": status}


def round_one_best(cube, study: dict) -> dict:
    """Each batch size's best first-round trial, the centre of its refinement round (tuning_round1.json).

    The rule is tuned.csv's: tuned's own eps of the study's first metric (`own_threshold`), then steps to
    result (`tuned.steps_to_result`). A batch size where no trial reached eps takes the trial whose seeds
    end at the lowest mean value instead (``source`` ``lowest_final``), so its round 2 still has a centre.

    Args:
      cube: a cube of the first-round trials only.
      study: the resolved study config.

    Returns:
      {metric, threshold, threshold_batch_size, threshold_trial, best: {str(batch size): {trial, lr,
      [momentum, beta2, schedule], k, source}}}.

    Raises:
      ValueError: when no first-round trial of a batch size completed.
    """
    metric = study["metrics"][0]
    own = own_threshold(cube, metric, study["threshold"])
    table = trial_table(cube, metric, own["eps"]) if np.isfinite(own["eps"]) else None
    best = tn.steps_to_result(table.drop(columns=["status"])) if table is not None else None
    view = trial_view(cube)
    values = completed_values(cube, metric)
    result = {}
    for size in (int(m) for m in cube["batch_size"].values):
        row = None if best is None else best[best["batch_size"] == size].iloc[0]
        if row is not None and int(row["trial"]) >= 0:
            trial, k, source = int(row["trial"]), float(row["k"]), "steps_to_result"
        else:
            trial = tn.lowest_final_trial(values[values["batch_size"] == size], "value")
            if trial is None:
                raise ValueError(f"batch size {size}: no first-round trial completed, so round 2 has no centre")
            k, source = math.inf, "lowest_final"
        entry = {"trial": trial, "k": k, "source": source}
        for name in HYPER_NAMES:
            if name in view:
                value = view[name].sel(batch_size=size, trial=trial).item()
                entry[name] = value if isinstance(value, str) else float(value)
        result[str(size)] = entry
    return {"metric": metric, "threshold": float(own["eps"]), "threshold_batch_size": own.get("batch_size"),
            "threshold_trial": own.get("trial"), "best": result}
