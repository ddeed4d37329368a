"""Least-squares theory: hand-computed quantities, and the exact expected-loss recursion checked against
an independent enumeration of every batch sequence."""

import itertools
import math

import numpy as np
import pytest

from batchscale.analysis import theory as th
import theory_reference as reference


def small_problem(rows, w_star, w0=None):
    X = np.asarray(rows, dtype=float)
    w_star = np.asarray(w_star, dtype=float)
    return th.LeastSquaresProblem(X=X, w_star=w_star, w0=np.zeros_like(w_star) if w0 is None else w0)


def test_hessian_top_eigenvalue_and_beta_by_hand():
    # rows (2, 0), (0, 1): H = diag(4, 1) / 2 = diag(2, 0.5); row norms² 4 and 1
    X = np.array([[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(th.hessian(X), [[2.0, 0.0], [0.0, 0.5]])
    assert th.top_eigenvalue(X) == pytest.approx(2.0)
    assert th.max_row_norm_sq(X) == pytest.approx(4.0)
    # a non-diagonal one: rows (1, 1), (1, -1), (2, 0): XᵀX = [[6, 0], [0, 2]], n = 3
    X = np.array([[1.0, 1.0], [1.0, -1.0], [2.0, 0.0]])
    assert th.top_eigenvalue(X) == pytest.approx(2.0)
    assert th.max_row_norm_sq(X) == pytest.approx(4.0)


def test_mbb_step_and_critical_batch_by_hand():
    # β = 4, λ₁ = 2: m = 1 -> 1/4; m = 3 -> 3 / (4 + 4) = 0.375; large m -> 1/λ₁ = 0.5
    assert th.mbb_step(1, 4.0, 2.0) == pytest.approx(0.25)
    assert th.mbb_step(3, 4.0, 2.0) == pytest.approx(0.375)
    assert th.mbb_step(10 ** 9, 4.0, 2.0) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(th.mbb_step(np.array([1, 3]), 4.0, 2.0), [0.25, 0.375])
    assert th.mbb_critical_batch(4.0, 2.0) == pytest.approx(3.0)


def test_lsr_breakdown_batch_by_hand():
    # η0 = 0.3 at m0 = 1, λ₁ = 1: 0.3·4 = 1.2 <= 2, 0.3·8 = 2.4 > 2
    assert th.lsr_breakdown_batch(0.3, 1, 1.0, [16, 1, 2, 4, 8]) == 8
    # exactly at the limit is not beyond it: 0.5·4/1 = 2
    assert th.lsr_breakdown_batch(0.5, 1, 1.0, [1, 2, 4, 8]) == 8
    assert th.lsr_breakdown_batch(0.01, 1, 1.0, [1, 2, 4]) is None


def test_sampling_coefficients():
    assert th.sampling_coefficients(5, 5) == (0.0, 1.0)  # full batch: deterministic
    assert th.sampling_coefficients(1, 5) == (1.0, 0.0)
    # n = 4, m = 2: c4 = 2 / (2·3) = 1/3, cH = 4·1 / (2·3) = 2/3
    assert th.sampling_coefficients(2, 4) == pytest.approx((1 / 3, 2 / 3))
    assert th.sampling_coefficients(2, 4, replacement=True) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="batch size 6"):
        th.sampling_coefficients(6, 5)


def exact_expected_losses(problem, eta, m, steps, replacement):
    """E[L(w_t)] by enumerating every sequence of batches (independent of the recursion)."""
    n = problem.n
    if replacement:
        batches = list(itertools.product(range(n), repeat=m))
    else:
        batches = list(itertools.combinations(range(n), m))
    X, y = problem.X, problem.y
    states = [(problem.w0.copy(), 1.0)]
    losses = [th.loss(X, y, problem.w0)]
    for _ in range(steps):
        new_states = []
        for w, probability in states:
            for batch in batches:
                rows = X[list(batch)]
                gradient = rows.T @ (rows @ w - y[list(batch)]) / m
                new_states.append((w - eta * gradient, probability / len(batches)))
        states = new_states
        losses.append(sum(p * th.loss(X, y, w) for w, p in states))
    return np.array(losses)


@pytest.mark.parametrize("replacement", [False, True])
def test_recursion_equals_enumeration_of_every_batch_sequence(replacement):
    problem = small_problem([[1.0, 0.5], [0.2, 1.5], [-1.0, 0.3], [0.7, -0.8]], [0.6, -1.1],
                            w0=np.array([0.1, 0.2]))
    eta, m, steps = 0.7, 2, 3
    expected = exact_expected_losses(problem, eta, m, steps, replacement)
    curve = th.expected_loss_curve(problem, eta, m, replacement=replacement)
    np.testing.assert_allclose(curve.at(range(steps + 1)), expected, rtol=1e-10)
    # the direct d×d form agrees too
    e0 = problem.w0 - problem.w_star
    P = np.outer(e0, e0)
    direct = []
    for _ in range(steps + 1):
        direct.append(0.5 * np.trace(problem.H @ P))
        P = reference.second_moment_step(problem, P, eta, m, replacement=replacement)
    np.testing.assert_allclose(direct, expected, rtol=1e-10)


def test_full_batch_is_gradient_descent():
    problem = reference.interpolating_least_squares(n=64, d=4, seed=3)
    eta = 1.0 / problem.lambda_max
    w = problem.w0.copy()
    losses = []
    for _ in range(6):
        losses.append(th.loss(problem.X, problem.y, w))
        w = w - eta * problem.X.T @ (problem.X @ w - problem.y) / problem.n
    np.testing.assert_allclose(th.expected_loss_curve(problem, eta, problem.n).at(range(6)), losses,
                               rtol=1e-9)


def test_steps_to_expected_loss_interpolates_in_log_loss():
    # loss 0.5^t: 0.25 at t = 2, 0.125 at t = 3; eps = 0.2 -> k = 2 + ln(1.25)/ln(2) = log2(5)
    curve = th.ExpectedLossCurve(rates=np.array([0.5]), weights=np.array([1.0]))
    result = th.steps_to_expected_loss(curve, 0.2)
    assert result == {"k": pytest.approx(math.log2(5.0)), "diverged": False}
    assert th.steps_to_expected_loss(curve, 2.0)["k"] == 0.0
    # past max_steps: not reached, not diverged
    slow = th.ExpectedLossCurve(rates=np.array([0.999]), weights=np.array([1.0]))
    assert th.steps_to_expected_loss(slow, 0.1, max_steps=10) == {"k": math.inf, "diverged": False}
    # growing: diverged (1.5^18 > 1e3), even though a slowly decaying mode would reach eps later
    growing = th.ExpectedLossCurve(rates=np.array([1.5, 0.1]), weights=np.array([1e-3, 1.0]))
    assert growing.spectral_radius == pytest.approx(1.5)
    assert th.steps_to_expected_loss(growing, 1e-6) == {"k": math.inf, "diverged": True}
    # a tiny growing mode that only blows up after eps is reached does not stop the run
    # (loss 1.001 at t = 0, 0.1015 at t = 1: interpolated between them in log loss)
    assert th.steps_to_expected_loss(growing, 0.5)["k"] == pytest.approx(
        math.log(1.001 / 0.5) / math.log(1.001 / 0.1015))


def test_generator_interpolates_and_has_the_asked_spectrum():
    problem = reference.interpolating_least_squares(n=4096, d=16, seed=0)
    assert th.loss(problem.X, problem.y, problem.w_star) == 0.0
    eigenvalues = np.linalg.eigvalsh(problem.H)[::-1]
    # population eigenvalues 1/i; with n = 256·d rows the sample ones are within ~10%
    np.testing.assert_allclose(eigenvalues, 1.0 / np.arange(1, 17), rtol=0.15)
    again = reference.interpolating_least_squares(n=4096, d=16, seed=0)
    np.testing.assert_array_equal(problem.X, again.X)
    assert not np.array_equal(problem.X, reference.interpolating_least_squares(n=4096, d=16, seed=1).X)


def test_mbb_step_is_stable_and_twice_the_limit_is_not():
    problem = reference.interpolating_least_squares(n=512, d=6, seed=2)
    for m in (1, 4, 32, 512):
        eta = th.mbb_step(m, problem.beta, problem.lambda_max)
        assert th.expected_loss_curve(problem, eta, m).spectral_radius < 1.0
    # beyond 2/λ₁ even gradient descent diverges
    assert th.expected_loss_curve(problem, 2.05 / problem.lambda_max, 512).spectral_radius > 1.0
