"""Tuned (Shallue et al. 2018): the learning rate (and optionally more) searched at every batch size; each
trial is a run whose eta0 is the trial's own rate (batchscale.spec.search)."""

from batchscale.spec.strategies.base import TUNED, Strategy

STRATEGY = Strategy(TUNED, order=4, summary="each trial's rate, the best trial kept", source="Shallue et al. 2018",
                    searched=True)
