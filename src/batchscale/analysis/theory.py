"""Least-squares theory of minibatch SGD: exact quantities to set beside what the grid measures.

On an interpolating least-squares problem (targets y = X w*, no noise) everything the batch-size
literature predicts can be computed exactly instead of estimated:

- H = XᵀX/n, its top eigenvalue λ₁ (gradient descent is stable for η < 2/λ₁) and β = max_i ‖x_i‖²;
- Ma, Bassily & Belkin (2018)'s step m / (β + (m − 1) λ₁), optimal for their worst-case bound, which
  saturates at the critical batch m* = β/λ₁ + 1;
- the batch at which linear scaling η0·m/m0 first exceeds the stability limit 2/λ₁;
- the expected loss of minibatch SGD (no momentum) at every step, by an exact recursion of the second
  moment P_t = E[(w_t − w*)(w_t − w*)ᵀ], so that k(m; ε) is a deterministic function of (η, m, ε)
  with no seeds to average.

Loss convention (used everywhere here): L(w) = 1/(2n) Σ_i (x_iᵀw − y_i)² = ½ eᵀHe with e = w − w*, so the
expected loss is ½ tr(H P_t).

Sampling: each step draws m distinct rows uniformly at random (without replacement within the step),
independently of the other steps. This is the sampling for which the second-moment recursion is exact and
closed; the engine's epoch-wise permutation (without replacement across the steps of an epoch) correlates
steps and has no closed recursion. ``replacement=True`` gives i.i.d. rows instead. Within a step, with
A_i = x_i x_iᵀ and Ĥ = (1/m) Σ_{i∈B} A_i:

    E[Ĥ P Ĥ] = c4 · M4(P) + cH · H P H,   M4(P) = (1/n) Σ_i A_i P A_i,
    without replacement: c4 = (n − m) / (m (n − 1)),  cH = n (m − 1) / (m (n − 1))
    with replacement:    c4 = 1/m,                     cH = (m − 1) / m

(at m = n without replacement c4 = 0, cH = 1: full-batch gradient descent, deterministic). Then
P_{t+1} = P_t − η (H P_t + P_t H) + η² E[Ĥ P_t Ĥ]. In vectorised form this is P ↦ T P with the d²×d²
matrix T = I − η (I⊗H + H⊗I) + η² (c4 M4 + cH H⊗H), which is symmetric (each term is self-adjoint for the
trace inner product), so T = V diag(μ) Vᵀ and the expected loss is exactly
½ Σ_j (vec(H)ᵀv_j)(v_jᵀ vec(P_0)) μ_j^t. One eigendecomposition per (η, m) gives the whole curve.

The least-squares theory check of a study (theory.json, `batchscale.analysis.least_squares`) uses the
closed-form predictions; tests/theory_reference.py holds the problem generator and the direct d×d form of
the recursion that the tests check these against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


# --------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class LeastSquaresProblem:
    """An interpolating least-squares problem: rows X (n × d), targets y = X w*, start w0.

    H, λ₁ and β are computed at construction; the d²×d² fourth-moment operator, which only the expected-
    loss recursion needs, on first use.
    """

    X: np.ndarray
    w_star: np.ndarray
    w0: np.ndarray
    H: np.ndarray = field(init=False, repr=False)
    lambda_max: float = field(init=False)
    beta: float = field(init=False)

    def __post_init__(self):
        X = np.asarray(self.X, dtype=float)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "H", hessian(X))
        object.__setattr__(self, "lambda_max", top_eigenvalue(X))
        object.__setattr__(self, "beta", max_row_norm_sq(X))

    @cached_property
    def fourth_moment(self) -> np.ndarray:
        """(1/n) Σ_i (x_i⊗x_i)(x_i⊗x_i)ᵀ, see `fourth_moment_operator`."""
        return fourth_moment_operator(self.X)

    @cached_property
    def symmetric_parts(self) -> tuple:
        """The pieces of T restricted to symmetric matrices: (S, Sᵀ(I⊗H + H⊗I)S, SᵀM4S, Sᵀ(H⊗H)S)."""
        S = symmetric_basis(self.d)
        eye = np.eye(self.d)
        first = S.T @ (np.kron(eye, self.H) + np.kron(self.H, eye)) @ S
        return S, first, S.T @ self.fourth_moment @ S, S.T @ np.kron(self.H, self.H) @ S

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        return int(self.X.shape[1])

    @property
    def y(self) -> np.ndarray:
        return self.X @ self.w_star

    @property
    def initial_loss(self) -> float:
        return loss(self.X, self.y, self.w0)


def loss(X, y, w) -> float:
    """L(w) = 1/(2n) Σ_i (x_iᵀw − y_i)²."""
    residual = np.asarray(X) @ np.asarray(w) - np.asarray(y)
    return 0.5 * float(np.mean(residual ** 2))


def hessian(X) -> np.ndarray:
    """H = XᵀX / n, the Hessian of the loss."""
    X = np.asarray(X, dtype=float)
    return X.T @ X / X.shape[0]


def top_eigenvalue(X) -> float:
    """λ₁, the largest eigenvalue of XᵀX / n."""
    return float(np.linalg.eigvalsh(hessian(X))[-1])


def max_row_norm_sq(X) -> float:
    """β = max_i ‖x_i‖²."""
    X = np.asarray(X, dtype=float)
    return float(np.max(np.sum(X * X, axis=1)))


def fourth_moment_operator(X) -> np.ndarray:
    """The d²×d² matrix of P ↦ (1/n) Σ_i x_i x_iᵀ P x_i x_iᵀ, i.e. (1/n) Σ_i (x_i⊗x_i)(x_i⊗x_i)ᵀ."""
    X = np.asarray(X, dtype=float)
    n, d = X.shape
    Z = (X[:, :, None] * X[:, None, :]).reshape(n, d * d)
    return Z.T @ Z / n


# --------------------------------------------------------------------------------------------
# Closed-form predictions


def mbb_step(m, beta: float, lambda_max: float):
    """Ma, Bassily & Belkin (2018)'s step for batch m: m / (β + (m − 1) λ₁)."""
    m = np.asarray(m, dtype=float)
    step = m / (beta + (m - 1.0) * lambda_max)
    return float(step) if step.ndim == 0 else step


def mbb_critical_batch(beta: float, lambda_max: float) -> float:
    """m* = β/λ₁ + 1, beyond which the MBB step stops growing linearly in m (it tends to 1/λ₁)."""
    return beta / lambda_max + 1.0


def lsr_breakdown_batch(eta0: float, base_batch: int, lambda_max: float, batch_sizes):
    """The first batch size (of the sorted `batch_sizes`) at which linear scaling η0·m/m0 exceeds 2/λ₁.

    Beyond 2/λ₁ even full-batch gradient descent diverges. None when no listed batch size gets there.
    """
    limit = 2.0 / lambda_max
    for m in sorted(int(b) for b in batch_sizes):
        if eta0 * m / base_batch > limit:
            return m
    return None


# --------------------------------------------------------------------------------------------
# Exact expected loss of minibatch SGD


def sampling_coefficients(m: int, n: int, replacement: bool = False) -> tuple[float, float]:
    """(c4, cH) with E[Ĥ P Ĥ] = c4 M4(P) + cH H P H for a batch of m of the n rows (see module doc)."""
    if not 1 <= m <= n and not replacement:
        raise ValueError(f"batch size {m} must lie in [1, n = {n}] when sampling without replacement")
    if replacement:
        return 1.0 / m, (m - 1.0) / m
    if n == 1:
        return 0.0, 1.0
    return (n - m) / (m * (n - 1.0)), n * (m - 1.0) / (m * (n - 1.0))


def symmetric_basis(d: int) -> np.ndarray:
    """An orthonormal basis (d² × d(d+1)/2) of vectorised symmetric d×d matrices.

    P_t stays symmetric, so the recursion can be restricted to this subspace: the eigendecomposition then
    works on d(d+1)/2 instead of d² dimensions.
    """
    rows, cols = np.triu_indices(d)
    basis = np.zeros((d * d, rows.size))
    index = np.arange(rows.size)
    diagonal = rows == cols
    basis[rows * d + cols, index] = np.where(diagonal, 1.0, math.sqrt(0.5))
    basis[cols * d + rows, index] = np.where(diagonal, 1.0, math.sqrt(0.5))
    return basis


@dataclass(frozen=True)
class ExpectedLossCurve:
    """E[L(w_t)] = Σ_j weight_j · rate_j^t for t = 0, 1, ... (exact)."""

    rates: np.ndarray
    weights: np.ndarray

    @property
    def spectral_radius(self) -> float:
        """The largest |rate| carrying weight: the expected loss grows without bound when it is > 1."""
        significant = np.abs(self.weights) > 1e-14 * max(np.abs(self.weights).sum(), 1e-300)
        return float(np.max(np.abs(self.rates[significant]))) if significant.any() else 0.0

    def at(self, steps) -> np.ndarray:
        """The expected loss at the given (integer) steps."""
        t = np.asarray(steps, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):
            return (self.rates[None, :] ** t.reshape(-1, 1)) @ self.weights


def expected_loss_curve(problem: LeastSquaresProblem, eta: float, m: int,
                        replacement: bool = False) -> ExpectedLossCurve:
    """The exact expected-loss curve of SGD (step η, batch m) on `problem` from w0.

    T is restricted to the symmetric matrices (where P_t lives) before its eigendecomposition; modes
    that carry no weight are dropped.
    """
    S, first, fourth, hh = problem.symmetric_parts
    c4, cH = sampling_coefficients(int(m), problem.n, replacement)
    T = np.eye(S.shape[1]) - eta * first + eta * eta * (c4 * fourth + cH * hh)
    rates, vectors = np.linalg.eigh(0.5 * (T + T.T))
    e0 = problem.w0 - problem.w_star
    p0 = S.T @ np.outer(e0, e0).ravel()
    h = S.T @ (0.5 * problem.H.ravel())
    weights = (vectors.T @ h) * (vectors.T @ p0)
    keep = np.abs(weights) > 1e-15 * np.abs(weights).sum()
    return ExpectedLossCurve(rates=rates[keep], weights=weights[keep])


def steps_to_expected_loss(curve: ExpectedLossCurve, eps: float, max_steps: int = 100_000,
                           divergence_factor: float = 1e3) -> dict:
    """k: the first step at which the expected loss is <= eps, from an `ExpectedLossCurve`.

    Every step is evaluated; k is interpolated linearly in log(loss) between the last step above eps and
    the first at or below it, so that k varies continuously with η (integer k would tie many trials at
    large batch sizes, where k is small). Returns ``{"k", "diverged"}``: k = inf when eps is not reached
    within `max_steps`, or when the loss first exceeds `divergence_factor` × the initial loss (diverged,
    as the engine stops such a run).
    """
    initial = float(np.sum(curve.weights))
    if initial <= eps:
        return {"k": 0.0, "diverged": False}
    state = curve.weights.copy()  # weight_j · rate_j^t at the last step evaluated
    done, previous, chunk = 0, initial, 64
    with np.errstate(over="ignore", invalid="ignore"):
        while done < max_steps:
            count = min(chunk, max_steps - done)
            powers = np.cumprod(np.broadcast_to(curve.rates, (count, curve.rates.size)), axis=0)
            values = powers @ state
            steps = np.arange(done + 1, done + count + 1)
            blown = np.flatnonzero(~np.isfinite(values) | (values > divergence_factor * initial))
            below = np.flatnonzero(values <= eps)
            first_below = int(below[0]) if below.size else None
            if blown.size and (first_below is None or blown[0] < first_below):
                return {"k": math.inf, "diverged": True}
            if first_below is not None:
                before = previous if first_below == 0 else float(values[first_below - 1])
                after = float(values[first_below])
                step = float(steps[first_below])
                if after <= 0.0:
                    return {"k": step, "diverged": False}
                fraction = (math.log(before) - math.log(eps)) / (math.log(before) - math.log(after))
                return {"k": step - 1.0 + fraction, "diverged": False}
            state = state * powers[-1]
            previous, done, chunk = float(values[-1]), done + count, min(chunk * 2, 4096)
    return {"k": math.inf, "diverged": curve.spectral_radius > 1.0}


def expected_steps_to_loss(problem: LeastSquaresProblem, eta: float, m: int, eps: float,
                           max_steps: int = 100_000, replacement: bool = False,
                           divergence_factor: float = 1e3) -> dict:
    """k(m; ε) of SGD with step η and batch m on `problem`, exactly in expectation (see module doc)."""
    curve = expected_loss_curve(problem, eta, m, replacement)
    return steps_to_expected_loss(curve, eps, max_steps=max_steps, divergence_factor=divergence_factor)


# --------------------------------------------------------------------------------------------
# The recursion closed on the diagonal of P in H's eigenbasis (d dimensions instead of d(d+1)/2)


@dataclass(frozen=True)
class EigenbasisModel:
    """What the diagonal closure of the recursion needs: H = U diag(λ) Uᵀ and the fourth moments K.

    With y_i = Uᵀx_i, K_ab = (1/n) Σ_i y_ia² y_ib². Keeping only the diagonal p of UᵀPU, the recursion
    becomes p ↦ A p with the symmetric d×d matrix

        A(η, m) = diag(1 − 2ηλ + η² cH λ²) + η² c4 K,

    which is exact when the rows' distribution is symmetric in each eigen-direction (Gaussian rows, for
    instance: M4 then maps diagonal P to diagonal, and off-diagonal P, which the loss does not see, never
    feeds the diagonal). One d×d eigendecomposition per (η, m) against one of d(d+1)/2 for the full
    recursion. On the default least-squares study (d = 65, Gaussian features and a bias column) it took
    0.2 s of CPU for 15 batch sizes where the full recursion took 97 s, and its k agreed with the full
    recursion's to 0.1% up to ηλ₁ = 1.82 (m = 72), 0.7% at 1.87 and 6% at 1.92 (m = 76), next to the
    mean-square edge (m = 76.9 here, 76.8 by the full recursion). tests/test_theory.py checks that it is
    exact on sign-symmetric rows and follows the full recursion on Gaussian ones.
    """

    lam: np.ndarray
    U: np.ndarray
    K: np.ndarray
    n: int


def eigenbasis_model(X) -> EigenbasisModel:
    """The `EigenbasisModel` of the rows X (n × d)."""
    X = np.asarray(X, dtype=float)
    lam, U = np.linalg.eigh(hessian(X))
    Y2 = (X @ U) ** 2
    return EigenbasisModel(lam=lam, U=U, K=Y2.T @ Y2 / X.shape[0], n=int(X.shape[0]))


def diagonal_second_moment(model: EigenbasisModel, errors) -> np.ndarray:
    """p0: the mean over the rows of `errors` (initial errors w0 − w*, one per row) of (Uᵀe)²."""
    E = np.atleast_2d(np.asarray(errors, dtype=float)) @ model.U
    return np.mean(E * E, axis=0)


def diagonal_operator(model: EigenbasisModel, eta: float, m: float, replacement: bool = False) -> np.ndarray:
    """A(η, m) of `EigenbasisModel` (m may be fractional: the coefficients are continuous in m)."""
    if replacement:
        c4, cH = 1.0 / m, (m - 1.0) / m
    else:
        c4, cH = (model.n - m) / (m * (model.n - 1.0)), model.n * (m - 1.0) / (m * (model.n - 1.0))
    lam = model.lam
    return np.diag(1.0 - 2.0 * eta * lam + eta * eta * cH * lam * lam) + eta * eta * c4 * model.K


def diagonal_spectral_radius(model: EigenbasisModel, eta: float, m: float) -> float:
    """The largest |eigenvalue| of A(η, m): E[L] grows without bound when it is > 1 (mean-square unstable)."""
    return float(np.max(np.abs(np.linalg.eigvalsh(diagonal_operator(model, eta, m)))))


def diagonal_segments(rates) -> list[tuple[float, int]]:
    """(rate, number of steps) of each stretch of equal rates, in order."""
    out: list[tuple[float, int]] = []
    for rate in np.asarray(rates, dtype=float):
        if out and out[-1][0] == rate:
            out[-1] = (rate, out[-1][1] + 1)
        else:
            out.append((float(rate), 1))
    return out


def diagonal_run(model: EigenbasisModel, p0, rates, m: int, readout, at: int | None = None):
    """E[L] at steps 0..T of a run (T = len(rates)), and the diagonal second moment after `at` steps.

    Args:
      model: the `EigenbasisModel`.
      p0: the initial diagonal second moment (`diagonal_second_moment`).
      rates: the step size of each update; each stretch of equal rates is propagated in closed form in the
        eigenbasis of its A(η, m), so the cost is one d×d eigendecomposition per stretch and O(T d) in all.
      m: the batch size.
      readout: r with L = rᵀp (½λ for the loss on the rows of the model).
      at: the step whose second moment to return (None: none).

    Returns:
      (losses of length T + 1, the second moment after `at` steps or None); non-finite once E[L] overflows.
    """
    readout = np.asarray(readout, dtype=float)
    p = np.asarray(p0, dtype=float)
    losses, moment, done = [np.array([readout @ p])], None, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for rate, count in diagonal_segments(rates):
            mu, V = np.linalg.eigh(diagonal_operator(model, rate, m))
            q = V.T @ p
            powers = mu[None, :] ** np.arange(1, count + 1, dtype=float)[:, None]
            losses.append(powers @ (q * (V.T @ readout)))
            if at is not None and done <= at <= done + count:
                moment = V @ (mu ** (at - done) * q)
            p = V @ (mu ** count * q)
            done += count
    if at is not None and moment is None and at == 0:
        moment = np.asarray(p0, dtype=float)
    return np.concatenate(losses), moment
