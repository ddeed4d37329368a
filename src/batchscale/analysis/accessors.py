"""Read-only access to a study cube: the traced values of a metric, each run's status, final values; and the
bound text the analysis writes for a critical batch outside the measured sizes.

No measurement happens here (no thresholds, fits or intervals): the figures use these to draw raw traces,
and the analysis (`batchscale.analysis.steps`, `thresholds`) to measure them.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


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


def last_finite(values):
    """The last finite value along ``step`` of every run (NaN for a run without any)."""
    data = values.transpose(..., "step")
    array = np.asarray(data.values, dtype=float)
    finite = np.isfinite(array)
    index = array.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1)
    out = np.take_along_axis(array, index[..., None], axis=-1)[..., 0]
    out = np.where(finite.any(axis=-1), out, np.nan)
    dims = [d for d in data.dims if d != "step"]
    return xr.DataArray(out, dims=dims, coords={d: data[d] for d in dims})


def report_bound(report) -> tuple[str, float] | None:
    """A B_crit report that is a bound, as (direction, edge): ``> 128`` gives (">", 128.0), ``< 4`` gives
    ("<", 4.0); None for an estimate."""
    text = str(report).strip()
    if not text.startswith(("<", ">")):
        return None
    return text[0], float(text.lstrip("<> "))
