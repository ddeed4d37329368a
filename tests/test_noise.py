"""Gradient noise scale: the estimators against a least-squares problem solved in closed form (numpy)."""

import math

import numpy as np
import pytest
import torch

import noise_reference as noise

torch.set_num_threads(1)

N, D = 512, 6
# Two-batch draws averaged (numerator and denominator separately) in the 10% test. The tr Sigma estimate
# of one draw at (B_small, B_big) = (8, 64) has a relative sd of about 1.5 on this problem, so 4000 draws
# give a standard error of about 2.4%: 10% is 4 standard errors (the test checks this too).
DRAWS = 4000


def least_squares_problem(seed=0):
    """Per-example loss l_i(w) = (x_i . w - y_i)^2 / 2, at fixed weights w away from the optimum."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * np.linspace(0.5, 2.0, D)
    w_true = rng.normal(size=D)
    y = x @ w_true + rng.normal(scale=1.5, size=N)
    w = w_true + 0.15 * rng.normal(size=D)
    return x, y, w


def closed_form(x, y, w):
    """Independent numpy: g_i = r_i x_i with r = Xw - y; |G|^2 and tr Sigma (n convention)."""
    r = x @ w - y
    g_mean = x.T @ r / len(r)
    g2 = float(g_mean @ g_mean)
    trace_sigma = float(np.mean(r ** 2 * np.sum(x ** 2, axis=1)) - g2)
    return g2, trace_sigma


def torch_loss(params, xb, yb):
    return 0.5 * ((xb @ params["w"] - yb) ** 2).mean()


def as_torch(x, y, w):
    return (torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64),
            {"w": torch.tensor(w, dtype=torch.float64)})


def test_two_batch_estimates_by_hand():
    # |G|^2 = 1, tr Sigma = 4: E|G_B|^2 = 1 + 4/B gives 5 at B=1 and 2 at B=4
    g2, trace = noise.two_batch_estimates(5.0, 2.0, 1, 4)
    assert g2 == pytest.approx(1.0) and trace == pytest.approx(4.0)
    with pytest.raises(ValueError):
        noise.two_batch_estimates(5.0, 2.0, 4, 4)


def test_exact_per_example_matches_closed_form():
    x, y, w = least_squares_problem()
    g2, trace = closed_form(x, y, w)
    assert trace / g2 > 5  # the problem is noisy enough for B_simple to matter
    xt, yt, params = as_torch(x, y, w)
    exact = noise.exact_noise(torch_loss, params, xt, yt, chunk=100)
    assert exact.g2 == pytest.approx(g2, rel=1e-9)
    assert exact.trace_sigma == pytest.approx(trace, rel=1e-9)
    assert (exact.n_examples, exact.n_params) == (N, D)
    sample = noise.exact_noise(torch_loss, params, xt, yt, ddof=1)
    assert sample.trace_sigma == pytest.approx(trace * N / (N - 1), rel=1e-9)


def test_both_estimators_within_ten_percent_of_closed_form():
    x, y, w = least_squares_problem()
    g2, trace = closed_form(x, y, w)
    b_simple = trace / g2
    xt, yt, params = as_torch(x, y, w)
    generator = torch.Generator().manual_seed(1)
    draws = [noise.two_batch_noise(torch_loss, params, xt, yt, 8, 64, generator) for _ in range(DRAWS)]
    mean_g2 = np.mean([d.g2 for d in draws])
    mean_trace = np.mean([d.trace_sigma for d in draws])
    for values, mean in (([d.g2 for d in draws], mean_g2), ([d.trace_sigma for d in draws], mean_trace)):
        assert np.std(values) / math.sqrt(DRAWS) < 0.035 * abs(mean)  # enough draws for a 10% test
    assert mean_g2 == pytest.approx(g2, rel=0.10)
    assert mean_trace == pytest.approx(trace, rel=0.10)
    assert mean_trace / mean_g2 == pytest.approx(b_simple, rel=0.10)
    exact = noise.exact_noise(torch_loss, params, xt, yt)
    assert exact.trace_sigma / exact.g2 == pytest.approx(b_simple, rel=0.10)
    # one draw alone is far noisier than the average: the averaging is what the test relies on
    single = [d.trace_sigma / d.g2 for d in draws[:20]]
    assert np.std(single) > 0.1 * b_simple


def test_draws_average_the_squared_norms():
    x, y, w = least_squares_problem()
    xt, yt, params = as_torch(x, y, w)
    generator = torch.Generator().manual_seed(5)
    singles = [noise.two_batch_noise(torch_loss, params, xt, yt, 8, 64, generator) for _ in range(3)]
    averaged = noise.two_batch_noise(torch_loss, params, xt, yt, 8, 64, torch.Generator().manual_seed(5), draws=3)
    assert averaged.g2_small == pytest.approx(np.mean([s.g2_small for s in singles]), rel=1e-12)
    assert averaged.trace_sigma == pytest.approx(np.mean([s.trace_sigma for s in singles]), rel=1e-9)


def test_mean_gradient_micro_batches_are_exactly_weighted():
    x, y, w = least_squares_problem()
    xt, yt, params = as_torch(x[:50], y[:50], w)
    whole = noise.mean_gradient(torch_loss, params, xt, yt)["w"]
    split = noise.mean_gradient(torch_loss, params, xt, yt, micro_batch=16)["w"]  # 16+16+16+2
    expected = x[:50].T @ (x[:50] @ w - y[:50]) / 50
    np.testing.assert_allclose(whole.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(split.numpy(), expected, rtol=1e-12)


def test_nested_batches_drawn_with_replacement():
    generator = torch.Generator().manual_seed(0)
    small, big = noise.draw_two_batches(10, 4, 50, generator)
    assert torch.equal(small, big[:4])
    assert len(set(big.tolist())) < 50 and int(big.max()) < 10  # repeats: with replacement


def test_functional_loss_of_a_module_gives_the_same_gradients():
    x, y, w = least_squares_problem()
    model = torch.nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w)[None])
    loss_fn, params = noise.functional_loss(model, lambda out, t: 0.5 * ((out.squeeze(-1) - t) ** 2).mean())
    xt, yt, _ = as_torch(x, y, w)
    g2, trace = closed_form(x, y, w)
    exact = noise.exact_noise(loss_fn, params, xt, yt)
    assert exact.g2 == pytest.approx(g2, rel=1e-9) and exact.trace_sigma == pytest.approx(trace, rel=1e-9)


def test_stacked_runs_equal_runs_one_at_a_time():
    x, y, w = least_squares_problem()
    xt, yt, _ = as_torch(x[:64], y[:64], w)
    weights = [w, w + 0.3, w - 0.2]
    stacked = {"w": torch.stack([torch.tensor(v) for v in weights])}
    exact = noise.exact_noise_stacked(torch_loss, stacked, xt, yt)
    two = noise.two_batch_noise_stacked(torch_loss, stacked, xt, yt, 4, 16, torch.Generator().manual_seed(3))
    for r, v in enumerate(weights):
        alone = closed_form(x[:64], y[:64], v)
        assert float(exact["g2"][r]) == pytest.approx(alone[0], rel=1e-9)
        assert float(exact["trace_sigma"][r]) == pytest.approx(alone[1], rel=1e-9)
        one = noise.two_batch_noise(torch_loss, {"w": torch.tensor(v)}, xt, yt, 4, 16,
                                    torch.Generator().manual_seed(3))
        assert float(two["g2_small"][r]) == pytest.approx(one.g2_small, rel=1e-9)
        assert float(two["trace_sigma"][r]) == pytest.approx(one.trace_sigma, rel=1e-9)


def test_exact_budget():
    params = {"a": torch.zeros(10, 10), "b": torch.zeros(5)}
    assert noise.count_params(params) == 105
    assert noise.exact_is_cheap(params, 100, 10_500)
    assert not noise.exact_is_cheap(params, 101, 10_500)


def test_windowed_ratio_is_ratio_of_means_not_mean_of_ratios():
    g2 = [1.0, 3.0, -1.0, 1.0, np.nan]
    trace = [2.0, 3.0, 4.0, 4.0, np.nan]
    b, invalid = noise.windowed_noise_scale(g2, trace, window=2, centred=False)  # trailing: by hand below
    # point 1: (2+3)/2 / ((1+3)/2) = 1.25, where the mean of ratios would be (2/1 + 3/3)/2 = 1.5
    # point 2: (3+4)/2 / ((3-1)/2) = 3.5, where the mean of ratios would be (1 - 4)/2 = -1.5
    # point 3: mean |G|^2 = 0: NaN, flagged; point 4: the NaN is left out, 4/1 = 4
    np.testing.assert_allclose(b, [2.0, 1.25, 3.5, np.nan, 4.0])
    assert invalid.tolist() == [False, False, False, True, False]
    one, _ = noise.windowed_noise_scale(g2, trace, window=1)
    np.testing.assert_allclose(one, [2.0, 1.0, np.nan, 4.0, np.nan])
    empty, flagged = noise.windowed_noise_scale([np.nan], [np.nan], window=3)
    assert math.isnan(empty[0]) and not flagged[0]


def test_noise_scale_is_nan_for_non_positive_signal():
    np.testing.assert_allclose(noise.noise_scale([2.0, 0.0, -1.0], [4.0, 1.0, 1.0]), [2.0, np.nan, np.nan])
