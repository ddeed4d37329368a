"""A comparison of studies (paper Figs. 3 and 4): one strategy's speedup curve per study, at each study's
own threshold (its own rule) and at one common threshold across the studies.

``results/comparisons/{name}/speedup.csv`` has the columns of `tables.SPEEDUP_COLUMNS` with ``study`` and
``label`` in front; ``threshold_scope`` is ``study`` (the study's own eps from its own threshold rule) or
``common`` (by default the smallest of those eps, `tables.common_threshold`; the comparison's
``common_threshold: largest`` takes the loosest, which every study's source batch reaches).

Each curve's critical batch size (the study's own fit, `tables.critical_entry`, at that curve's eps) is
repeated on its rows in CRITICAL_COLUMNS: the estimate with its interval, and ``b_crit_report`` the text to
quote: the value, or the bound (``> 128``) where the fit puts it outside the measured batch sizes (then the
figure draws no line), or empty where it cannot be estimated; ``b_crit_fit_meaningful`` is the study's own
test (in range and log-RMSE small enough) for drawing it.
"""

from __future__ import annotations

import pandas as pd

from batchscale.analysis import measurements as ms
from batchscale.analysis import tables
from batchscale.config import ConfigError


CRITICAL_COLUMNS = ("b_crit", "b_crit_low", "b_crit_high", "b_crit_interval_kind", "b_crit_report",
                    "b_crit_fit_meaningful")


def critical_columns(entry: dict) -> dict:
    """A curve's critical batch size from `tables.critical_entry` as flat columns (NaN where not estimable)."""
    b_crit = entry["B_crit"]

    def number(value):
        return float("nan") if value is None else float(value)

    return {"b_crit": number(b_crit["estimate"]), "b_crit_low": number(b_crit["low"]),
            "b_crit_high": number(b_crit["high"]), "b_crit_interval_kind": b_crit["interval_kind"],
            "b_crit_report": b_crit.get("report") or "", "b_crit_fit_meaningful": bool(entry["fit_meaningful"])}


def comparison_table(cubes: dict, spec: dict, studies: dict) -> pd.DataFrame:
    """Speedup rows of `spec`'s strategy and metric for every study of the comparison, at each study's own
    eps and at the common eps. `cubes` {study: cube}; `studies` {study: study config}."""
    strategy = spec.get("strategy", "blr")
    metric = spec.get("metric", "train_loss")
    names = list(spec["studies"])
    labels = list(spec.get("labels") or names)
    if len(labels) != len(names):
        raise ConfigError(f"comparison labels ({len(labels)}) must match its studies ({len(names)})")
    own, configs = {}, {}
    for name in names:
        cube = cubes[name]
        if strategy not in [str(s) for s in cube["strategy"].values]:
            raise ConfigError(f"comparison: study {name!r} has no strategy {strategy!r} "
                              f"(it has {', '.join(str(s) for s in cube['strategy'].values)})")
        configs[name] = tables.resolve_study(cube, studies.get(name))
        own[name] = tables.study_thresholds(cube.sel(strategy=[strategy]), metric,
                                            configs[name]["threshold"])[strategy]
    common = tables.common_threshold(own, spec.get("common_threshold", "smallest"))
    frames = []
    for scope in ("study", "common"):
        for name, label in zip(names, labels):
            study = configs[name]
            eps, source = own[name]
            if scope == "common":
                eps = common
            sizes, k, stat, last = tables.k_at(cubes[name], strategy, metric, eps)
            rows = tables.speedup_rows(sizes, k, stat, study["base_batch"], study["regimes"], study["bootstrap"])
            rows = tables.with_curve_columns(rows, strategy, metric, eps,
                                             ms.describe_threshold_rule(study["threshold"]), source, scope)
            entry = tables.critical_entry(sizes, k, rows["regime"].tolist(), study["bootstrap"], last, stat,
                                          study["base_batch"], study["critical_batch"])
            rows = rows[list(tables.SPEEDUP_COLUMNS)]
            for column, value in critical_columns(entry).items():
                rows[column] = value
            rows.insert(0, "label", label)
            rows.insert(0, "study", name)
            frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def write_comparison_table(cube_paths: list, spec: dict, studies: dict, out_path) -> pd.DataFrame:
    """Open the cubes (matched to studies by their ``study`` attribute, else by position), write
    `comparison_table` to `out_path` (CSV) and return it."""
    from pathlib import Path

    from batchscale.cube import open_cube

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
