"""Batch-size scaling strategies: each run's hyperparameters from the base ones tuned at batch m0.

With kappa = m / m0 (the run's batch size over the base batch size):

    strategy    optimizers    learning rate   betas                      eps          epochs
    blr         sgd, adamw    eta0            as configured              as conf.     E
    lsr         sgd, adamw    eta0 kappa      as configured              as conf.     E
    srsr        sgd, adamw    eta0 sqrt(k)    as configured              as conf.     E
    longer      sgd, adamw    eta0            as configured              as conf.     E min(max(k, 1), cap)
    adam_srsr   adamw         eta0 sqrt(k)    1 - kappa (1 - beta)       eps/sqrt(k)  E
    tuned       sgd, adamw    each trial's    as configured (or searched) as conf.    E

`adam_srsr` is the square-root scaling rule of Malladi et al. 2022 ("On the SDEs and Scaling Rules for
Adaptive Gradient Algorithms"): it keeps Adam's SDE approximation fixed across batch sizes by scaling
1 - beta1 and 1 - beta2 by kappa along with the learning rate by sqrt(kappa) and eps by 1/sqrt(kappa).
Weight decay is left as configured by every strategy (torch's decoupled p <- p (1 - lr wd) then decays
per step by lr wd, which the learning rate's scaling carries along).

Every strategy listed in `warmup_strategies` warms its learning rate up linearly from eta0 to the peak
over `warmup_epochs` (Goyal et al.); betas and eps are not warmed up. The schedule multiplies on top.

Pure functions of plain values: no torch, so the config can call them at load time.
"""

from __future__ import annotations

import math

from batchscale.engine.schedule import learning_rate

OPTIMIZERS = ("sgd", "adamw")
# Strategies that scale the learning rate (and epochs) only: they apply to every optimizer.
LEARNING_RATE_STRATEGIES = ("blr", "lsr", "srsr", "longer", "tuned")
# Strategies that also scale an adaptive optimizer's betas and eps: AdamW only.
ADAPTIVE_STRATEGIES = ("adam_srsr",)
STRATEGIES = LEARNING_RATE_STRATEGIES + ADAPTIVE_STRATEGIES
STRATEGIES_BY_OPTIMIZER = {"sgd": LEARNING_RATE_STRATEGIES, "adamw": STRATEGIES}

# Keys of the optimizer config each optimizer reads; a run's config carries only these (so adding AdamW's
# keys to the schema does not change the config hash, and so the rerun trigger, of existing SGD runs).
OPTIMIZER_KEYS = {"sgd": ("momentum", "nesterov", "weight_decay", "grad_clip"),
                  "adamw": ("name", "betas", "eps", "weight_decay", "grad_clip")}

# kappa (1 - beta) this close to 1 counts as reaching 1: 10 * (1 - 0.9) is 0.9999999999999998 in floats.
_ROUNDING = 1e-12


class ScalingRuleError(ValueError):
    """A strategy that cannot apply to this optimizer or batch size; the message names both."""


def optimizer_name(optimizer: dict) -> str:
    name = optimizer.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise ScalingRuleError(f"optimizer {name!r} is not allowed; allowed values: {', '.join(OPTIMIZERS)}")
    return name


def optimizer_settings(optimizer: dict) -> dict:
    """The optimizer config a run needs: the keys its optimizer reads, nothing else."""
    return {key: optimizer[key] for key in OPTIMIZER_KEYS[optimizer_name(optimizer)] if key in optimizer}


def check_strategy(strategy: str, optimizer: str) -> None:
    if strategy not in STRATEGIES:
        raise ScalingRuleError(f"strategy {strategy!r} is not allowed; allowed values: {', '.join(STRATEGIES)}")
    if strategy not in STRATEGIES_BY_OPTIMIZER[optimizer]:
        raise ScalingRuleError(
            f"strategy {strategy!r} scales an adaptive optimizer's betas and eps and needs optimizer.name: adamw "
            f"(the optimizer is {optimizer}); {optimizer} allows {', '.join(STRATEGIES_BY_OPTIMIZER[optimizer])}")


def peak_learning_rate(strategy: str, eta0: float, batch_size: int, base_batch: int) -> float:
    """The strategy's learning rate at batch size m, before warm-up and schedule."""
    kappa = batch_size / base_batch
    if strategy in ("blr", "longer", "tuned"):  # a tuned trial's eta0 is the trial's own rate
        return eta0
    if strategy == "lsr":
        return eta0 * kappa
    if strategy in ("srsr", "adam_srsr"):
        return eta0 * math.sqrt(kappa)
    raise ScalingRuleError(f"strategy {strategy!r} is not allowed; allowed values: {', '.join(STRATEGIES)}")


def run_epochs(strategy: str, epochs: int, batch_size: int, base_batch: int, max_factor: float) -> int:
    """Epochs for one run: `longer` trains m/m0 times more epochs (Hoffer et al.), capped at max_factor."""
    if strategy != "longer":
        return int(epochs)
    factor = min(max(batch_size / base_batch, 1.0), max_factor)
    return int(round(epochs * factor))


def _within_square_root_rule(beta: float, batch_size: int, base_batch: int) -> bool:
    return batch_size == base_batch or batch_size / base_batch * (1.0 - beta) < 1.0 - _ROUNDING


def square_root_rule_beta(beta: float, batch_size: int, base_batch: int, name: str) -> float:
    """Malladi et al.'s beta at batch m: 1 - beta scaled by kappa = m/m0, i.e. 1 - kappa (1 - beta).

    The result lies in [0, 1): kappa (1 - beta) >= 1 (up to rounding) would put beta at or below 0, an
    average over no past gradient at all, so it is an error naming the batch size and the largest batch
    size the configured beta allows; above, a result that rounds to 1 (kappa (1 - beta) below float
    resolution) is clamped to the largest float below 1. At m = m0 beta is returned as configured.
    """
    if batch_size == base_batch:
        return beta
    kappa = batch_size / base_batch
    scaled_one_minus = kappa * (1.0 - beta)
    if not _within_square_root_rule(beta, batch_size, base_batch):
        largest = math.floor(base_batch / (1.0 - beta))  # m (1 - beta) < m0, then step down past rounding
        while largest > base_batch and not _within_square_root_rule(beta, largest, base_batch):
            largest -= 1
        raise ScalingRuleError(
            f"strategy adam_srsr at batch size {batch_size}: 1 - {name} times kappa = {batch_size}/{base_batch} "
            f"is {1.0 - beta:g} * {kappa:g} = {scaled_one_minus:g} >= 1, so {name} = 1 - {scaled_one_minus:g} would "
            f"not be positive; with {name} = {beta:g} and base_batch {base_batch} the largest batch size allowed "
            f"is {largest}: drop larger batch sizes or raise {name}")
    return min(1.0 - scaled_one_minus, math.nextafter(1.0, 0.0))


def run_hyperparameters(strategy: str, optimizer: dict, batch_size: int, base_batch: int, *, eta0: float,
                        epochs: int, warmup_epochs: float = 0.0, warmup_strategies=("lsr",),
                        longer_max_factor: float = 8.0) -> dict:
    """Hyperparameters of the run at batch size m under `strategy`, from the base ones tuned at m0.

    Returns lr_peak, epochs and warmup_epochs (0 unless the strategy warms up) for every optimizer, and
    for AdamW also beta1, beta2, eps and weight_decay. `optimizer` is the study's optimizer config
    ({name, betas, eps, weight_decay, ...}, defaults filled in).
    """
    name = optimizer_name(optimizer)
    check_strategy(strategy, name)
    hyper = {"lr_peak": peak_learning_rate(strategy, eta0, batch_size, base_batch),
             "epochs": run_epochs(strategy, epochs, batch_size, base_batch, longer_max_factor),
             "warmup_epochs": warmup_epochs if strategy in warmup_strategies else 0}
    if name == "adamw":
        beta1, beta2 = (float(b) for b in optimizer["betas"])
        eps = float(optimizer["eps"])
        if strategy == "adam_srsr":
            beta1 = square_root_rule_beta(beta1, batch_size, base_batch, "beta1")
            beta2 = square_root_rule_beta(beta2, batch_size, base_batch, "beta2")
            eps = eps / math.sqrt(batch_size / base_batch)
        hyper.update(beta1=beta1, beta2=beta2, eps=eps, weight_decay=float(optimizer["weight_decay"]))
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
