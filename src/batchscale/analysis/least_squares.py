"""The least-squares theory check of a study: λ₁, β and the batch size at which linear learning-rate scaling
breaks down, predicted from the data (theory.json, `batchscale.analysis.theory_check`) and measured from the
speedup table; the recursion's k(m) and stability edges beside the measured k(m) and diverged seeds
(`theory_figure_numbers`, what the theory figure draws).

Which studies the theory describes is a question of the config: spec.studies.has_theory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchscale.analysis import theory


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
      True when measured lies in [predicted / 2, predicted] (on a grid of powers of two: the predicted size
      or one doubling earlier; on a finer grid any size up to a factor 2 below it, where SGD's mean-square
      edge lies); None when neither is there; False otherwise.
    """
    if predicted is None or measured is None:
        return None if predicted is None and measured is None else False
    return predicted / 2 <= measured <= predicted


THEORY_COLUMNS = ("strategy", "batch_size", "predicted_k", "predicted_k_on_grid", "spectral_radius",
                  "predicted_linear_error", "measured_k", "measured_low", "measured_high", "interval_kind",
                  "ratio", "n_seeds", "n_reached", "n_diverged", "diverged_fraction")


def theory_rows(theory_doc: dict, common: pd.DataFrame, metric: str = "train_loss") -> pd.DataFrame:
    """The prediction of theory.json beside the measurement of speedup_common.csv, per strategy and batch size.

    Args:
      theory_doc: the study's theory.json.
      common: its speedup_common.csv.
      metric: the metric of the measurement (the prediction is of the train loss).

    Returns:
      THEORY_COLUMNS, one row per strategy with a prediction (every measured strategy when there is none)
      and measured batch size: ratio = measured k_mean / predicted k on the evaluation grid (NaN unless
      both are finite), diverged_fraction = n_diverged / n_seeds; NaN where theory.json has no value.
    """
    rows = common[common["metric"].astype(str) == metric]
    predicted = theory_doc.get("predicted_k") or {}
    out = []
    for strategy, part in rows.groupby("strategy", sort=False):
        strategy = str(strategy)
        for row in part.sort_values("batch_size").itertuples(index=False):
            key = str(int(row.batch_size))

            def value(name):
                got = (theory_doc.get(name) or {}).get(strategy, {}).get(key)
                return np.nan if got is None else float(got)

            on_grid, measured = value("predicted_k_on_grid"), float(row.k_mean)
            ratio = measured / on_grid if np.isfinite(measured) and np.isfinite(on_grid) else np.nan
            seeds = int(row.n_seeds)
            out.append({"strategy": strategy, "batch_size": int(row.batch_size), "predicted_k": value("predicted_k"),
                        "predicted_k_on_grid": on_grid, "spectral_radius": value("spectral_radius"),
                        "predicted_linear_error": value("predicted_linear_error"), "measured_k": measured,
                        "measured_low": float(row.k_low), "measured_high": float(row.k_high),
                        "interval_kind": str(row.interval_kind), "ratio": ratio, "n_seeds": seeds,
                        "n_reached": int(row.n_reached), "n_diverged": int(row.n_diverged),
                        "diverged_fraction": int(row.n_diverged) / seeds if seeds else np.nan})
    table = pd.DataFrame(out, columns=list(THEORY_COLUMNS))
    if predicted:
        table = table[table["strategy"].isin(list(predicted))]
    return table.reset_index(drop=True)


def edge_window(sizes, edges, margin: float = 1.1) -> tuple[float, float] | None:
    """The batch sizes the stability-edge panel spans: from the largest size at or below min(edges)/margin to
    the smallest at or above max(edges)·margin (the ends of `sizes` where none is); None without an edge."""
    edges = [float(e) for e in edges if e is not None and np.isfinite(e)]
    if not edges:
        return None
    sizes = np.sort(np.asarray(sizes, dtype=float))
    below = sizes[sizes <= min(edges) / margin]
    above = sizes[sizes >= max(edges) * margin]
    return (float(below[-1]) if below.size else float(sizes[0]), float(above[0]) if above.size else float(sizes[-1]))


def theory_figure_numbers(theory_doc: dict, common: pd.DataFrame, metric: str = "train_loss") -> dict:
    """What the theory figure draws (theory.json beside speedup_common.csv).

    Args:
      theory_doc: the study's theory.json.
      common: its speedup_common.csv.
      metric: the metric of the measurement.

    Returns:
      {rows (`theory_rows`), agreement ({strategy: {max_deviation: the largest |ratio - 1| where both k are
      finite, up_to: the largest batch size it covers}}: the sizes up to the edge window's lower end, where
      the recursion's mean over rare excursions is not yet what a typical run does), edges (theory.json's stability_edges of the
      strategies that have one), window (`edge_window` over those edges), threshold (the measurement's eps),
      prediction (theory.json's prediction block), lambda_max}.
    """
    rows = theory_rows(theory_doc, common, metric)
    edges = {s: e for s, e in (theory_doc.get("stability_edges") or {}).items()
             if any(v is not None for v in e.values())}
    window = edge_window(theory_doc["batch_sizes"], [v for e in edges.values() for v in e.values()])
    agreement = {}
    for strategy, part in rows.groupby("strategy", sort=False):
        inside = part["batch_size"] <= (window[0] if window else np.inf)
        ratio = part.loc[inside, "ratio"].dropna()
        if len(ratio):
            agreement[strategy] = {"max_deviation": float(np.max(np.abs(ratio - 1.0))),
                                   "up_to": int(part.loc[inside, "batch_size"].max())}
    threshold = common.loc[common["metric"].astype(str) == metric, "threshold"]
    return {"rows": rows, "agreement": agreement, "edges": edges, "window": window,
            "threshold": float(threshold.iloc[0]) if len(threshold) else float("nan"),
            "prediction": theory_doc.get("prediction", {}), "lambda_max": theory_doc["lambda_max"]}
