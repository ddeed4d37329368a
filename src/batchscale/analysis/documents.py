"""critical_batch.json: the document around the critical-batch entries, and JSON-safe values.

The layout is documented in `batchscale.analysis.study`.
"""

from __future__ import annotations

import math

import numpy as np

INTERVAL_NOTE = (
    "percentile_bootstrap: over seeds, from 5 seeds; student_t: a Student-t interval over seeds (2-4 seeds; "
    "for a fit, of the per-seed fits); residual_bootstrap: one series, the fit's log residuals resampled; "
    "none: no interval (its bounds are null).")
NULL_NOTE = (
    "null marks a value that cannot be estimated: fewer than 3 batch sizes reached the threshold (no fit), "
    "S_min fitted as 0 so B_crit is infinite (k still falls as 1/m over the measured range: the critical "
    "batch size lies above it), an interval bound that is infinite or not computed (see interval_kind), or "
    "a regime that does not occur in the measured batch sizes.")


def json_safe(obj):
    """A value that `json.dumps(..., allow_nan=False)` writes.

    Args:
      obj: nested dicts, lists and tuples of numbers, strings, booleans and None (numpy scalars included).

    Returns:
      the same structure with NaN and inf floats as None, numpy scalars as Python ones, tuples as lists and
      dict keys as strings.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def critical_document(study: dict, threshold_rule: str, entries: dict, common: dict | None = None,
                      thresholds: dict | None = None) -> dict:
    """The critical_batch.json document.

    Args:
      study: the resolved study config (base_batch, bootstrap, regimes, critical_batch, common_threshold).
      threshold_rule: the rule's text (`thresholds.describe_threshold_rule`, or ``given``).
      entries: {strategy: {metric: entry}} at each strategy's own eps.
      common: {metric: {threshold, strategies: {strategy: entry}}} at the common eps.
      thresholds: {metric: {strategies: {strategy: {threshold, source_batch_size, ...}}, common}}.

    Returns:
      the JSON-safe document: the model and units, the settings, the notes on intervals and nulls, and the
      entries.
    """
    return json_safe({
        "model": "k(m) = S_min * (1 + B_crit / m); E_min = S_min * B_crit (McCandlish et al. 2018), fitted in "
                 "log space with never-reached batch sizes as censored",
        "units": {"B_crit": "examples per step", "S_min": "steps", "E_min": "examples",
                  "overhead_critical_batch": "examples per step", "log_rmse": "natural log of steps",
                  "largest_linear_batch_size": "examples per step",
                  "first_stagnation_batch_size": "examples per step"},
        "base_batch": int(study["base_batch"]),
        "threshold_rule": threshold_rule,
        "confidence": float(study["bootstrap"]["confidence"]),
        "bootstrap_samples": int(study["bootstrap"]["samples"]),
        "interval_kinds": INTERVAL_NOTE,
        "regimes": {k: float(v) for k, v in study["regimes"].items()},
        "common_threshold": study.get("common_threshold", "smallest"),
        "critical_batch": {k: float(v) for k, v in study["critical_batch"].items()},
        "null": NULL_NOTE,
        "thresholds": thresholds or {},
        "strategies": entries,
        "common": common or {},
    })
