"""References for the least-squares theory (batchscale.analysis.theory): a problem generator and the
second-moment recursion written directly on d×d matrices, which the tests check the diagonalised
recursion against."""

from __future__ import annotations

import numpy as np

from batchscale.analysis.theory import LeastSquaresProblem, sampling_coefficients


def interpolating_least_squares(n: int = 4096, d: int = 64, decay: float = 1.0, seed: int = 0,
                                w0_scale: float = 0.0) -> LeastSquaresProblem:
    """Gaussian rows with covariance eigenvalues λ_j ∝ j^(−decay) (λ_1 = 1), noise-free targets.

    The covariance is diagonal in a random orthonormal basis (so no coordinate is special); w* is
    standard normal scaled to unit norm; the start is w0 = w0_scale · (standard normal) (0 by default:
    the initial error is w*). Reproducible from `seed`.
    """
    rng = np.random.default_rng(seed)
    spectrum = np.arange(1, d + 1, dtype=float) ** (-float(decay))
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    X = (rng.standard_normal((n, d)) * np.sqrt(spectrum)) @ basis.T
    w_star = rng.standard_normal(d)
    w_star /= np.linalg.norm(w_star)
    w0 = w0_scale * rng.standard_normal(d)
    return LeastSquaresProblem(X=X, w_star=w_star, w0=w0)


def second_moment_step(problem: LeastSquaresProblem, P: np.ndarray, eta: float, m: int,
                       replacement: bool = False) -> np.ndarray:
    """One step of the recursion on the d×d matrix P, written directly (no d²×d² operator).

    The plain form of what `expected_loss_curve` diagonalises; it costs O(n d²) per step.
    """
    X, H, n = problem.X, problem.H, problem.n
    c4, cH = sampling_coefficients(int(m), n, replacement)
    q = np.einsum("id,de,ie->i", X, P, X)  # x_iᵀ P x_i
    fourth = (X * q[:, None]).T @ X / n
    return P - eta * (H @ P + P @ H) + eta * eta * (c4 * fourth + cH * H @ P @ H)
