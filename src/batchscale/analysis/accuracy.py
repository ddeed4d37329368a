"""Final accuracy (paper Table 2) and the linear approximation error (paper Fig. 2 right) of a study cube.

``accuracy.csv`` / ``accuracy.md``: the final train loss and train accuracy beside the final test accuracy
(so under-training and a generalization gap can be told apart), per strategy and batch size, mean and sd
over seeds. ``linear_error.csv``: the linear approximation error per strategy, batch size and point
(`LINEAR_ERROR_POINTS`). Columns in `batchscale.analysis.study`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchscale.analysis.accessors import last_finite, run_status
from batchscale.analysis.steps import k_for_run

ACCURACY_COLUMNS = ("strategy", "batch_size", "test_acc_mean_pct", "test_acc_sd_pct", "train_acc_mean_pct",
                    "train_acc_sd_pct", "train_loss_mean", "train_loss_sd", "n_seeds", "n_diverged")
LINEAR_ERROR_COLUMNS = ("strategy", "batch_size", "point", "absolute_mean", "absolute_sd", "relative_mean",
                        "relative_sd", "n_seeds", "available")
LINEAR_ERROR_POINTS = ("at_threshold", "warmup_end", "final")
ERROR_KINDS = ("absolute", "relative")


def final_values(cube, per_run: str, traced: str):
    """The final value of every run.

    Args:
      cube: a study cube.
      per_run: the name of a per-run variable (e.g. final_test_acc).
      traced: the traced variable it summarises (e.g. test_acc).

    Returns:
      the per-run variable when the cube has it, else each run's last finite traced value; None without
      either.
    """
    if per_run in cube:
        return cube[per_run]
    if traced not in cube:
        return None
    return last_finite(cube[traced])


def mean_sd(values: np.ndarray) -> tuple[float, float]:
    """(mean, sd with ddof=1) of the values; NaN mean without values, NaN sd with fewer than 2."""
    return (float(values.mean()) if values.size else float("nan"),
            float(values.std(ddof=1)) if values.size > 1 else float("nan"))


def accuracy_table(cube) -> pd.DataFrame:
    """The accuracy table (ACCURACY_COLUMNS).

    Args:
      cube: a study cube.

    Returns:
      per strategy and batch size, the final test accuracy, train accuracy (percent) and train loss (nats):
      mean and sd over seeds; n_seeds (runs with a final test accuracy, diverged ones included) and
      n_diverged.
    """
    status = run_status(cube)
    finals = {"test": final_values(cube, "final_test_acc", "test_acc"),
              "train": final_values(cube, "final_train_acc", "train_acc"),
              "loss": final_values(cube, "final_train_loss", "train_loss")}
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
            test, train, loss = mean_sd(got["test"] * 100), mean_sd(got["train"] * 100), mean_sd(got["loss"])
            rows.append({
                "strategy": strategy, "batch_size": int(size),
                "test_acc_mean_pct": test[0], "test_acc_sd_pct": test[1],
                "train_acc_mean_pct": train[0], "train_acc_sd_pct": train[1],
                "train_loss_mean": loss[0], "train_loss_sd": loss[1],
                "n_seeds": int(got["test"].size), "n_diverged": int(np.sum(stat == "diverged")),
            })
    return pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS))


def accuracy_markdown(df: pd.DataFrame) -> str:
    """accuracy.md: the accuracy table as Markdown, batch sizes as rows.

    Args:
      df: the accuracy table (`accuracy_table`).

    Returns:
      per strategy three columns: final test accuracy (headed by the strategy's name, the paper's Table 2
      column), train accuracy (``mean ± sd`` percent) and train loss (``mean ± sd`` nats). Cells with
      diverged runs say so, e.g. ``13.00 ± 1.41 (diverged 2/2)``; a cell without runs is ``—``.
    """
    strategies = list(dict.fromkeys(df["strategy"]))
    sizes = sorted(set(int(b) for b in df["batch_size"]))
    columns = [("test_acc_mean_pct", "test_acc_sd_pct", "test acc %", ".2f"),
               ("train_acc_mean_pct", "train_acc_sd_pct", "train acc %", ".2f"),
               ("train_loss_mean", "train_loss_sd", "train loss", ".3g")]
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


def run_scalar(cube, names):
    """A per-run variable (no step dimension) under the first of `names` the cube has; None otherwise."""
    for name in names:
        if name in cube and "step" not in cube[name].dims:
            return cube[name]
    return None


def run_trace(cube, name):
    """A traced variable (with a step dimension) of the cube; None otherwise."""
    return cube[name] if name in cube and "step" in cube[name].dims else None


def nearest_point_value(steps, values, k: float) -> float:
    """The value at the evaluation point nearest to step k in log step.

    Args:
      steps: the evaluation steps.
      values: the values there (only finite values at steps > 0 count).
      k: the step.

    Returns:
      the value; NaN when k is not finite and positive or the run has no such point.
    """
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = np.isfinite(values) & (steps > 0)
    if not (np.isfinite(k) and k > 0) or not keep.any():
        return float("nan")
    s, v = steps[keep], values[keep]
    return float(v[np.argmin(np.abs(np.log(s) - math.log(k)))])


def at_threshold_errors(cube, traces: dict, strategy: str, size, eps: float, stat: np.ndarray) -> dict:
    """The linear approximation error of each seed at the evaluation point nearest to where it reaches eps.

    Args:
      cube: a study cube with train_loss.
      traces: {"absolute": trace or None, "relative": trace or None}.
      strategy: the strategy.
      size: the batch size.
      eps: the strategy's train-loss threshold.
      stat: the seeds' statuses.

    Returns:
      {kind: one value per seed (NaN where not measured)}.
    """
    steps = np.asarray(cube["step"].values, dtype=float)
    values = {kind: np.full(stat.shape, np.nan) for kind in ERROR_KINDS}
    loss = np.atleast_2d(cube["train_loss"].sel(strategy=strategy, batch_size=size).transpose("seed", "step").values)
    for j in range(loss.shape[0]):
        k = k_for_run(steps, loss[j], eps, stat[j])
        for kind, trace in traces.items():
            if trace is not None:
                run = np.atleast_2d(trace.sel(strategy=strategy, batch_size=size).transpose("seed", "step").values)[j]
                values[kind][j] = nearest_point_value(steps, run, k)
    return values


def error_row(strategy: str, size, point: str, values: dict, present: np.ndarray, available: bool) -> dict:
    """One linear_error.csv row from the per-seed values of a point (seeds with data only)."""
    row = {"strategy": strategy, "batch_size": int(size), "point": point}
    for kind in ERROR_KINDS:
        v = values[kind][present]
        mean, sd = mean_sd(v[np.isfinite(v)])
        row[f"{kind}_mean"], row[f"{kind}_sd"] = mean, sd
    row["n_seeds"] = int(np.sum(np.isfinite(values["absolute"][present]) |
                                np.isfinite(values["relative"][present])))
    row["available"] = bool(available)
    return row


def linear_error_table(cube, train_thresholds: dict) -> pd.DataFrame:
    """The linear approximation error table (LINEAR_ERROR_COLUMNS).

    Reads whichever measurements the cube holds: traces ``linear_approx_error`` / ``linear_approx_error_rel``
    over the evaluation points, per-run ``linear_approx_error_warmup_end`` (and ``_rel``) and the final (or
    last finite) ``linear_approx_error`` (per-run, also read as ``final_linear_approx_error``).

    Args:
      cube: a study cube.
      train_thresholds: {strategy: eps of train_loss}, which locate the at-threshold point.

    Returns:
      one row per strategy, batch size and point; a point without its measurement has ``available`` false
      and empty values.
    """
    status = run_status(cube)
    traces = {"absolute": run_trace(cube, "linear_approx_error"), "relative": run_trace(cube, "linear_approx_error_rel")}
    sources = {
        "warmup_end": (run_scalar(cube, ["linear_approx_error_warmup_end"]),
                       run_scalar(cube, ["linear_approx_error_warmup_end_rel"])),
        "final": (run_scalar(cube, ["linear_approx_error", "final_linear_approx_error"]),
                  run_scalar(cube, ["linear_approx_error_final_rel", "final_linear_approx_error_rel"])),
    }
    rows = []
    for strategy in [str(s) for s in cube["strategy"].values]:
        eps = float(train_thresholds.get(strategy, float("nan")))
        for size in cube["batch_size"].values:
            stat = np.atleast_1d(np.asarray(status.sel(strategy=strategy, batch_size=size).values).astype(str))
            for point in LINEAR_ERROR_POINTS:
                values = {kind: np.full(stat.shape, np.nan) for kind in ERROR_KINDS}
                if point == "at_threshold":
                    available = traces["absolute"] is not None or traces["relative"] is not None
                    if available and "train_loss" in cube:
                        values = at_threshold_errors(cube, traces, strategy, size, eps, stat)
                else:
                    available = any(var is not None for var in sources[point])
                    for kind, var in zip(ERROR_KINDS, sources[point]):
                        if var is not None:
                            values[kind] = np.atleast_1d(np.asarray(
                                var.sel(strategy=strategy, batch_size=size).values, dtype=float))
                rows.append(error_row(strategy, size, point, values, stat != "missing", available))
    return pd.DataFrame(rows, columns=list(LINEAR_ERROR_COLUMNS))
