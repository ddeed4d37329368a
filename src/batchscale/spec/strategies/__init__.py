"""Batch-size scaling strategies: each run's hyperparameters from the base ones tuned at batch m0.

A registry: every module of this package defines `STRATEGY` (a `base.Strategy`), so a new strategy is one
file; the schema's list of allowed strategies, the workflow's wildcard and every message read `STRATEGIES`.
With kappa = m / m0:

    strategy    optimizers    learning rate   betas                      eps          epochs
    blr         sgd, adamw    eta0            as configured              as conf.     E
    lsr         sgd, adamw    eta0 kappa      as configured              as conf.     E
    srsr        sgd, adamw    eta0 sqrt(k)    as configured              as conf.     E
    longer      sgd, adamw    eta0            as configured              as conf.     E min(max(k, 1), cap)
    tuned       sgd, adamw    each trial's    as configured (or searched) as conf.    E
    adam_srsr   adamw         eta0 sqrt(k)    1 - kappa (1 - beta)       eps/sqrt(k)  E

Weight decay is left as configured by every strategy (torch's decoupled p <- p (1 - lr wd) then decays per
step by lr wd, which the learning rate's scaling carries along). Every strategy listed in
`warmup_strategies` warms its learning rate up linearly from eta0 to the peak (Goyal et al.); betas and eps
are not warmed up. The schedule multiplies on top. Pure functions of plain values: no torch.
"""

from __future__ import annotations

import importlib
import pkgutil

from batchscale.errors import ScalingRuleError
from batchscale.spec.optimizers import optimizer_name
from batchscale.spec.schedule import learning_rate
from batchscale.spec.strategies.base import TUNED, Strategy


def _discover() -> dict[str, Strategy]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            found.append(importlib.import_module(f"{__name__}.{module.name}").STRATEGY)
    return {strategy.name: strategy for strategy in sorted(found, key=lambda s: (s.order, s.name))}


STRATEGIES: dict[str, Strategy] = _discover()
__all__ = ["STRATEGIES", "TUNED", "Strategy", "check_strategy", "run_hyperparameters", "study_hyperparameters",
           "warmup_steps", "learning_rate_at", "peak_learning_rate", "run_epochs"]


def strategies_for(optimizer: str) -> list[str]:
    return [name for name, strategy in STRATEGIES.items() if optimizer in strategy.optimizers]


def check_strategy(strategy: str, optimizer: str) -> None:
    if strategy not in STRATEGIES:
        raise ScalingRuleError(f"strategy {strategy!r} is not allowed; allowed values: {', '.join(STRATEGIES)}")
    if optimizer not in STRATEGIES[strategy].optimizers:
        raise ScalingRuleError(
            f"strategy {strategy!r} scales an adaptive optimizer's betas and eps and needs optimizer.name: adamw "
            f"(the optimizer is {optimizer}); {optimizer} allows {', '.join(strategies_for(optimizer))}")


def peak_learning_rate(strategy: str, eta0: float, batch_size: int, base_batch: int) -> float:
    """The strategy's learning rate at batch size m, before warm-up and schedule."""
    if strategy not in STRATEGIES:
        raise ScalingRuleError(f"strategy {strategy!r} is not allowed; allowed values: {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy].peak_lr(eta0, batch_size / base_batch)


def run_epochs(strategy: str, epochs: int, batch_size: int, base_batch: int, max_factor: float) -> int:
    """Epochs for one run (`longer` trains m/m0 times more, capped at max_factor)."""
    return STRATEGIES[strategy].epochs(epochs, batch_size / base_batch, max_factor)


def run_hyperparameters(strategy: str, optimizer: dict, batch_size: int, base_batch: int, *, eta0: float,
                        epochs: int, warmup_epochs: float = 0.0, warmup_strategies=("lsr",),
                        longer_max_factor: float = 8.0) -> dict:
    """Hyperparameters of the run at batch size m under `strategy`, from the base ones tuned at m0.

    Args:
      optimizer: the study's optimizer config ({name, betas, eps, weight_decay, ...}, defaults filled in).

    Returns:
      lr_peak, epochs and warmup_epochs (0 unless the strategy warms up) for every optimizer, and for
      AdamW also beta1, beta2, eps and weight_decay.
    """
    name = optimizer_name(optimizer)
    check_strategy(strategy, name)
    rule, kappa = STRATEGIES[strategy], batch_size / base_batch
    hyper = {"lr_peak": rule.peak_lr(eta0, kappa), "epochs": rule.epochs(epochs, kappa, longer_max_factor),
             "warmup_epochs": warmup_epochs if strategy in warmup_strategies else 0}
    if name == "adamw":
        beta1, beta2 = (float(b) for b in optimizer["betas"])
        hyper.update(beta1=beta1, beta2=beta2, eps=float(optimizer["eps"]),
                     weight_decay=float(optimizer["weight_decay"]))
        if rule.adapt is not None:
            hyper = rule.adapt(hyper, kappa, batch_size, base_batch)
    return hyper


def study_hyperparameters(study: dict, strategy: str, batch_size: int) -> dict:
    """run_hyperparameters for one run of a resolved study config (every default filled in)."""
    return run_hyperparameters(strategy, study["optimizer"], batch_size, study["base_batch"], eta0=study["eta0"],
                               epochs=study["epochs"], warmup_epochs=study["warmup_epochs"],
                               warmup_strategies=study["warmup_strategies"],
                               longer_max_factor=study["longer_max_factor"])


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """Warm-up length in updates: the epochs' worth of steps, rounded to the nearest step."""
    return int(round(warmup_epochs * steps_per_epoch))


def learning_rate_at(step: int, hyper: dict, *, eta0: float, steps_per_epoch: int, total_steps: int,
                     schedule: dict) -> float:
    """The learning rate of update `step` (0-based) of a run with hyperparameters `hyper`: warm-up from
    eta0 to hyper["lr_peak"] over hyper["warmup_epochs"] epochs, then the schedule on top."""
    return learning_rate(step, eta0=eta0, lr_peak=hyper["lr_peak"],
                         warmup_steps=warmup_steps(hyper["warmup_epochs"], steps_per_epoch), schedule=schedule,
                         total_steps=total_steps)
