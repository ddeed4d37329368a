"""Iterations to threshold: k(m; eps) of one run and of every run of a cube.

k is the first step at which the traced value is <= eps, interpolated linearly in log(step) between the two
bracketing evaluation points (linearly in step when the bracket starts at step 0); ``inf`` when never
reached; ``NaN`` when there is no data (a missing run). A diverged run never reaches a threshold below its
last finite value (`k_for_run`).

k is measured on a smoothed curve (`smooth_in_log_steps`, the study's ``k_smoothing_decades``): the first
crossing of a noisy loss jumps between evaluation points with tiny changes of the run (the same seeds at
eta = 0.02 and 0.0198 gave mean k(4) 562 and 649), while a running mean over a window in log step moves
smoothly.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr


SMOOTHED_VARIABLES = ("train_loss", "test_loss", "test_acc", "loss")


def smooth_in_log_steps(values: np.ndarray, steps, decades: float) -> np.ndarray:
    """A running mean of each curve over a centred window in log10(step).

    Args:
      values: curves over (..., step); NaN where not evaluated (kept NaN).
      steps: the evaluation steps.
      decades: the window's width in decades of steps (0: the values unchanged). Step 0 (no logarithm) is
        kept as it is.

    Returns:
      the smoothed values: at step s, the mean of the finite values at steps s' > 0 with
      |log10 s' - log10 s| <= decades / 2.
    """
    values = np.asarray(values, dtype=float)
    if not decades or decades <= 0:
        return values
    steps = np.asarray(steps, dtype=float)
    logs = np.log10(np.where(steps > 0, steps, np.nan))
    window = np.abs(logs[:, None] - logs[None, :]) <= decades / 2.0 + 1e-12  # NaN (step 0) compares False
    np.fill_diagonal(window, True)
    finite = np.isfinite(values)
    sums = np.where(finite, values, 0.0) @ window.T.astype(float)
    counts = finite.astype(float) @ window.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / counts
    return np.where(finite, out, values)


def smooth_cube(cube, decades: float):
    """The cube with its traced metrics (and the tuned trials') smoothed in log step for measuring k.

    Args:
      cube: a study cube.
      decades: `smooth_in_log_steps`' window (0: the cube itself).

    Returns:
      a copy with SMOOTHED_VARIABLES (and their ``tuned_`` versions) smoothed along ``step``.
    """
    if not decades or decades <= 0:
        return cube
    out = cube.copy()
    steps = cube["step"].values
    for name in [v for v in cube.data_vars if v in SMOOTHED_VARIABLES or v[len("tuned_"):] in SMOOTHED_VARIABLES]:
        if "step" in cube[name].dims:
            var = cube[name]
            order = [d for d in var.dims if d != "step"] + ["step"]
            smoothed = smooth_in_log_steps(var.transpose(*order).values, steps, decades)
            out[name] = xr.DataArray(smoothed, dims=order, coords=var.transpose(*order).coords).transpose(*var.dims)
    return out


def iterations_to_threshold(steps, values, threshold: float) -> float:
    """k: the first step at which `values` <= `threshold`, interpolated in log(step).

    Non-finite points (NaN: not evaluated; inf) are ignored; points are taken in step order. With
    (s_a, v_a) the last point above the threshold and (s_b, v_b) the first point at or below it, and
    t = (v_a - eps) / (v_a - v_b):

        k = exp(log s_a + t (log s_b - log s_a))   when s_a > 0,
        k = s_a + t (s_b - s_a)                    when s_a == 0 (log 0 is undefined).

    Args:
      steps: evaluation steps of one run.
      values: the traced values at those steps.
      threshold: eps.

    Returns:
      k (steps); s_b itself when v_b == eps; the first point's step when the first finite point is already
      at or below the threshold (0 when it is step 0: there is no earlier point to interpolate from); inf
      when the threshold is never reached; NaN when there is no finite point or the threshold is NaN.

    Raises:
      ValueError: when steps and values differ in length.
    """
    steps = np.asarray(steps, dtype=float).ravel()
    values = np.asarray(values, dtype=float).ravel()
    if steps.shape != values.shape:
        raise ValueError(f"steps and values differ in length ({steps.size} vs {values.size})")
    if not np.isfinite(threshold) and not np.isposinf(threshold):
        return float("nan")
    keep = np.isfinite(values) & np.isfinite(steps)
    steps, values = steps[keep], values[keep]
    if steps.size == 0:
        return float("nan")
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    hits = np.flatnonzero(values <= threshold)
    if hits.size == 0:
        return float("inf")
    b = int(hits[0])
    if b == 0:
        return float(steps[0])
    s_a, s_b, v_a, v_b = steps[b - 1], steps[b], values[b - 1], values[b]
    if v_b == threshold:
        return float(s_b)
    t = (v_a - threshold) / (v_a - v_b)
    if s_a <= 0:
        return float(s_a + t * (s_b - s_a))
    return float(math.exp(math.log(s_a) + t * (math.log(s_b) - math.log(s_a))))


def k_for_run(steps, values, threshold: float, status: str = "completed") -> float:
    """k for one run, applying the divergence rule.

    A run whose status is ``diverged`` counts as never reaching a threshold below its last finite value
    (k = inf), even if its trace dipped below the threshold earlier; at or above that value k is taken from
    the trace as usual.

    Args:
      steps: evaluation steps of the run.
      values: its traced values.
      threshold: eps.
      status: ``completed``, ``diverged`` or ``missing``.

    Returns:
      k (steps) as `iterations_to_threshold` gives it; NaN for a missing run.
    """
    if status == "missing":
        return float("nan")
    if status == "diverged":
        finite = np.asarray(values, dtype=float)
        finite_steps = np.asarray(steps, dtype=float)
        mask = np.isfinite(finite)
        if not mask.any():
            return float("inf")
        last = finite[mask][np.argmax(finite_steps[mask])]
        if threshold < last:
            return float("inf")
    return iterations_to_threshold(steps, values, threshold)


def k_per_run(values, threshold, status=None, step_dim: str = "step"):
    """k for every run of a cube variable.

    Args:
      values: a DataArray with a step dimension (typically (strategy, batch_size, seed, step)).
      threshold: a float, or a DataArray broadcastable against the other dimensions (e.g. over strategy).
      status: an optional DataArray of run statuses (``completed`` | ``diverged`` | ``missing``).
      step_dim: the name of the step dimension.

    Returns:
      a float DataArray over the remaining dimensions, named ``k`` (unit: steps).
    """
    steps = np.asarray(values[step_dim].values, dtype=float)
    thr = threshold if isinstance(threshold, xr.DataArray) else xr.DataArray(float(threshold))
    stat = status if status is not None else xr.DataArray("completed")
    values_b, thr_b, stat_b = xr.broadcast(values, thr, stat, exclude=[step_dim])
    dims = [d for d in values_b.dims if d != step_dim]
    data = values_b.transpose(*dims, step_dim).values
    thr_v = thr_b.transpose(*dims).values if dims else thr_b.values
    stat_v = stat_b.transpose(*dims).values if dims else stat_b.values
    out = np.empty(data.shape[:-1], dtype=float)
    for index in np.ndindex(out.shape):
        out[index] = k_for_run(steps, data[index], float(thr_v[index]), str(stat_v[index]))
    coords = {d: values_b[d] for d in dims if d in values_b.coords}
    return xr.DataArray(out, dims=dims, coords=coords, name="k", attrs={"units": "steps"})


def last_steps(values, steps) -> np.ndarray:
    """How far each run was followed: the last step with a finite value.

    A run that never reached eps needs more steps than that (the censoring bound of the critical-batch fit).

    Args:
      values: a DataArray over (batch_size, seed, step).
      steps: the evaluation steps.

    Returns:
      an array (batch size, seed) of steps; NaN for a run without any finite value.
    """
    data = np.asarray(values.transpose("batch_size", "seed", "step").values, dtype=float)
    steps = np.asarray(steps, dtype=float)
    out = np.full(data.shape[:2], np.nan)
    for index in np.ndindex(out.shape):
        finite = np.isfinite(data[index])
        if finite.any():
            out[index] = steps[finite].max()
    return out
