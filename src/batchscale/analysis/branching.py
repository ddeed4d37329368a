"""Local critical batch size by branching from checkpoints (Merrill et al. 2025): small pure functions.

From a base run at batch B, checkpoints are taken at log-spaced points of training. From each checkpoint,
short branch runs at batch k B (k = 1, 2, 4, ...) train for the same number of examples Delta, with the
learning rate scaled by a rule (`branch_lr`). Each branch's train loss after Delta examples is smoothed
over its last evaluation points (`smoothed_loss`), and

    local critical batch at a checkpoint = the largest k B whose smoothed loss L_k is within tolerance of
    the k = 1 branch's L_1, scanning k upwards and stopping at the first k that is not; that k B is the
    upper bracket (the local critical batch lies in [k_prev B, k B)).

Tolerance (`within_tolerance`): ``relative``: L_k <= L_1 (1 + tol); ``absolute``: L_k <= L_1 + tol (nats).
A non-finite L_k (a diverged or missing branch) is never within tolerance.

Why the scan stops at the first failure rather than taking the largest passing k anywhere: a loss that is
noisy at large k can pass again after failing, and a bracket [k B, next k B) is only meaningful when every
smaller k passed. Such rows are kept and marked ``non_monotone`` so the noise is visible.

Brackets (column ``bracket``):
- ``interval``: some k > 1 passed and a larger k failed: local critical batch in [lower, upper).
- ``at_least``: every k passed: the local critical batch is >= the largest k B tried (upper = inf).
- ``below``: only k = 1 passed: the local critical batch is < the second k B (lower = B, since the k = 1
  branch passes trivially; the method cannot resolve below B).
- ``missing``: no finite k = 1 loss: nothing can be said (NaN).

Units: batch sizes and examples in examples, losses in nats (the study's train loss on its evaluation
subset), learning rates as configured.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchscale.spec.branching import (LR_RULES, SMOOTHING_KINDS, TOLERANCE_KINDS, branch_lr,  # noqa: F401
                                       branch_steps, checkpoint_steps)

LOCAL_CRITICAL_COLUMNS = (
    "checkpoint_examples", "base_batch", "local_critical_batch", "upper_bracket", "bracket", "bracket_text",
    "reference_loss", "tolerance", "tolerance_kind", "k_tried", "k_within", "non_monotone",
)


def smoothed_loss(losses, kind: str = "last_mean", points: int = 3, ema_alpha: float = 0.5) -> float:
    """A branch's loss after Delta examples from its evaluation points (in order, oldest first).

    ``last_mean``: mean of the last `points` finite values. ``ema``: s_0 = l_0, s_t = a l_t + (1 - a) s_{t-1}
    over the finite values, returning the last s (a = `ema_alpha`; a = 1 is the last point). NaN entries
    (points not evaluated) are left out; any inf (the branch diverged) gives inf; no finite value gives NaN.
    """
    values = np.asarray(losses, dtype=float).ravel()
    if values.size == 0:
        return float("nan")
    if np.isinf(values).any():
        return float("inf")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    if kind == "last_mean":
        if points < 1:
            raise ValueError(f"points must be >= 1, got {points}")
        return float(finite[-points:].mean())
    if kind == "ema":
        if not 0.0 < ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in (0, 1], got {ema_alpha}")
        state = finite[0]
        for value in finite[1:]:
            state = ema_alpha * value + (1.0 - ema_alpha) * state
        return float(state)
    raise ValueError(f"smoothing {kind!r} is not one of {SMOOTHING_KINDS}")


def within_tolerance(loss: float, reference: float, tolerance: float, kind: str = "relative") -> bool:
    """Whether a branch's loss is within tolerance of the k = 1 branch (see the module docstring)."""
    if not (math.isfinite(loss) and math.isfinite(reference)):
        return False
    if kind == "relative":
        return loss <= reference * (1.0 + tolerance) if reference >= 0 else loss <= reference * (1.0 - tolerance)
    if kind == "absolute":
        return loss <= reference + tolerance
    raise ValueError(f"tolerance kind {kind!r} is not one of {TOLERANCE_KINDS}")


def _fmt(value: float) -> str:
    return f"{value:g}"


def local_critical_batch(losses_by_k: dict, base_batch: int, tolerance: float, kind: str = "relative") -> dict:
    """The local critical batch at one checkpoint from {k: smoothed loss after Delta}; k = 1 is the reference.

    Returns {local_critical_batch, upper_bracket, bracket, bracket_text, reference_loss, k_tried, k_within,
    non_monotone} (batch sizes in examples; see the module docstring for the brackets).
    """
    ks = sorted(int(k) for k in losses_by_k)
    if 1 not in ks:
        raise ValueError(f"the k list {ks} has no k = 1 reference branch")
    reference = float(losses_by_k[1])
    within = [k for k in ks if within_tolerance(float(losses_by_k[k]), reference, tolerance, kind)]
    out = {"reference_loss": reference, "k_tried": ",".join(map(str, ks)), "k_within": ",".join(map(str, within)),
           "non_monotone": False}
    if not math.isfinite(reference):
        return {**out, "local_critical_batch": float("nan"), "upper_bracket": float("nan"), "bracket": "missing",
                "bracket_text": "no k = 1 loss", "k_within": ""}
    first_fail = next((k for k in ks if k not in within), None)
    if first_fail is None:
        lower = ks[-1] * base_batch
        return {**out, "local_critical_batch": float(lower), "upper_bracket": float("inf"), "bracket": "at_least",
                "bracket_text": f">= {_fmt(lower)}"}
    last_pass = max(k for k in ks if k < first_fail)
    out["non_monotone"] = any(k > first_fail for k in within)
    lower, upper = last_pass * base_batch, first_fail * base_batch
    if last_pass == 1:
        return {**out, "local_critical_batch": float(lower), "upper_bracket": float(upper), "bracket": "below",
                "bracket_text": f"< {_fmt(upper)}"}
    return {**out, "local_critical_batch": float(lower), "upper_bracket": float(upper), "bracket": "interval",
            "bracket_text": f"[{_fmt(lower)}, {_fmt(upper)})"}


def local_critical_table(branches: pd.DataFrame, tolerance: float, kind: str = "relative") -> pd.DataFrame:
    """One row per checkpoint (LOCAL_CRITICAL_COLUMNS) from a tidy branch table.

    `branches` has one row per checkpoint x k with columns checkpoint_examples (examples seen by the base run
    at the checkpoint), base_batch (B), k, and loss (the smoothed loss after Delta; see `smoothed_loss`).
    """
    missing = {"checkpoint_examples", "base_batch", "k", "loss"} - set(branches.columns)
    if missing:
        raise ValueError(f"branch table lacks columns {sorted(missing)}")
    rows = []
    for (examples, base), group in branches.groupby(["checkpoint_examples", "base_batch"], sort=True):
        if group["k"].duplicated().any():
            raise ValueError(f"checkpoint at {examples} examples has duplicate k values")
        result = local_critical_batch(dict(zip(group["k"].astype(int), group["loss"].astype(float))),
                                      int(base), tolerance, kind)
        rows.append({"checkpoint_examples": examples, "base_batch": int(base), "tolerance": float(tolerance),
                     "tolerance_kind": kind, **result})
    return pd.DataFrame(rows, columns=list(LOCAL_CRITICAL_COLUMNS))


def branch_table(rows: list[dict], smoothing: dict | None = None) -> pd.DataFrame:
    """The branch files' rows as a tidy table, each branch's losses smoothed into one `loss`.

    Args:
      rows: {checkpoint_examples, base_batch, k, batch_size, lr, steps, examples, losses} per branch.
      smoothing: {kind, points, ema_alpha} (smoothed_loss's).

    Returns:
      (checkpoint_examples, base_batch, k, batch_size, lr, steps, examples, loss), ready for
      local_critical_table.
    """
    smoothing = smoothing or {}
    columns = ("checkpoint_examples", "base_batch", "k", "batch_size", "lr", "steps", "examples")
    table = pd.DataFrame([{key: row[key] for key in columns} for row in rows], columns=list(columns))
    table["loss"] = [smoothed_loss(row["losses"], smoothing.get("kind", "last_mean"), smoothing.get("points", 3),
                                   smoothing.get("ema_alpha", 0.5)) for row in rows]
    return table


def branching_headline(table: pd.DataFrame, branching: dict) -> dict:
    """The local critical batch of a study as the summary quotes it (summary.json's ``branching``).

    Args:
      table: local_critical_batch.csv (`local_critical_table`).
      branching: the study's resolved ``branching`` config.

    Returns:
      {strategy, seed, base_batch, k, delta_examples, tolerance, tolerance_kind, checkpoints: [{examples,
      bracket, bracket_text, lower, upper, non_monotone}]} in increasing examples; lower and upper are the
      bracket's batch sizes (upper inf for ``at_least``, both NaN for ``missing``).
    """
    rows = table.sort_values("checkpoint_examples")
    base = int(rows["base_batch"].iloc[0]) if len(rows) else branching.get("batch_size")
    return {"strategy": branching.get("strategy"), "seed": branching.get("seed"), "base_batch": base,
            "k": list(branching.get("k") or []), "delta_examples": branching.get("delta_examples"),
            "tolerance": float(branching.get("tolerance", math.nan)),
            "tolerance_kind": branching.get("tolerance_kind", "relative"),
            "checkpoints": [{"examples": int(row["checkpoint_examples"]), "bracket": str(row["bracket"]),
                             "bracket_text": str(row["bracket_text"]),
                             "lower": float(row["local_critical_batch"]), "upper": float(row["upper_bracket"]),
                             "non_monotone": bool(row["non_monotone"])} for _, row in rows.iterrows()]}
