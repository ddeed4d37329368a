"""The engine's two-batch estimator (issue 22): the finite-population correction against brute force over every
subset of a tiny least-squares problem, the adaptive big batch and draws, and the estimator within 10% of
least squares' closed form at fixed weights."""

import itertools
import math

import numpy as np
import pytest
import torch
from test_noise import closed_form, least_squares_problem

from batchscale.engine import noise as en

torch.set_num_threads(1)


def per_example_gradients(x, y, w):
    """g_i = (x_i . w - y_i) x_i of l_i = (x_i . w - y_i)^2 / 2, by a plain loop (numpy)."""
    return np.array([(xi @ w - yi) * xi for xi, yi in zip(x, y)])


@pytest.mark.parametrize("n, small, big", [(7, 2, 5), (8, 1, 8), (9, 3, 4)])
def test_fpc_estimators_are_unbiased_by_brute_force_over_every_subset(n, small, big):
    """E|G_b|^2 over every b-subset of n examples (without replacement) is |G|^2 + tr Sigma (n - b)/(b (n - 1));
    the estimators applied to the two expectations give |G|^2 and tr Sigma exactly (they are linear in the
    squared norms); the uncorrected (with-replacement) formulas do not."""
    rng = np.random.default_rng(n)
    x, y, w = rng.normal(size=(n, 3)), rng.normal(size=n), rng.normal(size=3)
    g = per_example_gradients(x, y, w)
    mean = g.mean(0)
    g2, trace = float(mean @ mean), float(((g - mean) ** 2).sum(1).mean())

    def expected_norm(b):
        norms = [float(np.sum(g[list(s)].mean(0) ** 2)) for s in itertools.combinations(range(n), b)]
        return sum(norms) / len(norms)

    e_small, e_big = expected_norm(small), expected_norm(big)
    assert e_small == pytest.approx(g2 + trace * (n - small) / (small * (n - 1)), rel=1e-12)
    est_g2, est_trace = en.two_batch_estimates(e_small, e_big, small, big, n)
    assert est_g2 == pytest.approx(g2, rel=1e-10, abs=1e-12)
    assert est_trace == pytest.approx(trace, rel=1e-10)
    _, naive_trace = en.two_batch_estimates(e_small, e_big, small, big)
    assert abs(naive_trace - trace) > 1e-3 * trace  # without the correction: biased
    assert en.fpc_factor(n, n) == 0.0 and en.fpc_factor(4, None) == 0.25


def linear_gradient(x, y, w):
    """The `gradient` callback of two_batch_points for one run of the least-squares model (torch)."""
    xt, yt, wt = (torch.tensor(a, dtype=torch.float64) for a in (x, y, w))

    def gradient(positions, index):
        rows = []
        for _ in positions:
            xb, yb = xt[index[len(rows)]], yt[index[len(rows)]]
            rows.append(xb.T @ (xb @ wt - yb) / len(yb))
        return [torch.stack(rows)]
    return gradient


def test_engine_estimator_within_ten_percent_of_the_closed_form_with_auto_batch_and_draws():
    """Least squares at fixed weights (n = 512): 200 evaluation points of the engine's estimator (batch_big
    from a previous B_simple, draws auto to rel_error 0.2), numerator and denominator averaged: |G|^2,
    tr Sigma and B_simple within 10% of the closed form; each point's own B_simple scatters by about the
    stated relative error (its relative sd below 2 x 0.2)."""
    x, y, w = least_squares_problem()
    g2, trace = closed_form(x, y, w)
    subset = torch.arange(len(y))
    cfg = en.settings({"batch_small": 8, "rel_error": 0.2, "max_draws": 64})
    history = {"noise_g2": [g2], "noise_trace_sigma": [trace]}  # a previous point: B_simple = 21
    values = [en.two_batch_points(linear_gradient(x, y, w), subset, [0], step, cfg, [history])
              for step in range(200)]
    assert {v[2][0] for v in values} == {128}  # 4 x 21 = 84, rounded up to a power of two
    draws = [v[3][0] for v in values]
    assert min(draws) >= en.MIN_DRAWS and np.mean(draws) < 64
    est_g2 = np.array([float(v[0][0]) for v in values])
    est_trace = np.array([float(v[1][0]) for v in values])
    assert est_g2.mean() == pytest.approx(g2, rel=0.1)
    assert est_trace.mean() == pytest.approx(trace, rel=0.1)
    assert est_trace.mean() / est_g2.mean() == pytest.approx(trace / g2, rel=0.1)
    each = est_trace / est_g2
    assert np.std(each) / np.mean(each) < 0.4


def test_whole_subset_big_batch_gives_the_exact_mean_gradient():
    """With no valid previous B_simple the big batch is the whole subset, whose mean is G itself: the |G|^2
    estimate is exact at every draw."""
    x, y, w = least_squares_problem()
    g2, _ = closed_form(x, y, w)
    cfg = en.settings({"batch_small": 8, "draws": 2})
    est_g2, _, bigs, draws = en.two_batch_points(linear_gradient(x, y, w), torch.arange(len(y)), [3], 5, cfg)
    assert bigs == [len(y)] and draws == [2]
    assert float(est_g2[0]) == pytest.approx(g2, rel=1e-10)


def test_batch_big_choice_and_previous_b_simple():
    cfg = en.settings({"batch_small": 16})
    assert en.choose_batch_big(cfg, float("nan"), 1280) == 1280
    assert en.choose_batch_big(cfg, 5.0, 1280) == 64  # 4 x 16 at least
    assert en.choose_batch_big(cfg, 100.0, 1280) == 512
    assert en.choose_batch_big(cfg, 1000.0, 1280) == 1280
    assert en.choose_batch_big({**cfg, "batch_big": 256}, 1000.0, 1280) == 256
    points = {"noise_g2": [1.0, -3.0, 2.0, 2.0], "noise_trace_sigma": [9.0, 1.0, 10.0, 20.0],
              "noise_g2_exact": [math.nan] * 4, "noise_trace_sigma_exact": [math.nan] * 4}
    assert en.previous_b_simple(points, 2) == pytest.approx(30 / 4)
    assert en.previous_b_simple(points, 3) == pytest.approx(31.0)  # (1 + 10 + 20) / (-3 + 2 + 2)
    assert math.isnan(en.previous_b_simple({**points, "noise_g2": [1.0, -5.0, 2.0, 2.0]}, 3))  # mean |G|^2 < 0
    points["noise_g2_exact"][-1], points["noise_trace_sigma_exact"][-1] = 4.0, 40.0
    assert en.previous_b_simple(points, 2) == pytest.approx(10.0)  # exact values first
    assert math.isnan(en.previous_b_simple({}, 3))


@pytest.mark.parametrize("task, y, ignore", [
    ("classification", torch.tensor([3, 1, 4]), None),
    ("language_model", torch.tensor([[1, 2, 3], [4, 5, 6]]), None),
    ("segmentation", torch.tensor([[[0, 255], [1, 1]], [[255, 255], [255, 255]]]), 255),
    ("regression", torch.zeros(4, 2), None),
])
def test_example_targets_equal_target_count_one_example_at_a_time(task, y, ignore):
    from batchscale.engine import tasks

    expected = [max(tasks.target_count(task, y[i:i + 1], ignore), 1) for i in range(y.shape[0])]
    assert en.example_targets(task, y, ignore).tolist() == expected
