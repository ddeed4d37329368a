"""What a batch-size scaling strategy is: how a run at batch size m gets its hyperparameters from the base
ones tuned at m0 (kappa = m / m0). One module of this package per strategy defines `STRATEGY`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

TUNED = "tuned"  # the searched strategy: one run per trial (batchscale.spec.search), the others one per seed


def same_rate(eta0: float, kappa: float) -> float:
    return eta0


def same_epochs(epochs: int, kappa: float, max_factor: float) -> int:
    return int(epochs)


@dataclass(frozen=True)
class Strategy:
    """A scaling strategy.

    Attributes:
      name: the config's name for it.
      order: its place in lists and messages.
      summary: what it does, in a few words (tables, figure legends, errors).
      source: where it comes from.
      optimizers: the optimizers it applies to.
      peak_lr: (eta0, kappa) -> the learning rate at batch m before warm-up and schedule.
      epochs: (E, kappa, longer_max_factor) -> the run's epochs.
      adapt: for an adaptive optimizer, (hyper, kappa, batch_size, base_batch) -> hyper with its betas and eps
        scaled (None: as configured).
      searched: one run per trial of a search at every batch size (tuned) instead of one per seed.
    """

    name: str
    order: int
    summary: str
    source: str
    optimizers: tuple[str, ...] = ("sgd", "adamw")
    peak_lr: Callable[[float, float], float] = same_rate
    epochs: Callable[[int, float, float], int] = same_epochs
    adapt: Callable[[dict, float, int, int], dict] | None = None
    searched: bool = False
