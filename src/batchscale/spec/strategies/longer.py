"""Train longer (Hoffer et al. 2017): the base rate, and m/m0 times more epochs (capped)."""

from batchscale.spec.strategies.base import Strategy


def longer_epochs(epochs: int, kappa: float, max_factor: float) -> int:
    return int(round(epochs * min(max(kappa, 1.0), max_factor)))


STRATEGY = Strategy("longer", order=3, summary="eta0, epochs * min(max(m/m0, 1), longer_max_factor)",
                    source="Hoffer et al. 2017", epochs=longer_epochs)
