"""Learning rate per step: strategy peak rate, linear warm-up, and a schedule on top (pure math, no torch)."""

from __future__ import annotations

import math


def schedule_factor(schedule: dict, step: int, total_steps: int) -> float:
    """Multiplier of the schedule at update `step` (0-based) of a run of `total_steps` updates."""
    name = schedule.get("name", "constant")
    if name == "constant":
        return 1.0
    progress = step / max(total_steps, 1)
    if name == "step":
        passed = sum(1 for milestone in schedule.get("milestones", (0.5, 0.75)) if progress >= milestone)
        return schedule.get("gamma", 0.1) ** passed
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {name!r}")


def learning_rate(step: int, *, eta0: float, lr_peak: float, warmup_steps: int, schedule: dict,
                  total_steps: int) -> float:
    """Rate used for update `step` (0-based).

    Warm-up (Goyal et al.) rises linearly from eta0 at step 0 to lr_peak at step `warmup_steps`
    and stays there; the schedule multiplies on top for the whole run.
    """
    if warmup_steps > 0 and step < warmup_steps:
        base = eta0 + (lr_peak - eta0) * step / warmup_steps
    else:
        base = lr_peak
    return base * schedule_factor(schedule, step, total_steps)
