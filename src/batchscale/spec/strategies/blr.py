"""Base learning rate: nothing scales with the batch size (the baseline)."""

from batchscale.spec.strategies.base import Strategy

STRATEGY = Strategy("blr", order=0, summary="eta0 at every batch size", source="baseline: nothing scales")
