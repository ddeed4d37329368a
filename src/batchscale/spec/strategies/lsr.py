"""Linear scaling rule (Goyal et al. 2017): the learning rate grows with the batch size."""

from batchscale.spec.strategies.base import Strategy

STRATEGY = Strategy("lsr", order=1, summary="eta0 * m/m0", source="linear scaling, Goyal et al. 2017",
                    peak_lr=lambda eta0, kappa: eta0 * kappa)
