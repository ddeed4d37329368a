"""The branching method's configuration arithmetic (Merrill et al. 2025), pure Python: the learning-rate rule
of a branch, how many steps a branch takes for Delta examples, where the base run checkpoints, and the
names each setting of the study key `branching` may take.

The engine (engine/branch.py) trains by these numbers; the analysis (analysis/branching.py) reads them back.
"""

from __future__ import annotations

import math

LR_RULES = ("linear", "sqrt")
TOLERANCE_KINDS = ("relative", "absolute")
SMOOTHING_KINDS = ("last_mean", "ema")


def branch_lr(base_lr: float, k: float, rule: str) -> float:
    """Learning rate of the branch at batch k B.

    Args:
        base_lr: the base run's rate at the checkpoint.
        k: the branch's batch multiple (positive).
        rule: `linear` (base_lr k) or `sqrt` (base_lr sqrt(k)).

    Returns:
        The branch's constant learning rate.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if rule == "linear":
        return float(base_lr * k)
    if rule == "sqrt":
        return float(base_lr * math.sqrt(k))
    raise ValueError(f"lr rule {rule!r} is not one of {LR_RULES}")


def branch_steps(delta_examples: int, batch_size: int) -> int:
    """Steps a branch at `batch_size` takes for Delta examples: floor(Delta / batch), at least one.

    Every branch then sees the same Delta examples whenever k B divides Delta (the config should choose
    Delta as a multiple of the largest k B; otherwise the largest branches see slightly fewer).
    """
    if delta_examples < 1 or batch_size < 1:
        raise ValueError("delta_examples and batch_size must be positive")
    return max(1, delta_examples // batch_size)


def checkpoint_steps(total_steps: int, count: int) -> list[int]:
    """`count` checkpoint steps log-spaced from 1 to total_steps (inclusive), as distinct integers.

    Rounding can merge neighbours early in training; merged points are dropped, so fewer may come back.
    """
    if total_steps < 1 or count < 1:
        raise ValueError("total_steps and count must be positive")
    if count == 1:
        return [int(total_steps)]
    # exp(i log(T) / (count - 1)) for i < count - 1, then T itself (the grid numpy.linspace gives)
    spacing = math.log(total_steps) / (count - 1)
    points = [math.exp(i * spacing) for i in range(count - 1)] + [float(total_steps)]
    return sorted({int(round(point)) for point in points})
