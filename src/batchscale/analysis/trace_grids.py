"""Traced curves on a common step grid, for the figures that draw raw traces (loss contours, loss curves).

Cube points are NaN past a run's end and at the final steps of other runs (the cube's step axis is the union
of every run's evaluation points). Curves and contours therefore use, per run, only that run's own finite
points, interpolated in log-log onto the common step grid between its first and last point; outside that
range a run contributes nothing, and the mean over seeds is left blank wherever a seed with data is blank.
"""

from __future__ import annotations

import numpy as np

from batchscale.analysis.accessors import metric_values, run_status


def run_on_grid(steps, values, grid) -> np.ndarray:
    """One run's curve on a step grid.

    Args:
      steps: the run's evaluation steps.
      values: its values there.
      grid: the steps to interpolate onto.

    Returns:
      the run's finite, positive points interpolated linearly in (log step, log value) onto `grid`; NaN
      outside the run's own first..last finite point (never extrapolated) and where the run has none. Step 0
      is left out (no place on a log axis).
    """
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    grid = np.asarray(grid, dtype=float)
    out = np.full(grid.shape, np.nan)
    keep = np.isfinite(values) & np.isfinite(steps) & (steps > 0) & (values > 0)
    if not keep.any():
        return out
    order = np.argsort(steps[keep], kind="stable")
    s, v = steps[keep][order], values[keep][order]
    inside = (grid >= s[0]) & (grid <= s[-1])
    out[inside] = 10.0 ** np.interp(np.log10(grid[inside]), np.log10(s), np.log10(v))
    return out


def seed_mean_on_grid(steps, per_seed, grid) -> np.ndarray:
    """The mean over seeds of each seed's `run_on_grid`.

    Args:
      steps: the evaluation steps.
      per_seed: values over (seed, step).
      grid: the steps to interpolate onto.

    Returns:
      the mean on `grid`; seeds without any finite point (missing runs) are ignored; elsewhere the mean is
      NaN as soon as one seed with data has no value there.
    """
    per_seed = np.atleast_2d(np.asarray(per_seed, dtype=float))
    runs = [run_on_grid(steps, row, grid) for row in per_seed if np.isfinite(row).any()]
    if not runs:
        return np.full(np.shape(grid), np.nan)
    return np.mean(np.vstack(runs), axis=0)


def positive_steps(cube) -> np.ndarray:
    """The cube's evaluation steps above 0 (the steps a log axis can show)."""
    steps = np.asarray(cube["step"].values, dtype=float)
    return steps[steps > 0]


def contour_grid(cube, metric: str, strategy: str):
    """A strategy's seed-mean `metric` over batch size and iterations.

    Args:
      cube: a study cube.
      metric: the metric (`accessors.metric_values`).
      strategy: the strategy.

    Returns:
      (batch sizes, step grid, Z) with Z[step, batch] the seed mean on the grid (`seed_mean_on_grid`).
    """
    values = metric_values(cube, metric).sel(strategy=strategy).transpose("batch_size", "seed", "step")
    steps = np.asarray(cube["step"].values, dtype=float)
    grid = positive_steps(cube)
    sizes = np.asarray(cube["batch_size"].values, dtype=float)
    z = np.column_stack([seed_mean_on_grid(steps, values.values[i], grid) for i in range(sizes.size)])
    return sizes, grid, z


def diverged_ends(cube, metric: str, strategy: str) -> list[tuple[float, float]]:
    """Where the diverged runs of a strategy stopped.

    Args:
      cube: a study cube.
      metric: the metric whose last finite point counts.
      strategy: the strategy.

    Returns:
      [(batch size, last finite step)] of every diverged run (empty without run statuses).
    """
    if "status" not in cube:
        return []
    status = run_status(cube).sel(strategy=strategy).transpose("batch_size", "seed").values
    values = metric_values(cube, metric).sel(strategy=strategy).transpose("batch_size", "seed", "step")
    steps = np.asarray(cube["step"].values, dtype=float)
    ends = []
    for i, size in enumerate(np.asarray(cube["batch_size"].values, dtype=float)):
        for j in range(status.shape[1]):
            if str(status[i, j]) == "diverged":
                finite = np.isfinite(values.values[i, j]) & (steps > 0)
                if finite.any():
                    ends.append((float(size), float(steps[finite].max())))
    return ends
