"""Per-run hyperparameters of each strategy, and the learning rate per step, against hand-computed values."""

from __future__ import annotations

import math

import jsonschema
import pytest
import yaml

from batchscale.spec import optimizers, strategies
from batchscale.spec.schema import load_schema, validator_with_defaults
from batchscale.errors import ScalingRuleError
from batchscale.spec.strategies import learning_rate_at, run_hyperparameters

ADAMW = {"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "grad_clip": None}
SGD = {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "grad_clip": None}
CONSTANT = {"name": "constant"}


def adamw(strategy, m, m0=32, **kwargs):
    return run_hyperparameters(strategy, ADAMW, m, m0, eta0=1e-3, epochs=10, **kwargs)


def test_adam_srsr_at_four_times_the_base_batch():
    # m0 = 32, m = 128: kappa = 4, sqrt(kappa) = 2; 1 - beta1 = 0.1 -> 0.4, 1 - beta2 = 0.001 -> 0.004
    hyper = adamw("adam_srsr", 128)
    assert hyper["lr_peak"] == pytest.approx(2e-3, rel=1e-15)
    assert hyper["beta1"] == pytest.approx(0.6, rel=1e-15)
    assert hyper["beta2"] == pytest.approx(0.996, rel=1e-15)
    assert hyper["eps"] == pytest.approx(5e-9, rel=1e-15)
    assert hyper["weight_decay"] == 0.01
    assert hyper["epochs"] == 10 and hyper["warmup_epochs"] == 0


def test_adam_srsr_below_the_base_batch_moves_betas_towards_one():
    # m = 8, m0 = 32: kappa = 1/4: lr / 2, 1 - beta1 = 0.025, 1 - beta2 = 0.00025, eps * 2
    hyper = adamw("adam_srsr", 8)
    assert hyper["lr_peak"] == pytest.approx(5e-4, rel=1e-15)
    assert hyper["beta1"] == pytest.approx(0.975, rel=1e-15)
    assert hyper["beta2"] == pytest.approx(0.99975, rel=1e-15)
    assert hyper["eps"] == pytest.approx(2e-8, rel=1e-15)


def test_adam_srsr_at_the_base_batch_is_the_configured_optimizer():
    hyper = adamw("adam_srsr", 32)
    assert (hyper["lr_peak"], hyper["beta1"], hyper["beta2"], hyper["eps"]) == (1e-3, 0.9, 0.999, 1e-8)


@pytest.mark.parametrize("strategy, lr, epochs", [("blr", 1e-3, 10), ("lsr", 4e-3, 10), ("srsr", 2e-3, 10),
                                                  ("longer", 1e-3, 40)])
def test_learning_rate_strategies_leave_betas_and_eps_alone(strategy, lr, epochs):
    hyper = adamw(strategy, 128)
    assert hyper["lr_peak"] == pytest.approx(lr, rel=1e-15)
    assert hyper["epochs"] == epochs
    assert (hyper["beta1"], hyper["beta2"], hyper["eps"], hyper["weight_decay"]) == (0.9, 0.999, 1e-8, 0.01)


def test_longer_is_capped():
    assert adamw("longer", 1024, longer_max_factor=8)["epochs"] == 80  # kappa = 32, capped at 8


@pytest.mark.parametrize("m", [320, 512, 4096])
def test_adam_srsr_refuses_a_beta_that_would_not_be_positive(m):
    # beta1 = 0.9, m0 = 32: kappa (1 - beta1) >= 1 from m = 320 (kappa = 10, exactly 1 on paper)
    with pytest.raises(ScalingRuleError, match=rf"batch size {m}\b.*beta1.*largest batch size allowed is 319"):
        adamw("adam_srsr", m)


def test_adam_srsr_accepts_the_largest_allowed_batch():
    hyper = adamw("adam_srsr", 319)
    assert hyper["beta1"] == pytest.approx(1 - 319 / 32 * 0.1, rel=1e-12)
    assert 0 < hyper["beta1"] < 0.01


def test_adam_srsr_names_the_beta_that_breaks():
    optimizer = dict(ADAMW, betas=[0.0, 0.9])  # beta1 = 0 allows no batch above m0
    with pytest.raises(ScalingRuleError, match=r"batch size 64\b.*beta1.*largest batch size allowed is 32"):
        run_hyperparameters("adam_srsr", optimizer, 64, 32, eta0=1e-3, epochs=1)
    optimizer = dict(ADAMW, betas=[0.99, 0.9])
    with pytest.raises(ScalingRuleError, match=r"batch size 512\b.*beta2.*largest batch size allowed is 319"):
        run_hyperparameters("adam_srsr", optimizer, 512, 32, eta0=1e-3, epochs=1)


def test_adam_srsr_clamps_a_beta_that_rounds_to_one():
    nearly_one = math.nextafter(1.0, 0.0)  # 1 - 2**-53
    optimizer = dict(ADAMW, betas=[0.9, nearly_one])
    hyper = run_hyperparameters("adam_srsr", optimizer, 8, 32, eta0=1e-3, epochs=1)  # 1 - 2**-55 rounds to 1
    assert hyper["beta2"] == nearly_one


def test_adam_srsr_needs_adamw():
    with pytest.raises(ScalingRuleError, match="adam_srsr.*adamw"):
        run_hyperparameters("adam_srsr", SGD, 128, 32, eta0=0.1, epochs=1)


def test_unknown_strategy_and_optimizer_are_named():
    with pytest.raises(ScalingRuleError, match="'lsrr' is not allowed"):
        run_hyperparameters("lsrr", ADAMW, 128, 32, eta0=0.1, epochs=1)
    with pytest.raises(ScalingRuleError, match="'adam' is not allowed"):
        run_hyperparameters("blr", dict(ADAMW, name="adam"), 128, 32, eta0=0.1, epochs=1)


@pytest.mark.parametrize("strategy", strategies.strategies_for("sgd"))
@pytest.mark.parametrize("m", [8, 32, 96, 128, 2048])
def test_sgd_agrees_with_the_strategy_functions(strategy, m):
    hyper = run_hyperparameters(strategy, SGD, m, 32, eta0=0.1, epochs=3, longer_max_factor=8)
    assert hyper["lr_peak"] == strategies.peak_learning_rate(strategy, 0.1, m, 32)
    assert hyper["epochs"] == strategies.run_epochs(strategy, 3, m, 32, 8)
    assert set(hyper) == {"lr_peak", "epochs", "warmup_epochs"}  # no betas or eps for SGD


def test_warm_up_by_hand():
    # lsr, eta0 = 0.1, kappa = 4: peak 0.4; warm-up 2 epochs of 10 steps = 20 steps, linear from 0.1
    hyper = run_hyperparameters("lsr", SGD, 128, 32, eta0=0.1, epochs=5, warmup_epochs=2, warmup_strategies=["lsr"])
    assert hyper["warmup_epochs"] == 2

    def rate(step):
        return learning_rate_at(step, hyper, eta0=0.1, steps_per_epoch=10, total_steps=50, schedule=CONSTANT)
    assert [rate(s) for s in (0, 5, 10, 19, 20, 49)] == pytest.approx([0.1, 0.175, 0.25, 0.385, 0.4, 0.4], rel=1e-14)


def test_adam_srsr_warms_up_its_learning_rate_only():
    # eta0 = 1e-3, kappa = 4: peak 2e-3; warm-up 0.5 epochs of 8 steps = 4 steps; betas and eps fixed
    hyper = adamw("adam_srsr", 128, warmup_epochs=0.5, warmup_strategies=["lsr", "adam_srsr"])
    rates = [learning_rate_at(s, hyper, eta0=1e-3, steps_per_epoch=8, total_steps=80, schedule=CONSTANT)
             for s in range(6)]
    assert rates == pytest.approx([1e-3, 1.25e-3, 1.5e-3, 1.75e-3, 2e-3, 2e-3], rel=1e-14)
    assert hyper["beta1"] == pytest.approx(0.6, rel=1e-15)


def test_strategy_without_warm_up_starts_at_its_peak():
    hyper = adamw("srsr", 128, warmup_epochs=2, warmup_strategies=["lsr"])
    assert hyper["warmup_epochs"] == 0
    assert learning_rate_at(0, hyper, eta0=1e-3, steps_per_epoch=10, total_steps=100, schedule=CONSTANT) == 2e-3


def test_schedule_multiplies_on_top_of_warm_up():
    hyper = adamw("lsr", 128, warmup_epochs=1, warmup_strategies=["lsr"])  # peak 4e-3, 10 warm-up steps
    cosine = {"name": "cosine"}
    # step 5 of 100: warm-up 1e-3 + 3e-3 * 5/10 = 2.5e-3, times 0.5 (1 + cos(pi * 0.05))
    expected = 2.5e-3 * 0.5 * (1 + math.cos(math.pi * 0.05))
    assert learning_rate_at(5, hyper, eta0=1e-3, steps_per_epoch=10, total_steps=100, schedule=cosine) == \
        pytest.approx(expected, rel=1e-14)


def test_study_hyperparameters_reads_a_resolved_study():
    study = {"optimizer": ADAMW, "base_batch": 32, "eta0": 1e-3, "epochs": 10, "warmup_epochs": 1,
             "warmup_strategies": ["adam_srsr"], "longer_max_factor": 8}
    assert strategies.study_hyperparameters(study, "adam_srsr", 128) == adamw(
        "adam_srsr", 128, warmup_epochs=1, warmup_strategies=["adam_srsr"])


def test_optimizer_settings_keep_sgd_runs_as_they_were():
    """An SGD run's optimizer config keeps exactly today's keys, so its config hash (and trace) stays valid."""
    full = dict(SGD, name="sgd", betas=[0.9, 0.999], eps=1e-8)
    assert optimizers.optimizer_settings(full) == SGD
    assert optimizers.optimizer_settings(dict(ADAMW, momentum=0.9, nesterov=False)) == ADAMW


# --------------------------------------------------------------------------------------------------
# The optimizer and strategy keys of config.schema.yaml

SCHEMA = load_schema()
OPTIMIZER_SCHEMA = {"$defs": SCHEMA["$defs"], **SCHEMA["$defs"]["study_partial"]["properties"]["optimizer"]}


def test_schema_names_match_the_code():
    assert tuple(SCHEMA["$defs"]["strategy"]["enum"]) == tuple(strategies.STRATEGIES)
    assert tuple(strategies.STRATEGIES) == ("blr", "lsr", "srsr", "longer", "tuned", "adam_srsr")
    assert tuple(OPTIMIZER_SCHEMA["properties"]["name"]["enum"]) == optimizers.OPTIMIZERS


def test_schema_fills_optimizer_defaults_and_refuses_bad_values():
    filled = {"name": "adamw"}
    validator_with_defaults(OPTIMIZER_SCHEMA).validate(filled)
    assert filled == {"name": "adamw", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
                      "betas": [0.9, 0.999], "eps": 1e-8, "grad_clip": None}
    assert isinstance(filled["eps"], float)
    validator = jsonschema.Draft202012Validator(OPTIMIZER_SCHEMA)
    for bad in ({"name": "adam"}, {"betas": [0.9, 1.0]}, {"betas": [0.9]}, {"eps": 0}, {"beta1": 0.9}):
        assert not validator.is_valid(bad), bad
