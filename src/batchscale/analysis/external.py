"""`batchscale analyze` for sweeps run elsewhere: the same tables from a CSV.

Two CSV layouts are accepted (column order free, extra columns ignored):

- traces: ``batch_size, step, loss`` and optionally ``seed``, ``strategy`` -- one row per evaluation
  point. k(m; eps) is measured exactly as for a study cube (log-step interpolation, threshold rule).
- steps-to-target: ``batch_size, steps`` and optionally ``seed``, ``strategy`` -- k measured already;
  ``inf`` in ``steps`` means the target was never reached (not a completed run: status ``not_reached``).

``inf`` in ``loss`` means the run blew up there: it never reaches eps from that point and is not a completed
run (status ``diverged``). Every row is accounted for: a row with an empty strategy, an empty batch size
or an empty value is refused (naming its line numbers), never dropped. An interval that cannot exist (one
seed, or seeds that all gave the same value) is said as such (NaN bounds, interval_kind ``none`` or ``none:
one distinct value``); past 1000 seeds per batch size the intervals come from the normal approximation
(`batchscale.analysis.many_seeds`), so 125,000 seeds per batch size take seconds.

Missing ``seed`` means one seed (0); missing ``strategy`` means ``external``. Output: speedup.csv (and, for
traces, speedup_common.csv at one eps shared by the strategies) and critical_batch.json with the columns and layout of `batchscale.analysis.study` (metric ``loss`` for
traces, ``steps`` for steps-to-target, whose threshold is empty and threshold_rule ``given``).

A bad file raises `AnalysisInputError` (a `ConfigError`, so the CLI prints it as one line) naming the file
and the problem: unreadable, missing columns, non-numeric or non-positive values, duplicated rows, fewer
than two batch sizes, or a base batch size that is not in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

from batchscale.analysis.curves import (
    DEFAULT_STUDY,
    SPEEDUP_COLUMNS,
    critical_entry,
    resolve_study,
    speedup_rows,
    with_curve_columns,
)
from batchscale.analysis.documents import critical_document
from batchscale.analysis.study import analyse_cube, write_tables
from batchscale.analysis.thresholds import LOWER_QUARTILE, parse_threshold_rule
from batchscale.errors import ConfigError

TRACE_COLUMNS = ("batch_size", "step", "loss")
STEPS_COLUMNS = ("batch_size", "steps")
DEFAULT_STRATEGY = "external"


class AnalysisInputError(ConfigError):
    """A bad external CSV; the message is one line naming the file and the problem."""


def _fail(path, message: str):
    raise AnalysisInputError(f"{path}: {message}")


def _numeric(df: pd.DataFrame, column: str, path) -> pd.Series:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        _fail(path, f"column {column!r} has non-numeric value {df[column][bad].iloc[0]!r}")
    return values


def _read_csv(path: Path) -> pd.DataFrame:
    """The file as a DataFrame with stripped column names; a one-line error when it cannot be read."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        _fail(path, "cannot read the file: it does not exist")
    except pd.errors.EmptyDataError:
        _fail(path, "cannot read the file: it is empty")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        _fail(path, f"cannot read the file as CSV: {first}")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _layout(df: pd.DataFrame, path: Path) -> str:
    """``traces`` or ``steps``, told apart by the header; a one-line error when columns are missing."""
    if "step" in df.columns or "loss" in df.columns:
        kind, needed = "traces", TRACE_COLUMNS
    elif "steps" in df.columns:
        kind, needed = "steps", STEPS_COLUMNS
    else:
        _fail(path, "missing columns: a traces CSV needs batch_size, step, loss; a steps-to-target CSV needs "
                    f"batch_size, steps (optional: seed, strategy); found {', '.join(df.columns) or 'none'}")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        _fail(path, f"missing column(s) {', '.join(missing)} for a {kind} CSV (needs {', '.join(needed)}; "
                    "optional: seed, strategy)")
    if df.empty:
        _fail(path, "the file has a header but no rows")
    return kind


def row_numbers(mask: pd.Series, most: int = 10) -> str:
    """The file's line numbers (header = line 1) of the rows in `mask`, the first `most` of them and a count."""
    lines = [str(int(i) + 2) for i in np.flatnonzero(mask.to_numpy())]
    shown = ", ".join(lines[:most])
    return shown + (f" and {len(lines) - most} more" if len(lines) > most else "")


def _run_columns(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """strategy, batch_size (positive integers) and seed (integers, 0 without the column), checked."""
    out = pd.DataFrame(index=df.index)
    if df.replace(r"^\s*$", np.nan, regex=True).isna().all(axis=None):
        _fail(path, f"every one of its {len(df)} row(s) is empty: there is no data to analyse")
    if "strategy" in df.columns:
        names = df["strategy"].astype(str).str.strip()
        empty = df["strategy"].isna() | (names == "")
        if empty.any():
            _fail(path, f"column 'strategy' is empty in row(s) {row_numbers(empty)} (line numbers, the header is "
                        "line 1): name the strategy of every row, or drop the column for a single sweep")
        out["strategy"] = names
    else:
        out["strategy"] = DEFAULT_STRATEGY
    sizes = _numeric(df, "batch_size", path)
    if sizes.isna().any():
        _fail(path, "column 'batch_size' has empty values")
    if (sizes <= 0).any() or not np.isfinite(sizes).all():
        _fail(path, f"column 'batch_size' must be positive, got {sizes[(sizes <= 0) | ~np.isfinite(sizes)].iloc[0]:g}")
    if (sizes >= 2.0 ** 63).any():
        _fail(path, f"column 'batch_size' holds {sizes[sizes >= 2.0 ** 63].iloc[0]:g}, beyond the 64-bit integer range")
    if (sizes != np.round(sizes)).any():
        _fail(path, f"column 'batch_size' must hold integers, got {sizes[sizes != np.round(sizes)].iloc[0]:g}")
    out["batch_size"] = sizes.astype(np.int64)
    if "seed" in df.columns:
        seeds = _numeric(df, "seed", path)
        if seeds.isna().any() or (seeds != np.round(seeds)).any():
            _fail(path, "column 'seed' must hold integers")
        out["seed"] = seeds.astype(np.int64)
    else:
        out["seed"] = 0
    return out


def _add_values(df: pd.DataFrame, out: pd.DataFrame, kind: str, path: Path) -> list[str]:
    """Adds step and loss (traces) or steps (steps-to-target) to `out`, checked; returns the row keys."""
    if kind == "traces":
        steps = _numeric(df, "step", path)
        if steps.isna().any() or not np.isfinite(steps).all():
            _fail(path, "column 'step' has empty or infinite values")
        if (steps < 0).any():
            _fail(path, f"column 'step' must be >= 0, got {steps[steps < 0].iloc[0]:g}")
        out["step"] = steps.astype(float)
        out["loss"] = _numeric(df, "loss", path).astype(float)
        if np.isneginf(out["loss"]).any():
            _fail(path, f"column 'loss' is -inf in row(s) {row_numbers(np.isneginf(out['loss']))}")
        return ["strategy", "batch_size", "seed", "step"]
    steps = _numeric(df, "steps", path)
    if steps.isna().any():
        _fail(path, "column 'steps' has empty values (write inf for a target never reached)")
    if (steps <= 0).any():
        _fail(path, f"column 'steps' must be positive (inf = never reached), got {steps[steps <= 0].iloc[0]:g}")
    if np.isposinf(steps).all():
        _fail(path, "every value of column 'steps' is inf: no batch size reached the target, so there is "
                    "no speedup to measure")
    out["steps"] = steps.astype(float)
    return ["strategy", "batch_size", "seed"]


def check_external_frame(df: pd.DataFrame, source) -> tuple[str, pd.DataFrame]:
    """Checks a table of an external sweep, read from a CSV or given as a DataFrame.

    Args:
      df: the table (layouts in the module docstring; column names already stripped).
      source: what to name in an error (the file, or a description of the DataFrame).

    Returns:
      (kind, DataFrame) as `load_external_csv`.

    Raises:
      AnalysisInputError: naming `source` and the problem.
    """
    kind = _layout(df, source)
    out = _run_columns(df, source)
    keys = _add_values(df, out, kind, source)
    duplicated = out.duplicated(keys)
    if duplicated.any():
        row = out[duplicated].iloc[0]
        _fail(source, "duplicated rows for " + ", ".join(f"{k}={row[k]}" for k in keys))
    for strategy, group in out.groupby("strategy"):
        count = group["batch_size"].nunique()
        if count < 2:
            _fail(source, f"needs at least 2 batch sizes to measure a speedup; strategy {strategy!r} has {count}")
    return kind, out.reset_index(drop=True)


def load_external_csv(path) -> tuple[str, pd.DataFrame]:
    """Reads and checks an external CSV.

    Args:
      path: the CSV (layouts in the module docstring).

    Returns:
      (kind, DataFrame) with kind ``traces`` or ``steps``; the DataFrame has columns strategy (str),
      batch_size (int), seed (int) and either step (float) and loss (float; NaN allowed, ignored) or steps
      (float > 0, inf = never reached).

    Raises:
      AnalysisInputError: naming the file and the problem.
    """
    path = Path(path)
    return check_external_frame(_read_csv(path), path)


def traces_to_cube(df: pd.DataFrame):
    """A cube (strategy, batch_size, seed, step) with ``loss`` and ``status`` from a traces DataFrame.

    A run with an ``inf`` loss blew up: it never reaches eps from there on and is not a completed run
    (status ``diverged``: it cannot be the source batch of eps, and its batch size is left out of the fit).
    """
    indexed = df.set_index(["strategy", "batch_size", "seed", "step"])["loss"]
    cube = indexed.to_xarray().to_dataset(name="loss")
    blew_up = np.isposinf(cube["loss"]).any("step")
    cube["status"] = xr.where(blew_up, "diverged", "completed").astype(str)
    return cube


def _steps_curves(df: pd.DataFrame):
    for strategy, group in df.groupby("strategy", sort=False):
        grid = group.pivot(index="batch_size", columns="seed", values="steps").sort_index()
        yield str(strategy), grid.index.to_numpy(dtype=int), grid.to_numpy(dtype=float)


def external_study(base_batch: int, threshold_rule=LOWER_QUARTILE, regimes: dict | None = None,
                   bootstrap: dict | None = None, critical_batch: dict | None = None) -> dict:
    """The study settings of an external sweep: `DEFAULT_STUDY`'s, with the given overrides merged in."""
    return {
        "base_batch": int(base_batch),
        "threshold": threshold_rule,
        "metrics": ["loss"],
        "regimes": {**DEFAULT_STUDY["regimes"], **(regimes or {})},
        "bootstrap": {**DEFAULT_STUDY["bootstrap"], **(bootstrap or {})},
        "critical_batch": {**DEFAULT_STUDY["critical_batch"], **(critical_batch or {})},
    }


def steps_tables(df: pd.DataFrame, study: dict) -> tuple[pd.DataFrame, dict]:
    """The speedup rows and critical-batch entries of a checked steps-to-target table.

    Args:
      df: a ``steps`` table of `check_external_frame`.
      study: `external_study`'s settings.

    Returns:
      (speedup rows with SPEEDUP_COLUMNS, metric ``steps``, rule ``given``; {strategy: {"steps": entry}},
      each entry `curves.critical_entry`'s with threshold and threshold_batch_size None).
    """
    study = resolve_study(None, study)
    base = study["base_batch"]
    frames, summary = [], {}
    for strategy, batch_sizes, k in _steps_curves(df):
        # inf = never reached: not a completed run
        status = np.where(np.isnan(k), "missing", np.where(np.isinf(k), "not_reached", "completed")).astype(object)
        rows = speedup_rows(batch_sizes, k, status, base, study["regimes"], study["bootstrap"])
        frames.append(with_curve_columns(rows, strategy, "steps", np.nan, "given", None, "given"))
        entry = critical_entry(batch_sizes, k, rows["regime"].tolist(), study["bootstrap"],
                               base_batch=base, critical_cfg=study["critical_batch"])
        summary[strategy] = {"steps": {"threshold": None, "threshold_batch_size": None, **entry}}
    return pd.concat(frames, ignore_index=True)[list(SPEEDUP_COLUMNS)], summary


def check_base_batch(df: pd.DataFrame, kind: str, base_batch, source) -> int:
    """m0 (default: the smallest batch size), checked: among every strategy's batch sizes, and (for steps)
    reached by some seed; an `AnalysisInputError` naming `source` otherwise."""
    base = int(base_batch) if base_batch is not None else int(df["batch_size"].min())
    for strategy, group in df.groupby("strategy"):
        if base not in set(group["batch_size"].tolist()):
            _fail(source, f"base batch size {base} is not among the batch sizes of strategy {strategy!r}: "
                          f"{sorted(group['batch_size'].unique().tolist())}")
        if kind == "steps" and np.isposinf(group.loc[group["batch_size"] == base, "steps"]).all():
            _fail(source, f"the base batch size {base} of strategy {strategy!r} never reached the target (steps "
                          "inf in every seed): no speedup is defined")
    return base


def analyze_external(path, out_dir, threshold_rule=LOWER_QUARTILE, base_batch: int | None = None,
                     regimes: dict | None = None, bootstrap: dict | None = None,
                     critical_batch: dict | None = None, figure_hook: Callable | None = None) -> dict:
    """Writes speedup.csv (and speedup_common.csv for traces) and critical_batch.json from an external CSV.

    Args:
      path: the CSV (layouts in the module docstring).
      out_dir: the folder of the tables.
      threshold_rule: as in the study config (or ``quantile_of_largest:q`` / ``fixed:v``); ignored for a
        steps-to-target CSV.
      base_batch: m0 (default: the smallest batch size in the file).
      regimes: overrides of the study defaults' regime cut-offs.
      bootstrap: overrides of the study defaults' bootstrap settings.
      critical_batch: overrides of the study defaults' critical-batch settings.
      figure_hook: called last as figure_hook(result, out_dir), for figures.

    Returns:
      ``{"kind", "speedup": DataFrame, "speedup_common": DataFrame (traces) or None, "critical_batch":
      dict, "paths"}``.

    Raises:
      AnalysisInputError: for a bad file, rule or base batch size.
    """
    kind, df = load_external_csv(path)
    base = check_base_batch(df, kind, base_batch, path)
    study = external_study(base, threshold_rule, regimes, bootstrap, critical_batch)
    if kind == "traces":
        try:
            parse_threshold_rule(threshold_rule)
        except ValueError as err:
            raise AnalysisInputError(str(err)) from None
        cube = traces_to_cube(df)
        analysed = analyse_cube(cube, study)
        speedup, common, critical = analysed["speedup"], analysed["speedup_common"], analysed["critical_batch"]
    else:
        common = None  # targets given per row: there is no threshold to share
        speedup, summary = steps_tables(df, study)
        critical = critical_document(resolve_study(None, study), "given", summary)
    critical = {"source": str(path), "kind": kind, **critical}
    paths = write_tables(out_dir, {"speedup": speedup, "speedup_common": common}, critical)
    result = {"kind": kind, "speedup": speedup, "speedup_common": common, "critical_batch": critical,
              "paths": paths}
    if figure_hook is not None:
        figure_hook(result, Path(out_dir))
    return result
