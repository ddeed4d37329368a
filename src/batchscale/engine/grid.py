"""The study's shared evaluation grid: log-spaced steps, so runs of different lengths align."""

from __future__ import annotations


def log_grid(points_per_decade: int, max_step: int) -> list[int]:
    """0 and every distinct round(10**(i / points_per_decade)) <= max_step, for i = 0, 1, 2, ..."""
    steps = {0}
    i = 0
    while True:
        step = int(round(10 ** (i / points_per_decade)))
        if step > max_step:
            break
        steps.add(step)
        i += 1
    return sorted(steps)


def evaluation_steps(points_per_decade: int, total_steps: int) -> list[int]:
    """A run's evaluation points: the shared grid up to its end, plus its final step."""
    return sorted(set(log_grid(points_per_decade, total_steps)) | {total_steps})
