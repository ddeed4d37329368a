"""theory.json of a least-squares study, from the study's own data and config alone (no training):

- λ₁, β and the predicted lsr breakdown (`least_squares.least_squares_theory`);
- the expected-loss recursion's k(m) for every fixed strategy and batch size of the study
  (``predicted_k``, and ``predicted_k_on_grid``: the same curve read on the run's evaluation grid by the
  analysis's own first-crossing rule, the reading the measured k gets), the spectral radius of each
  (η, m) (``spectral_radius``: > 1 is mean-square unstable), the expected linear approximation error at
  the evaluation point nearest to k (``predicted_linear_error``), and per strategy the batch size at
  which its rate crosses gradient descent's limit 2/λ₁ and the one at which the recursion turns
  mean-square unstable (``stability_edges``, continuous in m).

The recursion is `theory.diagonal_run`: H's eigendecomposition and the fourth moments once, then one d×d
eigendecomposition per (η, m) (closed form over each stretch of constant rate, so warm-up and schedules
are followed step by step as the engine's `RunState.lr` gives them). The start is the mean second moment
of the study's seeds' own initial weights (each built as the engine builds it), the loss is read on the
engine's training evaluation subset. The prediction needs plain SGD (no momentum), noise-free targets and
a fixed threshold; otherwise ``prediction.available`` is false and ``prediction.note`` says why.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from batchscale.analysis import theory
from batchscale.analysis.least_squares import design_matrix, least_squares_theory
from batchscale.analysis.steps import iterations_to_threshold
from batchscale.analysis.thresholds import parse_threshold_rule
from batchscale.data import load_dataset
from batchscale.engine.parts import SUBSET_SEED_OFFSET
from batchscale.engine.state import RunState
from batchscale.models import build_model
from batchscale.spec.runs import RunKey, run_config
from batchscale.spec.strategies import STRATEGIES, peak_learning_rate

METHOD = ("expected loss of minibatch SGD (sampling without replacement within a step), second-moment "
          "recursion closed on the diagonal of P in H's eigenbasis (analysis.theory.diagonal_run)")
RESIDUAL_TOLERANCE = 1e-6  # max |X w* - y| / max |y| below which the targets count as noise-free


def theory_document(study: dict) -> dict:
    """The theory.json document of a study the theory describes (`spec.studies.has_theory`).

    Args:
      study: the resolved study config.

    Returns:
      `least_squares.least_squares_theory` of the study's training inputs (with the bias column), its eta0,
      base batch, batch sizes and momentum, and the predictions of the module docstring.
    """
    splits = load_dataset(study["dataset"], download=False)
    X = design_matrix(splits.train_x.double().numpy())
    doc = least_squares_theory(X, study["eta0"], study["base_batch"], study["batch_sizes"],
                               float(study.get("optimizer", {}).get("momentum", 0.0)))
    doc.update(predictions(study, splits, X))
    return doc


def unsupported(study: dict, residual: float) -> str | None:
    """Why the recursion does not predict this study's k (None when it does)."""
    optimizer = study.get("optimizer", {})
    if optimizer.get("name", "sgd") != "sgd" or float(optimizer.get("momentum", 0.0)) != 0.0:
        return "the recursion is for plain SGD (no momentum)"
    if float(optimizer.get("weight_decay", 0.0) or 0.0) != 0.0:
        return "the recursion has no weight decay"
    if residual > RESIDUAL_TOLERANCE:
        return f"the targets are not interpolated (relative residual {residual:.2g}): noise is not modelled"
    try:
        rule = parse_threshold_rule(study.get("threshold", "lower_quartile_of_largest"))
    except ValueError as err:
        return str(err)
    if rule["kind"] != "fixed":
        return "the threshold is not fixed: eps comes from the measurement"
    return None


def initial_weights(study: dict, spec) -> np.ndarray:
    """Each seed's initial [weight, bias] of the linear model, built as the engine builds it (one row a seed)."""
    rows = []
    for seed in study["seeds"]:
        torch.manual_seed(int(seed))
        params = dict(build_model(study["model"], spec).named_parameters())
        weight = [p for name, p in params.items() if name.endswith("weight")][0]
        bias = [p for name, p in params.items() if name.endswith("bias")]
        parts = [weight.detach().double().numpy().ravel()] + [b.detach().double().numpy().ravel() for b in bias]
        rows.append(np.concatenate(parts))
    return np.array(rows)


def subset_readout(model: theory.EigenbasisModel, X: np.ndarray, study: dict) -> tuple[np.ndarray, int]:
    """r with E[L_S] = rᵀp for the engine's training evaluation subset S (engine.parts), and |S|."""
    generator = torch.Generator().manual_seed(study["dataset"].get("split_seed", 0) + SUBSET_SEED_OFFSET)
    subset = torch.randperm(X.shape[0], generator=generator)[: study["evaluation"]["train_subset"]].numpy()
    Y = X[subset] @ model.U
    return 0.5 * np.mean(Y * Y, axis=0), int(subset.size)


def first_crossing(losses: np.ndarray, eps: float, divergence_factor: float) -> tuple[float, bool]:
    """(k, diverged) of an expected-loss curve given at every step: the first step at or below eps,
    interpolated linearly in log loss from the step before; inf when never reached, and diverged when the
    loss first exceeds `divergence_factor` x its initial value (or overflows), as the engine stops a run."""
    losses = np.asarray(losses, dtype=float)
    blown = np.flatnonzero(~np.isfinite(losses) | (losses > divergence_factor * losses[0]))
    below = np.flatnonzero(losses <= eps)
    if blown.size and (not below.size or blown[0] < below[0]):
        return math.inf, True
    if not below.size:
        return math.inf, False
    t = int(below[0])
    if t == 0 or losses[t] <= 0:
        return float(t), False
    before, after = math.log(losses[t - 1]), math.log(losses[t])
    return t - 1.0 + (before - math.log(eps)) / (before - after), False


def expected_linear_error(model: theory.EigenbasisModel, p: np.ndarray, readout: np.ndarray, step: float,
                          m: int) -> float:
    """E over the fresh batch of the engine's linear approximation error, signed, at second moment p.

    With e = w − w*, g = Ĥ_B e the batch gradient and Δw = −s g (s = η0 m/m0), the engine measures
    L_S(w + Δw) − L_S(w) − ⟨g, Δw⟩ = s⟨g − ∇L_S, g⟩ + ½ s² gᵀH_S g on its evaluation subset S, whose
    expectation is s (tr G − tr(H_S H P)) + ½ s² tr(H_S G) with G = E[ggᵀ] = c4 M4(P) + cH HPH; here in the
    diagonal closure (H_S read by its diagonal in H's eigenbasis, 2·readout).
    """
    c4, cH = theory.sampling_coefficients(int(m), model.n)
    lam, hs = model.lam, 2.0 * readout
    kp = model.K @ p
    trace_g = c4 * kp.sum() + cH * np.dot(lam * lam, p)
    return float(step * (trace_g - np.dot(hs * lam, p)) + 0.5 * step * step * (c4 * np.dot(hs, kp)
                                                                               + cH * np.dot(hs * lam * lam, p)))


def nearest_point(points, k: float) -> int | None:
    """The evaluation point nearest to step k in log step (analysis.accuracy.nearest_point_value's rule)."""
    points = np.asarray([s for s in points if s > 0], dtype=float)
    if not (np.isfinite(k) and k > 0) or not points.size:
        return None
    return int(points[np.argmin(np.abs(np.log(points) - math.log(k)))])


def run_rates(state: RunState) -> np.ndarray:
    """The rate of every update of a run, as the engine sets it (`RunState.lr`); constant after warm-up and
    without a schedule, so only the warm-up steps are asked one by one."""
    run = state.run
    if run["schedule"].get("name", "constant") == "constant":
        head = [state.lr(t) for t in range(min(state.warmup_steps, state.steps_total))]
        tail = state.lr(len(head)) if state.steps_total > len(head) else 0.0
        return np.array(head + [tail] * (state.steps_total - len(head)), dtype=float)
    return np.array([state.lr(t) for t in range(state.steps_total)], dtype=float)


def predict_run(model, p0, readout, run: dict, n: int, eps: float) -> dict:
    """The predictions for one (strategy, batch size): k, k on the evaluation grid, spectral radius,
    expected linear approximation error at the evaluation point nearest k."""
    state = RunState.create(run, n, torch.device("cpu"))
    m = int(run["batch_size"])
    rates = run_rates(state)
    losses, _ = theory.diagonal_run(model, p0, rates, m, readout)
    k, diverged = first_crossing(losses, eps, float(run["divergence_factor"]))
    points = np.asarray(state.eval_points)
    on_grid = math.inf if diverged else iterations_to_threshold(points, losses[points], eps)
    at = nearest_point(state.eval_points, k)
    step = run["eta0"] * run["batch_size"] / run["base_batch"]
    error = None
    if at is not None:
        moment = theory.diagonal_run(model, p0, rates[:at], m, readout, at=at)[1]
        error = expected_linear_error(model, moment, readout, step, m)
    return {"k": k, "k_on_grid": on_grid, "diverged": diverged, "error": error,
            "radius": theory.diagonal_spectral_radius(model, float(run["lr_peak"]), m)}


def crossing_batch(f, low: float, high: float, points: int = 24) -> float | None:
    """The smallest m in [low, high] at which f(m) - 1 turns positive (log-spaced scan, then bisection)."""
    grid = np.geomspace(low, high, points)
    values = [f(m) for m in grid]
    for a, b, fa, fb in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
        if fa <= 1.0 < fb:
            for _ in range(36):  # (b - a) / 2^36: far below a batch size
                mid = 0.5 * (a + b)
                a, b = (mid, b) if f(mid) <= 1.0 else (a, mid)
            return float(0.5 * (a + b))
    return None


def stability_edges(model, strategy: str, study: dict, lambda_max: float) -> dict:
    """Continuous batch sizes at which the strategy's peak rate crosses 2/λ₁ (gradient descent) and at which
    the recursion turns mean-square unstable; None where it does not happen within the study's sizes."""
    low, high = float(min(study["batch_sizes"])), float(max(study["batch_sizes"]))

    def rate(m):
        return peak_learning_rate(strategy, study["eta0"], m, study["base_batch"])

    return {"gradient_descent": crossing_batch(lambda m: rate(m) * lambda_max / 2.0, low, high),
            "mean_square": crossing_batch(lambda m: theory.diagonal_spectral_radius(model, rate(m), m), low, high)}


def finite(value):
    """JSON-safe: a non-finite float becomes None."""
    return None if value is None or not math.isfinite(value) else float(value)


def predictions(study: dict, splits, X: np.ndarray) -> dict:
    """The prediction part of theory.json (module docstring)."""
    y = splits.train_y.double().numpy().reshape(-1)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    residual = float(np.max(np.abs(X @ w_star - y)) / max(float(np.max(np.abs(y))), 1e-300))
    reason = unsupported(study, residual)
    info = {"method": METHOD, "available": reason is None, "note": reason or "", "metric": "train_loss",
            "seeds": [int(s) for s in study["seeds"]]}
    if reason is not None:
        return {"prediction": info}
    eps = parse_threshold_rule(study["threshold"])["value"]
    model = theory.eigenbasis_model(X)
    p0 = theory.diagonal_second_moment(model, initial_weights(study, splits.spec) - w_star)
    readout, subset = subset_readout(model, X, study)
    info.update({"threshold": eps, "loss": f"train loss on the engine's evaluation subset ({subset} rows)",
                 "start": "mean second moment of the seeds' own initial weights"})
    config = {"studies": {"study": study}, "data_root": "data", "download": False}
    out = {name: {} for name in ("predicted_k", "predicted_k_on_grid", "spectral_radius", "predicted_linear_error")}
    edges = {}
    lam = theory.top_eigenvalue(X)
    for strategy in study["strategies"]:
        if strategy not in STRATEGIES or STRATEGIES[strategy].searched:
            continue
        rows = {int(m): predict_run(model, p0, readout, run_config(config, RunKey("study", strategy, int(m), 0)),
                                    X.shape[0], eps) for m in study["batch_sizes"]}
        out["predicted_k"][strategy] = {str(m): finite(r["k"]) for m, r in rows.items()}
        out["predicted_k_on_grid"][strategy] = {str(m): finite(r["k_on_grid"]) for m, r in rows.items()}
        out["spectral_radius"][strategy] = {str(m): r["radius"] for m, r in rows.items()}
        out["predicted_linear_error"][strategy] = {str(m): finite(r["error"]) for m, r in rows.items()}
        edges[strategy] = stability_edges(model, strategy, study, lam)
    return {"prediction": info, **out, "stability_edges": edges}
