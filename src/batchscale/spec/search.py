"""The search space of the `tuned` strategy (Shallue et al. 2018) and its trial points.

At every batch size the tuned strategy trains K trials, each with its own hyperparameters, and keeps the
best. The trial points are drawn once from a scrambled Sobol sequence seeded by the config, so they are
the same at every batch size (the batch sizes are compared on the same search) and the same on every
rerun. Each dimension of the unit cube maps to one hyperparameter:

- the learning rate, log-uniform on [lr.min, lr.max];
- optionally 1 − momentum, log-uniform on [min, max] (so momentum 0.9 and 0.99 are as far apart as
  0.99 and 0.999);
- optionally the schedule, categorical (the cube's [0, 1) cut into equal parts, one per name);
- optionally AdamW's 1 − β2, log-uniform.

An optional refinement round then searches, at each batch size separately, a narrower log range around
that batch size's best learning rate from the first round (the other hyperparameters held at the best
trial's), because a coarse grid biases η*(m) and with it B_crit. Its points form an even log grid, so
their spacing is known (a `max_spacing` of 1.2 gives neighbours at most 1.2× apart).

Functions return plain lists of dicts, one per trial, so the config layer can turn each into a run.

Proposed config keys (a study's `tuning:` block, used when `strategies` contains `tuned`; the JSON-schema
schema is `tuning` in workflow/schemas/config.schema.yaml)::

    tuning:
      trials: 16                 # K, first-round trials per batch size (a power of two balances Sobol)
      seed: 0                    # seed of the scrambled Sobol sequence
      lr: {min: 0.001, max: 1.0} # learning-rate range, searched on a log scale
      one_minus_momentum: null   # or {min: 0.01, max: 0.5}: search 1 - momentum on a log scale
      schedules: null            # or [constant, cosine, ...]: search the schedule too
      one_minus_beta2: null      # AdamW only: or {min: 0.001, max: 0.1}
      refine: null               # or {factor: 2, trials: 8, max_spacing: 1.2}

Trial numbering: first-round trials are 0 .. K−1; refinement trials continue from K (in the workflow their
rates are read at run time from round 1's result: spec.runs.resolve_refinement, rule tuning_refine_ranges). A trial's trace
is spec.manifest.TRACE_PATH with its trial part: results/{study}/traces/tuned/bs{m}/seed{s}_trial{t}.h5.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np


LOG_RANGE_KEYS = (("lr", "lr"), ("one_minus_momentum", "momentum"), ("one_minus_beta2", "beta2"))
"""(config key, hyperparameter name) of the log-range dimensions, in the order of the Sobol dimensions."""

DEFAULT_TRIALS = 16
DEFAULT_SEED = 0
DEFAULT_REFINE = {"factor": 2.0, "trials": 8, "max_spacing": None, "extend_at_edge": True}
"""Defaults for a `tuning` block given in part (the schema fragment holds the same ones; a test checks)."""


# --------------------------------------------------------------------------------------------
# The search space


def search_dimensions(tuning: Mapping) -> list[dict]:
    """The dimensions searched, in Sobol order: ``{"name", "kind": "log"|"categorical", ...}``.

    `tuning` is the config's `tuning:` block. Log dimensions carry ``low``/``high`` (the range of the
    searched quantity: lr, 1 − momentum or 1 − β2) and ``transform`` (how the drawn value becomes the
    hyperparameter); categorical ones carry ``choices``. Raises ValueError on an empty or inverted range.
    """
    dimensions = []
    for key, name in LOG_RANGE_KEYS:
        bounds = tuning.get(key)
        if bounds is None:
            if key == "lr":
                raise ValueError("tuning.lr: a learning-rate range {min, max} is required")
            continue
        low, high = float(bounds["min"]), float(bounds["max"])
        if not 0.0 < low <= high:
            raise ValueError(f"tuning.{key}: need 0 < min <= max, got min={low:g}, max={high:g}")
        if key != "lr" and high >= 1.0:
            raise ValueError(f"tuning.{key}: max must be < 1 (it is one minus a coefficient), got {high:g}")
        dimensions.append({"name": name, "kind": "log", "low": low, "high": high,
                           "transform": "identity" if key == "lr" else "one_minus"})
    schedules = tuning.get("schedules")
    if schedules:
        dimensions.append({"name": "schedule", "kind": "categorical", "choices": list(schedules)})
    return dimensions


def sobol_unit_points(trials: int, dimensions: int, seed: int) -> np.ndarray:
    """The first `trials` points of a scrambled Sobol sequence in [0, 1)^dimensions, seeded.

    The prefix of a Sobol sequence does not depend on how many points are drawn, so asking for more trials
    keeps the first ones. scipy warns when the count is not a power of two (balance properties); that is
    the config's choice, so the warning is silenced here.
    """
    from scipy.stats import qmc

    if trials < 1:
        raise ValueError(f"tuning.trials must be >= 1, got {trials}")
    try:
        sampler = qmc.Sobol(d=dimensions, scramble=True, rng=np.random.default_rng(seed))
    except TypeError:  # scipy < 1.15 names the generator `seed`
        sampler = qmc.Sobol(d=dimensions, scramble=True, seed=np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sampler.random(trials)


def log_uniform(unit, low: float, high: float):
    """Map u in [0, 1) to low·(high/low)^u."""
    unit = np.asarray(unit, dtype=float)
    return low * np.exp(unit * math.log(high / low))


def _hyperparameter(dimension: Mapping, unit: float):
    if dimension["kind"] == "categorical":
        choices = dimension["choices"]
        return choices[min(int(unit * len(choices)), len(choices) - 1)]
    value = float(log_uniform(unit, dimension["low"], dimension["high"]))
    return 1.0 - value if dimension["transform"] == "one_minus" else value


def first_round(tuning: Mapping) -> list[dict]:
    """The K first-round trials: ``[{"trial": t, "round": 1, "lr": ..., [momentum, beta2, schedule]}]``.

    The same list at every batch size, reproducible from ``tuning["seed"]``.
    """
    dimensions = search_dimensions(tuning)
    units = sobol_unit_points(int(tuning.get("trials", DEFAULT_TRIALS)), len(dimensions),
                               int(tuning.get("seed", DEFAULT_SEED)))
    trials = []
    for index, point in enumerate(units):
        trial = {"trial": index, "round": 1}
        for dimension, unit in zip(dimensions, point):
            trial[dimension["name"]] = _hyperparameter(dimension, float(unit))
        trials.append(trial)
    return trials


# --------------------------------------------------------------------------------------------
# The refinement round


def refine_settings(refine: Mapping | None) -> dict | None:
    """The refinement settings with defaults filled in (None when there is no refinement round).

    ``factor`` F: the round searches [η/F, η·F] around the best learning rate η. ``trials``: points of the
    log grid; ``max_spacing`` s: when given, enough points that neighbours are at most s× apart
    (ceil(2 ln F / ln s) + 1 of them, or `trials` if that is more).
    """
    if refine is None:
        return None
    settings = {**DEFAULT_REFINE, **dict(refine)}
    factor = float(settings["factor"])
    if factor <= 1.0:
        raise ValueError(f"tuning.refine.factor must be > 1, got {factor:g}")
    points = int(settings["trials"])
    spacing = settings.get("max_spacing")
    if spacing is not None:
        spacing = float(spacing)
        if spacing <= 1.0:
            raise ValueError(f"tuning.refine.max_spacing must be > 1, got {spacing:g}")
        # a hair of tolerance so that e.g. F = 1.2**4, s = 1.2 gives 9 points, not 10
        points = max(points, math.ceil(2.0 * math.log(factor) / math.log(spacing) - 1e-9) + 1)
    if points < 2:
        raise ValueError(f"tuning.refine needs at least 2 points, got {points}")
    return {"factor": factor, "trials": points, "max_spacing": spacing,
            "extend_at_edge": bool(settings.get("extend_at_edge", True))}


def refinement_exponents(refine: Mapping | None) -> list[float]:
    """Where the round-2 trials sit in the refined range, as exponents e in [-1, 1] of lr = best·factor^e:
    the even grid of `refine_settings`, the centre (already run in round 1) left out. The same at every
    batch size, so round-2 trial K + j has exponent [j] whatever that batch size's best rate."""
    settings = refine_settings(refine)
    if settings is None:
        return []
    exponents = np.linspace(-1.0, 1.0, settings["trials"])
    return [float(e) for e in exponents if not math.isclose(float(e), 0.0, abs_tol=1e-12)]


def refinement_lr(center: float, factor: float, exponent: float) -> float:
    """One refined learning rate: center·factor^exponent."""
    return float(center) * math.exp(float(exponent) * math.log(float(factor)))


def refinement_round(best_by_batch: Mapping, tuning: Mapping) -> dict:
    """The refinement trials of every batch size: {batch_size: [trial dicts]}.

    `best_by_batch` maps a batch size to its best first-round trial (a dict with at least ``lr``; its
    other hyperparameters are kept). Each batch size gets the even log grid of `refinement_exponents` around
    its best lr, numbered from K (the first round's size) on, with ``round: 2``. A grid point that equals the
    centre (an odd number of points) repeats a trial already run and is left out; the union of both
    rounds keeps the grid's spacing. Deterministic: the same inputs give the same trials.
    """
    settings = refine_settings(tuning.get("refine"))
    if settings is None:
        return {}
    first = int(tuning.get("trials", DEFAULT_TRIALS))
    exponents = refinement_exponents(tuning.get("refine"))
    rounds = {}
    for batch_size, best in sorted(best_by_batch.items()):
        center = float(best["lr"])
        lrs = [refinement_lr(center, settings["factor"], e) for e in exponents]
        others = {key: value for key, value in best.items() if key not in ("trial", "round", "lr")}
        rounds[batch_size] = [{"trial": first + index, "round": 2, **others, "lr": float(lr)}
                              for index, lr in enumerate(lrs)]
    return rounds
