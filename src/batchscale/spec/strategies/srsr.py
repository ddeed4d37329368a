"""Square-root scaling of the learning rate alone (Krizhevsky 2014; Hoffer et al. 2017)."""

import math

from batchscale.spec.strategies.base import Strategy

STRATEGY = Strategy("srsr", order=2, summary="eta0 * sqrt(m/m0)", source="square-root scaling of the learning rate",
                    peak_lr=lambda eta0, kappa: eta0 * math.sqrt(kappa))
