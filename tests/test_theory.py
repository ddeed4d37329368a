"""Least-squares theory: hand-computed quantities, and the exact expected-loss recursion checked against
an independent enumeration of every batch sequence."""

import itertools
import json
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


def sign_symmetric_problem(base_rows, w_star, w0):
    """Every sign pattern of each base row: the rows' distribution is symmetric in each coordinate, so H is
    diagonal and the fourth-moment map sends diagonal P to diagonal P: the diagonal closure is exact."""
    base = np.asarray(base_rows, dtype=float)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=base.shape[1])))
    X = (base[:, None, :] * signs[None, :, :]).reshape(-1, base.shape[1])
    return th.LeastSquaresProblem(X=X, w_star=np.asarray(w_star, float), w0=np.asarray(w0, float))


def test_diagonal_closure_is_exact_for_a_sign_symmetric_design():
    problem = sign_symmetric_problem([[1.0, 0.3, 0.5], [0.2, 1.4, 0.1], [0.6, 0.8, 1.1]], [0.6, -1.1, 0.4],
                                     [0.1, 0.2, -0.3])
    model = th.eigenbasis_model(problem.X)
    p0 = th.diagonal_second_moment(model, [problem.w0 - problem.w_star])
    readout = 0.5 * model.lam
    for eta, m in ((0.3, 1), (0.7, 4), (1.1, 12)):
        losses, _ = th.diagonal_run(model, p0, [eta] * 30, m, readout)
        np.testing.assert_allclose(losses, th.expected_loss_curve(problem, eta, m).at(range(31)), rtol=1e-9)
        assert th.diagonal_spectral_radius(model, eta, m) == pytest.approx(
            th.expected_loss_curve(problem, eta, m).spectral_radius, rel=1e-9)
    # a rate that changes (a warm-up over 3 steps, then constant) is followed step by step
    rates = [0.1, 0.3, 0.5] + [0.7] * 10
    losses, moment = th.diagonal_run(model, p0, rates, 4, readout, at=5)
    e0 = problem.w0 - problem.w_star
    P, direct, moments = np.outer(e0, e0), [], []
    for eta in rates + [None]:
        direct.append(0.5 * np.trace(problem.H @ P))
        moments.append(np.diag(model.U.T @ P @ model.U))
        if eta is not None:
            P = reference.second_moment_step(problem, P, eta, 4)
    np.testing.assert_allclose(losses, direct, rtol=1e-9)
    np.testing.assert_allclose(moment, moments[5], rtol=1e-9)
    assert th.diagonal_segments(rates) == [(0.1, 1), (0.3, 1), (0.5, 1), (0.7, 10)]


def test_diagonal_closure_follows_the_full_recursion_on_gaussian_rows():
    # Gaussian rows in a random basis: the empirical fourth moments are symmetric only up to sampling
    problem = reference.interpolating_least_squares(n=2048, d=8, seed=4, w0_scale=0.3)
    model = th.eigenbasis_model(problem.X)
    p0 = th.diagonal_second_moment(model, [problem.w0 - problem.w_star])
    eps = 0.01 * problem.initial_loss
    for m in (1, 4, 16, 64):
        for eta in (0.2 / problem.lambda_max, 1.0 / problem.lambda_max, 1.6 / problem.lambda_max):
            full = th.expected_steps_to_loss(problem, eta, m, eps)
            assert th.diagonal_spectral_radius(model, eta, m) == pytest.approx(
                th.expected_loss_curve(problem, eta, m).spectral_radius, rel=2e-3)
            losses, _ = th.diagonal_run(model, p0, [eta] * 400, m, 0.5 * model.lam)
            hits = np.flatnonzero(losses <= eps)
            if full["diverged"]:  # m = 1 at the larger rates, m = 4 at 1.6/λ₁
                assert not hits.size and losses[-1] > 1e3 * losses[0]
            else:  # the integer step of the first crossing; `full` interpolates below it
                assert hits[0] - 1 <= full["k"] <= hits[0]


def small_study(**changes) -> dict:
    """A resolved least-squares study small enough for a unit test (512 rows, d = 8 + bias)."""
    from batchscale.validate import load_config

    study = {"dataset": {"name": "least_squares", "options": {"n_train": 512, "n_test": 64, "dim": 8, "noise": 0.0}},
             "model": {"name": "linear"}, "optimizer": {"momentum": 0.0}, "eta0": 0.2, "base_batch": 2,
             "strategies": ["blr", "lsr"], "epochs": 4, "threshold": {"fixed": 0.01}, "metrics": ["train_loss"],
             "batch_sizes": [2, 4, 8, 12, 16, 32], "seeds": [0, 1]}
    study.update(changes)
    return load_config({"studies": {"ls": study}})["studies"]["ls"]


def test_first_crossing_and_crossing_batch_by_hand():
    from batchscale.analysis.theory_check import crossing_batch, first_crossing

    # loss 0.5^t: eps = 0.2 between t = 2 (0.25) and 3 (0.125), in log loss: 2 + ln(1.25)/ln(2)
    k, diverged = first_crossing(0.5 ** np.arange(10), 0.2, 10.0)
    assert k == pytest.approx(2 + math.log(1.25) / math.log(2)) and not diverged
    assert first_crossing(np.ones(5), 0.5, 10.0) == (math.inf, False)
    assert first_crossing(np.array([1.0, 5.0, 20.0, 0.001]), 0.01, 10.0) == (math.inf, True)
    assert first_crossing(np.array([1.0, np.inf]), 0.01, 10.0) == (math.inf, True)
    assert crossing_batch(lambda m: m / 10.0, 1.0, 100.0) == pytest.approx(10.0)
    assert crossing_batch(lambda m: m / 1000.0, 1.0, 100.0) is None


def test_theory_document_predicts_k_and_the_stability_edges():
    from batchscale.analysis.theory_check import theory_document

    doc = theory_document(small_study())
    assert doc["prediction"]["available"] and doc["prediction"]["threshold"] == 0.01
    k, grid, radius = doc["predicted_k"], doc["predicted_k_on_grid"], doc["spectral_radius"]
    assert k["blr"]["2"] == k["lsr"]["2"]  # the same run at m0
    assert 0.45 < k["lsr"]["8"] / k["lsr"]["4"] < 0.55  # lsr halves k while the rate is far from the edge
    assert k["blr"]["32"] is None  # 4 epochs of 16 steps end before the blr target
    assert all(g >= v for s in k for v, g in zip(k[s].values(), grid[s].values()) if v is not None)
    edges = doc["stability_edges"]
    assert edges["blr"] == {"gradient_descent": None, "mean_square": None}
    assert edges["lsr"]["gradient_descent"] == pytest.approx(2 * 2 / (0.2 * doc["lambda_max"]), rel=1e-9)
    assert 12 < edges["lsr"]["mean_square"] < edges["lsr"]["gradient_descent"] < 32
    assert radius["lsr"]["32"] > 1.0 > radius["lsr"]["12"] and k["lsr"]["32"] is None
    assert all(v is None or v > 0 for v in doc["predicted_linear_error"]["lsr"].values())
    json.dumps(doc, allow_nan=False)  # JSON-safe: no inf or NaN


@pytest.mark.parametrize("change, note", [({"optimizer": {"momentum": 0.9}}, "no momentum"),
                                          ({"threshold": "lower_quartile_of_largest"}, "not fixed")])
def test_theory_document_says_why_it_does_not_predict(change, note):
    from batchscale.analysis.theory_check import theory_document

    doc = theory_document(small_study(**change))
    assert not doc["prediction"]["available"] and note in doc["prediction"]["note"]
    assert "predicted_k" not in doc and "lambda_max" in doc
