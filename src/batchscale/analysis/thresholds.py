"""The threshold eps of a metric: the rules, and eps per strategy of a study cube.

Rules: ``"lower_quartile_of_largest"`` (the paper's rule), ``{"quantile_of_largest": q}`` or
``{"fixed": value}``. A quantile rule is applied to each seed of the source batch size separately (the
q-quantile of that seed's curve) and eps is the largest of those per-seed quantiles (`threshold_from_seeds`),
so every seed of the source batch reaches eps. (Pooling the seeds' curves and taking one quantile can land
below one seed's minimum: that seed, and with it its batch size, would then never reach the threshold
derived from it.)

The source batch size of a strategy is the largest at which every seed with data completed and trained
(`threshold_source_batch`); each seed's curve is resampled uniformly in steps first
(`resample_uniform_in_steps`: the evaluation grid is log-spaced, and the paper weights every stretch of
training alike). Wherever strategies or studies are compared, one common eps per metric is used
(`common_threshold`).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from batchscale.analysis.accessors import metric_values, run_status

LOWER_QUARTILE = "lower_quartile_of_largest"
COMMON_THRESHOLD_CHOICES = ("largest", "smallest")
# A batch size whose runs end less than 10% below where they started has not trained (a rate too large that
# neither diverges nor learns): the lower quartile of its values would measure the escape from initialisation.
TRAINED_DROP = 0.1


def parse_threshold_rule(rule) -> dict:
    """Normalises a threshold rule.

    Args:
      rule: a config form (``"lower_quartile_of_largest"``, ``{"quantile_of_largest": q}``, ``{"fixed": v}``)
        or a command-line form (``"quantile_of_largest:q"``, ``"fixed:v"``).

    Returns:
      ``{"kind": "quantile_of_largest" | "fixed", "value": float}``.

    Raises:
      ValueError: with a one-line message, for any other rule.
    """
    if isinstance(rule, str):
        text = rule.strip()
        if text == LOWER_QUARTILE:
            return {"kind": "quantile_of_largest", "value": 0.25}
        if ":" in text:
            name, _, value = text.partition(":")
            try:
                return parse_threshold_rule({name.strip(): float(value)})
            except (TypeError, ValueError):
                pass
        raise ValueError(
            f"threshold rule {rule!r} is not allowed; use lower_quartile_of_largest, "
            "quantile_of_largest:q (0 < q < 1) or fixed:value (value > 0)")
    if isinstance(rule, Mapping) and len(rule) == 1:
        (name, value), = rule.items()
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if name == "quantile_of_largest" and 0.0 < value < 1.0:
            return {"kind": "quantile_of_largest", "value": value}
        if name == "fixed" and math.isfinite(value) and value > 0:
            return {"kind": "fixed", "value": value}
    raise ValueError(
        f"threshold rule {rule!r} is not allowed; use lower_quartile_of_largest, "
        "{quantile_of_largest: q} with 0 < q < 1, or {fixed: value} with value > 0")


def describe_threshold_rule(rule) -> str:
    """A short, stable text for a rule, as the tables write it.

    Args:
      rule: any form `parse_threshold_rule` accepts.

    Returns:
      ``lower_quartile_of_largest``, ``quantile_of_largest:0.1`` or ``fixed:0.5``.
    """
    if isinstance(rule, str) and rule.strip() == LOWER_QUARTILE:
        return LOWER_QUARTILE
    parsed = parse_threshold_rule(rule)
    return f"{parsed['kind']}:{parsed['value']:g}"


def threshold_from_rule(largest_batch_values: np.ndarray, rule) -> float:
    """The threshold eps that `rule` gives for one set of traced values.

    Args:
      largest_batch_values: values traced for the source batch size, any shape (NaN and inf are dropped).
      rule: any form `parse_threshold_rule` accepts.

    Returns:
      numpy's default (linear) quantile of the finite values for a quantile rule (NaN when there is none);
      v for ``{"fixed": v}``, whatever the values.
    """
    parsed = parse_threshold_rule(rule)
    if parsed["kind"] == "fixed":
        return float(parsed["value"])
    values = np.asarray(largest_batch_values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(np.quantile(values, parsed["value"]))


def threshold_from_seeds(curves_per_seed, rule) -> float:
    """eps from the source batch's curves: the largest of the per-seed quantiles.

    Each seed's q-quantile lies at or above that seed's minimum, so every seed reaches the largest of them
    (this is the rule's guarantee; a pooled quantile does not give it).

    Args:
      curves_per_seed: one array of values per seed; seeds without finite values are skipped.
      rule: any form `parse_threshold_rule` accepts.

    Returns:
      eps; NaN when no seed has a finite value; v for ``{"fixed": v}``.
    """
    parsed = parse_threshold_rule(rule)
    if parsed["kind"] == "fixed":
        return float(parsed["value"])
    per_seed = [threshold_from_rule(curve, rule) for curve in curves_per_seed]
    per_seed = [v for v in per_seed if np.isfinite(v)]
    return float(max(per_seed)) if per_seed else float("nan")


def resample_uniform_in_steps(steps, values, points: int = 1000) -> np.ndarray:
    """A traced curve as values at equally spaced steps from its first to its last finite point.

    Traces are evaluated on a log-spaced grid, which puts most points early in training; the paper's
    quantile of "loss values traced" weights every stretch of training alike, so quantiles are taken over
    the curve interpolated (linearly in step) onto a uniform grid.

    Args:
      steps: the evaluation steps.
      values: the traced values at those steps (non-finite points are dropped).
      points: the size of the uniform grid.

    Returns:
      `points` values; the last value alone when the curve has one distinct step; empty without any.
    """
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = np.isfinite(steps) & np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if steps.size == 0:
        return np.array([])
    if steps.size == 1 or steps[-1] == steps[0]:
        return values[-1:]
    order = np.argsort(steps)
    grid = np.linspace(steps[order][0], steps[order][-1], points)
    return np.interp(grid, steps[order], values[order])


def seed_curves(per_strategy, steps) -> list:
    """Each seed's curve at one batch size, resampled uniformly in steps.

    Args:
      per_strategy: a DataArray over (seed, step) (or over step alone: one seed).
      steps: the cube's evaluation steps.

    Returns:
      one resampled array per seed with a finite value (NaN-only curves are dropped).
    """
    curves = []
    seeds = per_strategy["seed"].values if "seed" in per_strategy.dims else [None]
    for seed in seeds:
        curve = per_strategy if seed is None else per_strategy.sel(seed=seed)
        values = np.asarray(curve.values, dtype=float)
        if np.isfinite(values).any():
            curves.append(resample_uniform_in_steps(steps, values))
    return curves


def trained(curves) -> bool:
    """Whether every seed trained: its last finite value is at least TRAINED_DROP below its first.

    Args:
      curves: values over (seed, step).

    Returns:
      False as soon as one seed with a finite value did not drop that far.
    """
    for curve in np.atleast_2d(np.asarray(curves, dtype=float)):
        finite = curve[np.isfinite(curve)]
        if finite.size and not finite[-1] <= (1.0 - TRAINED_DROP) * finite[0]:
            return False
    return True


def unstable_runs(values) -> np.ndarray:
    """Which runs show learning-rate instability: they did not train, or their loss rose again.

    A run that fails to drop `TRAINED_DROP` below its first value, or ends more than `TRAINED_DROP` above its
    own lowest value, is not a slow run that would reach eps given more steps: its k has no lower bound, so
    the critical-batch fit leaves its batch size out rather than censoring it.

    Args:
      values: traced values over (..., step); NaN past a run's end.

    Returns:
      a bool array over the leading dims; False for a run without finite values.
    """
    values = np.asarray(values, dtype=float)
    flat = values.reshape(-1, values.shape[-1])
    out = np.zeros(flat.shape[0], dtype=bool)
    for i, curve in enumerate(flat):
        finite = curve[np.isfinite(curve)]
        if finite.size:
            out[i] = (not finite[-1] <= (1.0 - TRAINED_DROP) * finite[0]
                      or finite[-1] > (1.0 + TRAINED_DROP) * finite.min())
    return out.reshape(values.shape[:-1])


def threshold_source_batch(status_of_strategy, values_of_strategy):
    """The batch size whose curves set a strategy's quantile threshold.

    Args:
      status_of_strategy: run statuses over (batch_size, seed).
      values_of_strategy: traced values over (batch_size, seed, step).

    Returns:
      the largest batch size at which every seed with data completed (none diverged, none missing among
      seeds that have data) and trained (`trained`); None when there is none.
    """
    best = None
    for size in values_of_strategy["batch_size"].values:
        stat = np.atleast_1d(np.asarray(status_of_strategy.sel(batch_size=size).values).astype(str))
        present = stat != "missing"
        if (present.any() and np.all(stat[present] == "completed")
                and trained(values_of_strategy.sel(batch_size=size).transpose("seed", "step").values)):
            best = int(size) if best is None else max(best, int(size))
    return best


def study_thresholds(cube, metric: str, rule) -> dict:
    """eps of every strategy of a study cube at its own source batch size.

    Args:
      cube: a study cube (dims strategy, batch_size, seed, step).
      metric: a metric name as `accessors.metric_values` takes it.
      rule: any form `parse_threshold_rule` accepts.

    Returns:
      ``{strategy: (eps, source batch size or None)}``: the fixed value with no source for a fixed rule;
      (NaN, None) for a strategy without a source batch size.
    """
    values = metric_values(cube, metric)
    status = run_status(cube)
    parsed = parse_threshold_rule(rule)
    strategies = [str(s) for s in cube["strategy"].values]
    if parsed["kind"] == "fixed":
        return {s: (float(parsed["value"]), None) for s in strategies}
    steps = cube["step"].values
    out = {}
    for strategy in strategies:
        per_strategy = values.sel(strategy=strategy)
        source = threshold_source_batch(status.sel(strategy=strategy), per_strategy)
        if source is None:
            out[strategy] = (float("nan"), None)
            continue
        curves = seed_curves(per_strategy.sel(batch_size=source), steps)
        out[strategy] = (threshold_from_seeds(curves, rule), source)
    return out


def common_threshold(thresholds: dict, choice: str = "smallest") -> float:
    """The common eps of a metric where strategies (or studies) are compared.

    ``smallest`` (default) is the strictest target any curve sets; a curve whose own eps is looser may never
    reach it at large batch sizes (shown as not reached), which is the finding (BLR stalls where LSR goes
    on). ``largest``: every seed of every curve's source batch reaches it, but it can be so loose that large
    batches reach it within a few steps, where speedups say little.

    Args:
      thresholds: {name: eps or (eps, source)}, each curve's own eps.
      choice: ``smallest`` or ``largest``.

    Returns:
      the common eps; NaN when no own eps is finite.

    Raises:
      ValueError: for another choice.
    """
    if choice not in COMMON_THRESHOLD_CHOICES:
        raise ValueError(f"common_threshold {choice!r} is not allowed; use {' or '.join(COMMON_THRESHOLD_CHOICES)}")
    values = [float(v[0] if isinstance(v, (tuple, list)) else v) for v in thresholds.values()]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return float("nan")
    return max(values) if choice == "largest" else min(values)
