"""A comparison of studies (paper Figs. 3 and 4): one strategy's speedup curve per study, at each study's
own threshold (its own rule) and at one common threshold across the studies.

``results/comparisons/{name}/speedup.csv`` has the columns of `curves.SPEEDUP_COLUMNS` with ``study`` and
``label`` in front; ``threshold_scope`` is ``study`` (the study's own eps from its own threshold rule) or
``common`` (by default the smallest of those eps, `thresholds.common_threshold`; the comparison's
``common_threshold: largest`` takes the loosest, which every study's source batch reaches).

Each curve's critical batch size (the study's own fit, `curves.critical_entry`, at that curve's eps) is
repeated on its rows in CRITICAL_COLUMNS: the estimate with its interval, and ``b_crit_report`` the text to
quote: the value, or the bound (``> 128``) where the fit puts it outside the measured batch sizes (then the
figure draws no line), or empty where it cannot be estimated; ``b_crit_fit_meaningful`` is the study's own
test (in range and log-RMSE small enough) for drawing it.

``strategy: tuned`` compares the tuned envelopes (Shallue et al.: per batch size the fewest steps any trial
needs), the measurements being the tuned analysis' own (`tuned_tables.tuned_at`, as in tuned.csv and
critical_batch.json): each study's own eps is `tuned_tables.own_threshold` (its rule applied to the best
trial of its largest batch size; ``threshold_batch_size`` is that batch size); ``k_mean`` is the steps to
result and ``k_low``/``k_high`` its bootstrap over seeds and trials (``interval_kind``
``bootstrap_seeds_trials``); the speedup interval is over the seeds of each batch size's best trial, the
trial choice held fixed (its kind ends in ``_of_best_trial``); B_crit is the tuned fit with the
seeds-and-trials bootstrap interval.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from batchscale.analysis import tuned_tables
from batchscale.analysis.curves import (
    SPEEDUP_COLUMNS,
    critical_entry,
    k_at,
    resolve_study,
    speedup_rows,
    with_curve_columns,
)
from batchscale.analysis.steps import smooth_cube
from batchscale.analysis.thresholds import common_threshold, describe_threshold_rule, study_thresholds
from batchscale.errors import ConfigError
from batchscale.store.cube import open_cube


CRITICAL_COLUMNS = ("b_crit", "b_crit_low", "b_crit_high", "b_crit_interval_kind", "b_crit_report",
                    "b_crit_fit_meaningful")


def critical_columns(entry: dict) -> dict:
    """A curve's critical batch size from `critical_entry` as flat columns (NaN where not estimable)."""
    b_crit = entry["B_crit"]

    def number(value):
        return float("nan") if value is None else float(value)

    return {"b_crit": number(b_crit["estimate"]), "b_crit_low": number(b_crit["low"]),
            "b_crit_high": number(b_crit["high"]), "b_crit_interval_kind": b_crit["interval_kind"],
            "b_crit_report": b_crit.get("report") or "", "b_crit_fit_meaningful": bool(entry["fit_meaningful"])}


def _labelled(rows: pd.DataFrame, entry: dict, name: str, label: str) -> pd.DataFrame:
    """A curve's rows in SPEEDUP_COLUMNS with its critical batch (CRITICAL_COLUMNS) and study/label in front."""
    rows = rows[list(SPEEDUP_COLUMNS)].copy()
    for column, value in critical_columns(entry).items():
        rows[column] = value
    rows.insert(0, "label", label)
    rows.insert(0, "study", name)
    return rows


def _strategies_of(cube) -> str:
    names = [str(s) for s in cube["strategy"].values]
    if tuned_tables.has_tuned(cube):
        names.append(tuned_tables.TUNED)
    return ", ".join(names)


def tuned_curve(cube, study: dict, metric: str, eps: float, scope: str, source: dict) -> tuple:
    """A study's tuned envelope at one eps, as a comparison shows it.

    Args:
      cube: the study cube.
      study: its resolved config.
      metric: the metric.
      eps: the threshold.
      scope: ``study`` or ``common``.
      source: where the study's own eps comes from ({batch_size, trial}).

    Returns:
      (speedup rows, critical-batch entry) from `tuned_tables.tuned_at`: the rows of the best trial's seeds
      (`curves.speedup_rows`) with k's interval replaced by the bootstrap over seeds and trials.
    """
    got = tuned_tables.tuned_at(cube, study, metric, eps, scope, source)
    rows = speedup_rows(got["sizes"], got["k_per_seed"], got["status_per_seed"], study["base_batch"],
                               study["regimes"], study["bootstrap"])
    boot = got["rows"].set_index("batch_size")
    rows["k_low"] = boot.loc[rows["batch_size"], "k_low"].to_numpy(dtype=float)
    rows["k_high"] = boot.loc[rows["batch_size"], "k_high"].to_numpy(dtype=float)
    rows["interval_kind"] = tuned_tables.INTERVAL_KIND
    rows["speedup_interval_kind"] = [f"{kind}_of_best_trial" if not kind.startswith("none") else kind
                                     for kind in rows["speedup_interval_kind"].astype(str)]
    rows = with_curve_columns(rows, tuned_tables.TUNED, metric, eps,
                                     describe_threshold_rule(study["threshold"]), source.get("batch_size"),
                                     scope)
    return rows, got["entry"]


def tuned_comparison_table(cubes: dict, spec: dict, studies: dict) -> pd.DataFrame:
    """`comparison_table` for ``strategy: tuned``.

    Args:
      cubes: {study: cube}.
      spec: the comparison config.
      studies: {study: study config}.

    Returns:
      each study's tuned envelope at its own tuned eps and at the common eps (the comparison's
      `common_threshold` rule over those own eps).

    Raises:
      ConfigError: when a study has no tuned search.
    """
    metric = spec.get("metric", "train_loss")
    names = list(spec["studies"])
    labels = list(spec.get("labels") or names)
    cubes = dict(cubes)
    own, configs = {}, {}
    for name in names:
        cube = cubes[name]
        if not tuned_tables.has_tuned(cube):
            raise ConfigError(f"comparison: study {name!r} has no strategy 'tuned' (it has {_strategies_of(cube)})")
        configs[name] = resolve_study(cube, studies.get(name))
        cube = cubes[name] = smooth_cube(cube, float(configs[name]["k_smoothing_decades"]))  # as the study's k
        source = tuned_tables.own_threshold(cube, metric, configs[name]["threshold"])
        own[name] = (source["eps"], source)
    common = common_threshold(own, spec.get("common_threshold", "smallest"))
    frames = []
    for scope in ("study", "common"):
        for name, label in zip(names, labels):
            eps, source = own[name]
            rows, entry = tuned_curve(cubes[name], configs[name], metric, common if scope == "common" else eps,
                                      scope, source)
            frames.append(_labelled(rows, entry, name, label))
    return pd.concat(frames, ignore_index=True)


def comparison_table(cubes: dict, spec: dict, studies: dict) -> pd.DataFrame:
    """A comparison's speedup.csv.

    Args:
      cubes: {study: cube}.
      spec: the comparison config (studies, labels, strategy, metric, common_threshold).
      studies: {study: study config}.

    Returns:
      speedup rows of the strategy and metric for every study, at each study's own eps and at the common
      eps, with study, label and the critical-batch columns (module docstring).

    Raises:
      ConfigError: when labels and studies differ in number or a study lacks the strategy.
    """
    strategy = spec.get("strategy", "blr")
    metric = spec.get("metric", "train_loss")
    names = list(spec["studies"])
    labels = list(spec.get("labels") or names)
    if len(labels) != len(names):
        raise ConfigError(f"comparison labels ({len(labels)}) must match its studies ({len(names)})")
    if strategy == tuned_tables.TUNED:
        return tuned_comparison_table(cubes, spec, studies)
    own, configs = {}, {}
    for name in names:
        cube = cubes[name]
        if strategy not in [str(s) for s in cube["strategy"].values]:
            raise ConfigError(f"comparison: study {name!r} has no strategy {strategy!r} "
                              f"(it has {_strategies_of(cube)})")
        configs[name] = resolve_study(cube, studies.get(name))
        cube = cubes[name] = smooth_cube(cube, float(configs[name]["k_smoothing_decades"]))  # as the study's k
        own[name] = study_thresholds(cube.sel(strategy=[strategy]), metric,
                                            configs[name]["threshold"])[strategy]
    common = common_threshold(own, spec.get("common_threshold", "smallest"))
    frames = []
    for scope in ("study", "common"):
        for name, label in zip(names, labels):
            study = configs[name]
            eps, source = own[name]
            if scope == "common":
                eps = common
            sizes, k, stat, last = k_at(cubes[name], strategy, metric, eps)
            rows = speedup_rows(sizes, k, stat, study["base_batch"], study["regimes"], study["bootstrap"])
            rows = with_curve_columns(rows, strategy, metric, eps,
                                             describe_threshold_rule(study["threshold"]), source, scope)
            entry = critical_entry(sizes, k, rows["regime"].tolist(), study["bootstrap"], last,
                                   study["base_batch"], study["critical_batch"])
            frames.append(_labelled(rows, entry, name, label))
    return pd.concat(frames, ignore_index=True)


def write_comparison_table(cube_paths: list, spec: dict, studies: dict, out_path) -> pd.DataFrame:
    """Write a comparison's speedup.csv.

    Args:
      cube_paths: the studies' cubes (matched to studies by their ``study`` attribute, else by position).
      spec: the comparison config.
      studies: {study: study config}.
      out_path: the CSV to write.

    Returns:
      the table written (`comparison_table`).
    """
    opened = [open_cube(p) for p in cube_paths]
    by_name = {str(c.attrs.get("study")): c for c in opened if c.attrs.get("study")}
    cubes = {}
    for i, study in enumerate(spec["studies"]):
        if study in by_name:
            cubes[study] = by_name[study]
        elif i < len(opened):
            cubes[study] = opened[i]
        else:
            raise ConfigError(f"comparison: no cube for study {study!r}")
    table = comparison_table(cubes, spec, studies)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table
