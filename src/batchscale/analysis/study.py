"""A study's tables: thresholds, iterations to threshold, speedup, regimes, critical batch size, accuracy and
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
                            by default the smallest of the strategies' own eps, see `thresholds.common_threshold`)
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
                            eps met at step 0), missing (see speedup.regimes)
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

``warmup_check.csv`` (k(m) against each run's warm-up) and ``critical_vs_threshold.csv`` (B_crit across a
family of eps): columns in `batchscale.analysis.robustness`.

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
from pathlib import Path

import numpy as np
import pandas as pd

from batchscale.analysis import tuned_tables
from batchscale.analysis.accuracy import accuracy_markdown, accuracy_table, linear_error_table
from batchscale.analysis.curves import (
    SPEEDUP_COLUMNS,
    critical_entry,
    k_at,
    resolve_study,
    source_check,
    speedup_rows,
    with_curve_columns,
)
from batchscale.analysis.documents import critical_document, json_safe
from batchscale.analysis.noise import study_noise_tables
from batchscale.analysis.noise_tuned import study_noise_vs_tuned
from batchscale.analysis.robustness import critical_vs_threshold_table, warmup_check_table
from batchscale.analysis.steps import smooth_cube
from batchscale.analysis.thresholds import common_threshold, describe_threshold_rule, study_thresholds
from batchscale.store.cube import open_cube
from batchscale.store.records import write_record

# The CSV files of a study, in the order they are written (critical_batch.json and accuracy.md beside them).
TABLE_STEMS = ("speedup", "speedup_common", "accuracy", "linear_error", "noise_scale", "noise_over_training",
               "noise_vs_tuned", "warmup_check", "critical_vs_threshold", "tuned", "tuned_trials")


def metric_thresholds(cube, study: dict, metric: str):
    """Every strategy's own eps of a metric and the metric's common eps.

    Args:
      cube: a study cube.
      study: the resolved study config.
      metric: the metric.

    Returns:
      ({strategy: (eps, source batch)}, common eps); a cube with tuned trials adds ``tuned`` (its own eps:
      the rule applied to the best trial of the largest batch, with its source), which takes part in the
      common eps like any strategy.
    """
    thresholds = study_thresholds(cube, metric, study["threshold"])
    if tuned_tables.has_tuned(cube):
        own = tuned_tables.own_threshold(cube, metric, study["threshold"])
        thresholds[tuned_tables.TUNED] = (own["eps"], own)
    return thresholds, common_threshold(thresholds, study["common_threshold"])


def study_curves(cube, study: dict, scope: str = "strategy"):
    """The curves of the fixed strategies of a study.

    Args:
      cube: a study cube.
      study: the resolved study config.
      scope: ``strategy`` (each strategy's own eps) or ``common`` (the metric's common eps).

    Yields:
      (strategy, metric, eps, source batch, batch sizes, k (batch x seed), status, last steps).
    """
    for metric in study["metrics"]:
        thresholds, common = metric_thresholds(cube, study, metric)
        thresholds.pop(tuned_tables.TUNED, None)
        for strategy in [str(s) for s in cube["strategy"].values]:
            eps, source = thresholds[strategy]
            if scope == "common":
                eps = common
            yield (strategy, metric, eps, source) + k_at(cube, strategy, metric, eps)


def tuned_analysis(cube, study: dict) -> dict:
    """The tables of the tuned strategy.

    Args:
      cube: a study cube with tuned trials.
      study: the resolved study config.

    Returns:
      {"tuned": tuned.csv, "tuned_trials": tuned_trials.csv, "entries": {scope: {metric: entry}}}.
    """
    rows, trials, entries = [], [], {"strategy": {}, "common": {}}
    for metric in study["metrics"]:
        thresholds, common = metric_thresholds(cube, study, metric)
        own, source = thresholds[tuned_tables.TUNED]
        for scope, eps in (("strategy", own), ("common", common)):
            if not np.isfinite(eps):
                continue
            got = tuned_tables.tuned_at(cube, study, metric, eps, scope, source)
            rows.append(got["rows"])
            trials.append(got["trials"])
            entries[scope][metric] = got["entry"]
    return {"tuned": pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(tuned_tables.TUNED_COLUMNS)),
            "tuned_trials": pd.concat(trials, ignore_index=True) if trials else
            pd.DataFrame(columns=list(tuned_tables.TRIAL_COLUMNS)),
            "entries": entries}


def merge_tuned(tuned: dict, summary: dict, common_entries: dict, thresholds: dict) -> None:
    """Add the tuned strategy's entries (`tuned_analysis`) to the parts of critical_batch.json, in place."""
    for metric, entry in tuned["entries"]["strategy"].items():
        summary.setdefault(tuned_tables.TUNED, {})[metric] = entry
        thresholds.setdefault(metric, {"strategies": {}})["strategies"][tuned_tables.TUNED] = {
            "threshold": entry["threshold"], "source_batch_size": entry["threshold_batch_size"],
            "source_trial": entry["threshold_trial"]}
    for metric, entry in tuned["entries"]["common"].items():
        common_entries.setdefault(metric, {"threshold": entry["threshold"], "strategies": {}})
        common_entries[metric]["strategies"][tuned_tables.TUNED] = entry


def analyse_cube(cube, study=None) -> dict:
    """Every number of a study, computed once.

    Args:
      cube: a study cube.
      study: the study config; None reads it from the cube.

    Returns:
      {"speedup": DataFrame at each strategy's own eps, "speedup_common": DataFrame at each metric's common
      eps, "critical_batch": dict}, and with tuned trials "tuned" and "tuned_trials" (columns and layout in
      the module docstring).
    """
    study = resolve_study(cube, study)
    cube = smooth_cube(cube, float(study["k_smoothing_decades"]))  # k (and eps) on the smoothed loss
    rule_text = describe_threshold_rule(study["threshold"])
    out = {}
    summary, common_entries, thresholds = {}, {}, {}
    for scope in ("strategy", "common"):
        frames = []
        for strategy, metric, eps, source, sizes, k, stat, last in study_curves(cube, study, scope):
            rows = speedup_rows(sizes, k, stat, study["base_batch"], study["regimes"], study["bootstrap"])
            frames.append(with_curve_columns(rows, strategy, metric, eps, rule_text, source, scope))
            entry = critical_entry(sizes, k, rows["regime"].tolist(), study["bootstrap"], last,
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
        merge_tuned(tuned, summary, common_entries, thresholds)
    document = critical_document(study, rule_text, summary, common_entries, thresholds)
    if "study" in getattr(cube, "attrs", {}):
        document = {"study": str(cube.attrs["study"]), **document}
    out["critical_batch"] = json_safe(document)
    return out


def speedup_table(cube, study=None, scope: str = "strategy") -> pd.DataFrame:
    """The tidy speedup table (SPEEDUP_COLUMNS).

    Args:
      cube: a study cube.
      study: the study config (None: the cube's).
      scope: ``strategy`` (each strategy's own eps) or ``common`` (the common eps per metric).

    Returns:
      speedup.csv or speedup_common.csv.
    """
    return analyse_cube(cube, study)["speedup" if scope == "strategy" else "speedup_common"]


def critical_batch_summary(cube, study=None) -> dict:
    """critical_batch.json of a study, JSON-serialisable (``json.dumps(..., allow_nan=False)``).

    Args:
      cube: a study cube.
      study: the study config (None: the cube's).

    Returns:
      the document (layout in the module docstring); NaN and inf are written as null (see its ``null``).
    """
    return analyse_cube(cube, study)["critical_batch"]


def study_tables(cube, study_config=None) -> dict:
    """Every table of a study.

    Args:
      cube: a study cube.
      study_config: the study config (None: the cube's).

    Returns:
      {"speedup", "speedup_common", "accuracy", "linear_error", "noise_scale", "noise_over_training",
      "noise_vs_tuned", "warmup_check", "critical_vs_threshold" (`robustness`) (and with tuned trials "tuned",
      "tuned_trials"): DataFrame or None, "critical_batch": dict}.
    """
    result = analyse_cube(cube, study_config)
    has_acc = "test_acc" in cube or "final_test_acc" in cube
    result["accuracy"] = accuracy_table(cube) if has_acc else None
    train = result["speedup"][result["speedup"]["metric"] == "train_loss"]
    eps = {str(s): float(g["threshold"].iloc[0]) for s, g in train.groupby("strategy")}
    result["linear_error"] = linear_error_table(cube, eps) if "train_loss" in cube else None
    raw = study_config if study_config is not None else json.loads(cube.attrs.get("study_config_json", "{}"))
    window = (raw.get("noise_scale") or {}).get("window", 3)
    result.update(study_noise_tables(cube, result["critical_batch"], window))
    result["noise_vs_tuned"] = study_noise_vs_tuned(cube, result["noise_over_training"], result["critical_batch"],
                                                    raw)
    result["warmup_check"] = warmup_check_table(cube, raw, result["speedup_common"], result.get("tuned"))
    resolved = resolve_study(cube, study_config)
    result["critical_vs_threshold"] = critical_vs_threshold_table(
        smooth_cube(cube, float(resolved["k_smoothing_decades"])), resolved)
    return result


def write_tables(out_dir, frames: dict, critical: dict) -> dict:
    """Write a study's (or a sweep's) files.

    Args:
      out_dir: the folder (created).
      frames: {stem: DataFrame or None}, e.g. speedup, speedup_common, accuracy, linear_error; each is
        written as ``{stem}.csv``, and an accuracy table also as accuracy.md.
      critical: the critical_batch.json document.

    Returns:
      {name: path} of the files written.
    """
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


def write_study_tables(cube_path, study_config=None, out_dir=None, study: str | None = None) -> dict:
    """Read a cube and write every table of the study, and the record of what was written (store.records).

    Args:
      cube_path: the study's cube.nc.
      study_config: the study config (None: the cube's).
      out_dir: the folder of the tables (default: the cube's).
      study: the study's name; with it (and study_config), a cube of another study or config is refused.

    Returns:
      `study_tables`' dict with ``paths`` ({name: path}) added.
    """
    cube_path = Path(cube_path)
    cube = open_cube(cube_path, study, study_config if study is not None else None)
    result = study_tables(cube, study_config)
    frames = {name: result.get(name) for name in TABLE_STEMS}
    folder = out_dir if out_dir is not None else cube_path.parent
    result["paths"] = write_tables(folder, frames, result["critical_batch"])
    write_record(folder, result["paths"].values(), cube.attrs.get("study", ""),
                 cube.attrs.get("study_config_sha256", ""), cube.attrs.get("content_sha256", ""))
    return result
