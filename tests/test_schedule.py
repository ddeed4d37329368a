"""Learning rate per strategy and step, warm-up and schedules, against hand-computed values."""

import math

import pytest

from batchscale.spec.strategies import peak_learning_rate, run_epochs
from batchscale.spec.schedule import learning_rate, schedule_factor

CONSTANT = {"name": "constant"}


@pytest.mark.parametrize("strategy, batch, expected", [
    ("blr", 256, 0.1), ("lsr", 256, 0.1 * 256 / 64), ("srsr", 256, 0.1 * 2.0), ("longer", 256, 0.1),
    ("lsr", 64, 0.1), ("srsr", 16, 0.05), ("lsr", 16, 0.025),
])
def test_peak_learning_rate_per_strategy(strategy, batch, expected):
    assert peak_learning_rate(strategy, eta0=0.1, batch_size=batch, base_batch=64) == pytest.approx(expected, rel=1e-12)


def test_longer_trains_m_over_m0_more_epochs_capped():
    assert run_epochs("longer", 10, 256, 64, max_factor=8) == 40
    assert run_epochs("longer", 10, 4096, 64, max_factor=8) == 80  # 64x capped at 8x
    assert run_epochs("longer", 10, 32, 64, max_factor=8) == 10  # never fewer epochs than the base
    assert run_epochs("lsr", 10, 4096, 64, max_factor=8) == 10


def test_lsr_warmup_rises_linearly_from_eta0_to_peak():
    # eta0 = 0.1 at m0 = 64; lsr at m = 512 peaks at 0.8; warm-up over 10 steps.
    kwargs = dict(eta0=0.1, lr_peak=0.8, warmup_steps=10, schedule=CONSTANT, total_steps=100)
    assert learning_rate(0, **kwargs) == pytest.approx(0.1)
    assert learning_rate(5, **kwargs) == pytest.approx(0.1 + 0.7 * 0.5)
    assert learning_rate(9, **kwargs) == pytest.approx(0.1 + 0.7 * 0.9)
    assert learning_rate(10, **kwargs) == pytest.approx(0.8)
    assert learning_rate(99, **kwargs) == pytest.approx(0.8)


def test_no_warmup_is_flat():
    assert learning_rate(0, eta0=0.1, lr_peak=0.4, warmup_steps=0, schedule=CONSTANT, total_steps=10) == 0.4


def test_step_schedule_multiplies_gamma_at_milestones():
    schedule = {"name": "step", "milestones": [0.5, 0.75], "gamma": 0.1}
    assert schedule_factor(schedule, 49, 100) == 1.0
    assert schedule_factor(schedule, 50, 100) == pytest.approx(0.1)
    assert schedule_factor(schedule, 74, 100) == pytest.approx(0.1)
    assert schedule_factor(schedule, 75, 100) == pytest.approx(0.01)
    # on top of warm-up: step 60 of 100, warm-up done, one milestone passed
    assert learning_rate(60, eta0=0.1, lr_peak=0.4, warmup_steps=10, schedule=schedule,
                         total_steps=100) == pytest.approx(0.04)


def test_cosine_schedule():
    schedule = {"name": "cosine"}
    assert schedule_factor(schedule, 0, 100) == 1.0
    assert schedule_factor(schedule, 50, 100) == pytest.approx(0.5)
    assert schedule_factor(schedule, 25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    # during warm-up the schedule multiplies too: step 2 of a 4-step warm-up from 0.1 to 0.5
    assert learning_rate(2, eta0=0.1, lr_peak=0.5, warmup_steps=4, schedule=schedule, total_steps=8) == \
        pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))
