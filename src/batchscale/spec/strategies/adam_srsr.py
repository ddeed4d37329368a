"""The square-root rule for Adam (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
Algorithms"): it keeps Adam's SDE approximation fixed across batch sizes by scaling 1 - beta1 and 1 - beta2 by
kappa along with the learning rate by sqrt(kappa) and eps by 1/sqrt(kappa). AdamW only."""

from __future__ import annotations

import math

from batchscale.errors import ScalingRuleError
from batchscale.spec.strategies.base import Strategy

# kappa (1 - beta) this close to 1 counts as reaching 1: 10 * (1 - 0.9) is 0.9999999999999998 in floats.
_ROUNDING = 1e-12


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


def scale_betas_and_eps(hyper: dict, kappa: float, batch_size: int, base_batch: int) -> dict:
    return {**hyper, "beta1": square_root_rule_beta(hyper["beta1"], batch_size, base_batch, "beta1"),
            "beta2": square_root_rule_beta(hyper["beta2"], batch_size, base_batch, "beta2"),
            "eps": hyper["eps"] / math.sqrt(kappa)}


STRATEGY = Strategy("adam_srsr", order=5, summary="eta0 * sqrt(m/m0), 1 - beta * m/m0, eps / sqrt(m/m0)",
                    source="square-root rule for Adam, Malladi et al. 2022", optimizers=("adamw",),
                    peak_lr=lambda eta0, kappa: eta0 * math.sqrt(kappa), adapt=scale_betas_and_eps)
