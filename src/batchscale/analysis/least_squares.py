"""The least-squares theory check of a study: λ₁, β and the batch size at which linear learning-rate scaling
breaks down, predicted from the data (theory.json, `batchscale.analysis.theory_check`) and measured from the
speedup table.

Which studies the theory describes is a question of the config: spec.studies.has_theory.
"""

from __future__ import annotations

import numpy as np

from batchscale.analysis import theory
from batchscale.spec.strategies import STRATEGIES, peak_learning_rate


def design_matrix(x, bias: bool = True) -> np.ndarray:
    """The rows the loss is quadratic in.

    Args:
      x: the inputs, one per row (any trailing shape).
      bias: append a column of ones, for the linear model's bias.

    Returns:
      x flattened to (n, d) (or (n, d + 1)).
    """
    X = np.asarray(x, dtype=float).reshape(len(x), -1)
    return np.hstack([X, np.ones((X.shape[0], 1))]) if bias else X


def least_squares_theory(X, eta0: float, base_batch: int, batch_sizes, momentum: float = 0.0) -> dict:
    """λ₁ and β of the loss (1/2n) Σ (x_iᵀw − y_i)² over the rows X, and the predictions (theory.json).

    The engine's regression loss is half the squared error, so its Hessian is XᵀX/n (not 2XᵀX/n) and the
    stability limit of gradient descent is 2/λ₁ of that matrix. With heavy-ball momentum μ the limit is
    2(1 + μ)/λ₁; the prediction uses that limit (μ = 0 gives 2/λ₁).

    Args:
      X: the design matrix (`design_matrix`).
      eta0: the base learning rate.
      base_batch: m0.
      batch_sizes: the study's batch sizes.
      momentum: μ.

    Returns:
      the loss, n, d, lambda_max, beta, momentum, stability_limit, mbb_critical_batch (Ma et al.'s
      m* = β/λ₁ + 1), eta0, base_batch, batch_sizes, lsr_step and mbb_step per batch size, and
      predicted_lsr_breakdown: the first batch size at which lsr's step η0·m/m0 exceeds the limit (None when
      none does).
    """
    X = np.asarray(X, dtype=float)
    lam = theory.top_eigenvalue(X)
    beta = theory.max_row_norm_sq(X)
    sizes = sorted(int(b) for b in batch_sizes)
    # lsr_breakdown_batch compares with 2/λ; an effective λ/(1+μ) turns that into 2(1+μ)/λ.
    breakdown = theory.lsr_breakdown_batch(eta0, base_batch, lam / (1.0 + momentum), sizes)
    return {
        "loss": "(1/2n) sum_i (x_i^T w + b - y_i)^2; Hessian H = [X 1]^T [X 1] / n",
        "n": int(X.shape[0]), "d": int(X.shape[1]),
        "lambda_max": lam, "beta": beta, "momentum": float(momentum),
        "stability_limit": 2.0 * (1.0 + momentum) / lam,
        "mbb_critical_batch": theory.mbb_critical_batch(beta, lam),
        "eta0": float(eta0), "base_batch": int(base_batch), "batch_sizes": sizes,
        "lsr_step": {str(m): eta0 * m / base_batch for m in sizes},
        "mbb_step": {str(m): theory.mbb_step(m, beta, lam) for m in sizes},
        "predicted_lsr_breakdown": breakdown,
    }


def measured_breakdown(rows, base_batch: int) -> int | None:
    """The batch size at which a strategy's k stops falling.

    Args:
      rows: one strategy's rows of a speedup table (batch_size, k_mean).
      base_batch: m0.

    Returns:
      the first batch size above m0 whose seeds did not all reach eps (diverged or not reached) or whose
      k(m) is at least k at the previous batch size; None when k falls at every measured size, or when m0
      itself never reached eps.
    """
    rows = rows.sort_values("batch_size")
    base = rows[rows["batch_size"].astype(int) == int(base_batch)]["k_mean"].astype(float)
    if base.empty or not np.isfinite(base.iloc[0]):
        return None  # m0 itself never reached eps: nothing to break down from
    previous = None
    for m, k in zip(rows["batch_size"].astype(int), rows["k_mean"].astype(float)):
        if m > base_batch and (not np.isfinite(k) or (previous is not None and k >= previous)):
            return int(m)
        previous = k
    return None


def breakdown_agrees(predicted: int | None, measured: int | None) -> bool | None:
    """Whether the measured breakdown confirms the predicted one.

    Args:
      predicted: the predicted lsr breakdown (None: none predicted).
      measured: the measured one (None: none measured).

    Returns:
      True when measured at the predicted batch size or one doubling earlier; None when neither is there;
      False otherwise.
    """
    if predicted is None or measured is None:
        return None if predicted is None and measured is None else False
    return measured in (predicted, predicted // 2)


def rule_rates(strategies, eta0: float, batch_sizes, base_batch: int) -> dict:
    """The learning rate each fixed rule gives at every batch size (before warm-up and schedule).

    Args:
      strategies: strategy names; searched ones (tuned) have no rule and are left out.
      eta0: the base learning rate.
      batch_sizes: the batch sizes.
      base_batch: m0.

    Returns:
      {strategy: [eta(m) for m in batch_sizes]}.
    """
    return {strategy: [peak_learning_rate(strategy, eta0, m, base_batch) for m in batch_sizes]
            for strategy in strategies if strategy in STRATEGIES and not STRATEGIES[strategy].searched}


def theory_figure_numbers(theory_doc: dict, common, metric: str = "train_loss", points: int = 200) -> dict:
    """What the theory figure draws beside the measured speedups.

    Args:
      theory_doc: the study's theory.json.
      common: its speedup_common.csv.
      metric: the metric of the speedups.
      points: points of Ma et al.'s step curve between the smallest and largest batch size.

    Returns:
      {rows (the speedup rows of `metric`), predicted and measured (the lsr breakdown; the measured one is
      None without lsr), rates (`rule_rates` of the strategies of the rows at the study's batch sizes),
      mbb_sizes and mbb_step (Ma et al.'s m / (β + (m − 1) λ₁) on a log-spaced grid)}.
    """
    rows = common[common["metric"] == metric]
    base = int(theory_doc["base_batch"])
    sizes = np.array(theory_doc["batch_sizes"], dtype=float)
    lsr = rows[rows["strategy"] == "lsr"]
    dense = np.geomspace(sizes.min(), sizes.max(), points)
    return {
        "rows": rows,
        "predicted": theory_doc.get("predicted_lsr_breakdown"),
        "measured": measured_breakdown(lsr, base) if not lsr.empty else None,
        "rates": rule_rates(list(rows["strategy"].unique()), theory_doc["eta0"], sizes, base),
        "mbb_sizes": dense,
        "mbb_step": theory.mbb_step(dense, theory_doc["beta"], theory_doc["lambda_max"]),
    }
