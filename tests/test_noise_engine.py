"""The noise scale in the packed engine's traces (issue 14): against a hand computation with a plain module,
independent of the pack, and changing no other number of the trace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import noise_reference as noise
from batchscale.engine.noise import NOISE_FIELDS, SAMPLING_FIELDS, noise_generator
from batchscale.engine.pack import train_pack
from conftest import tiny_run

NOISE = {"enabled": True, "batch_small": 4, "batch_big": 32, "draws": 2, "exact_max_params_times_examples": 2e7}  # exact on: the budget admits the tiny MLP
# the adaptive estimator: big batch above the current B_simple, draws to a relative error
AUTO = dict(NOISE, batch_big="auto", draws="auto", rel_error=0.3, max_draws=6, big_factor=3.0)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def runs(noise_cfg: dict, seeds=(0, 1, 2, 3)) -> list[dict]:
    return [tiny_run(model={"name": "mlp"}, seed=s, epochs=1, noise_scale=noise_cfg) for s in seeds]


@pytest.mark.parametrize("cfg", [NOISE, AUTO], ids=["fixed", "auto"])
def test_noise_datasets_change_no_other_number_of_the_trace(cfg):
    on = train_pack(runs(cfg), progress=False, vectorise=True)
    off = train_pack(runs(dict(cfg, enabled=False)), progress=False, vectorise=True)
    for a, b in zip(on, off):
        assert set(a.points) - set(b.points) == set(NOISE_FIELDS + SAMPLING_FIELDS)
        for name, values in b.points.items():
            if name != "wall_time":
                assert a.points[name] == values, name
        for name in NOISE_FIELDS:
            assert len(a.points[name]) == len(a.points["step"])
            assert np.all(np.isfinite(a.points[name]))


def test_noise_values_equal_a_hand_computation_and_do_not_depend_on_the_pack(float64, monkeypatch):
    """At the final weights: the exact values from noise.exact_noise on a plain module, the two-batch values
    from noise.mean_gradient on the same draws; a run's values are the same in a pack of 4 and alone."""
    import batchscale.engine.parts as parts
    from batchscale.data import load_dataset
    from batchscale.models import build_model

    built = []
    real = parts.build_packed_model
    monkeypatch.setattr(parts, "build_packed_model", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    packed = train_pack(runs(NOISE), progress=False, vectorise=True)
    alone = train_pack(runs(NOISE, seeds=(2,)), progress=False)[0]
    for name in NOISE_FIELDS:
        np.testing.assert_allclose(packed[2].points[name], alone.points[name], rtol=1e-8)

    run, result = runs(NOISE)[1], packed[1]
    splits = load_dataset(run["dataset"])
    net = build_model(run["model"], splits.spec).double().eval()
    with torch.no_grad():
        for p, stacked in zip(net.parameters(), built[0].params):
            p.copy_(stacked[1])
    subset = torch.randperm(splits.num_train, generator=torch.Generator().manual_seed(104729))[:256]
    x, y = splits.train_x.double()[subset], splits.train_y[subset]
    loss_fn, params = noise.functional_loss(net, torch.nn.functional.cross_entropy)
    exact = noise.exact_noise(loss_fn, params, x, y)
    assert result.points["noise_g2_exact"][-1] == pytest.approx(exact.g2, rel=1e-8)
    assert result.points["noise_trace_sigma_exact"][-1] == pytest.approx(exact.trace_sigma, rel=1e-8)

    generator = noise_generator(run["seed"], result.points["step"][-1])
    small = big = 0.0
    for _ in range(NOISE["draws"]):  # without replacement: the head of a permutation of the subset
        drawn = torch.randperm(256, generator=generator)[:NOISE["batch_big"]]
        head = drawn[:NOISE["batch_small"]]
        small += float(noise.squared_norm(noise.mean_gradient(loss_fn, params, x[head], y[head]))) / 2
        big += float(noise.squared_norm(noise.mean_gradient(loss_fn, params, x[drawn], y[drawn]))) / 2
    # the finite-population correction by hand: E|G_b|^2 = |G|^2 + tr Sigma (n - b) / (b (n - 1))
    c_small, c_big = ((256 - b) / (b * 255) for b in (NOISE["batch_small"], NOISE["batch_big"]))
    g2, trace = (c_small * big - c_big * small) / (c_small - c_big), (small - big) / (c_small - c_big)
    assert result.points["noise_g2"][-1] == pytest.approx(g2, rel=1e-8)
    assert result.points["noise_trace_sigma"][-1] == pytest.approx(trace, rel=1e-8)
    assert result.points["noise_batch_big"][-1] == NOISE["batch_big"]
    assert result.points["noise_draws"][-1] == NOISE["draws"]


def test_auto_batch_and_draws_follow_the_runs_own_trace_and_not_the_pack(float64):
    """batch_big auto: the whole subset (256) at the first point, then big_factor (3) x the previous points'
    B_simple (exact values, traced here) as a power of two in [16, 256]; draws auto within [3, max_draws]; a
    run's values are the same in a pack of 4 (whose runs draw different big batches at one point) and alone."""
    from batchscale.engine.noise import choose_batch_big, previous_b_simple, settings

    packed = train_pack(runs(AUTO), progress=False, vectorise=True)
    alone = train_pack(runs(AUTO, seeds=(1,)), progress=False)[0]
    for name in NOISE_FIELDS + SAMPLING_FIELDS:
        np.testing.assert_allclose(packed[1].points[name], alone.points[name], rtol=1e-8)
    points = packed[0].points
    assert points["noise_batch_big"][0] == 256
    cfg = settings(AUTO)
    for i in range(1, len(points["step"])):
        history = {name: values[:i] for name, values in points.items()}
        b_simple = previous_b_simple(history, 3)
        expected = 256 if not b_simple > 0 else min(256, max(16, 2 ** int(np.ceil(np.log2(3 * b_simple)))))
        assert points["noise_batch_big"][i] == expected == choose_batch_big(cfg, b_simple, 256)
    assert set(points["noise_draws"]) <= set(range(3, 7))
    at_once = [{run.points["noise_batch_big"][i] for run in packed} for i in range(len(points["step"]))]
    assert any(len(sizes) > 1 for sizes in at_once)  # the pack's runs were grouped by their big batch


def test_exact_values_are_nan_beyond_the_budget_and_the_two_batch_ones_are_not():
    result = train_pack(runs(dict(NOISE, exact_max_params_times_examples=1000), seeds=(0,)), progress=False)[0]
    assert np.all(np.isnan(result.points["noise_g2_exact"]))
    assert np.all(np.isfinite(result.points["noise_g2"]))
