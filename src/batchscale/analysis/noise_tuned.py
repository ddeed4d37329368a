"""B_simple against the tuned critical batch of the same study at the same eps (issue 22): noise_vs_tuned.csv.

McCandlish et al.'s B_crit ~ B_noise holds for a learning rate re-tuned at every batch size, so the noise scale
is compared with the **tuned** strategy's B_crit, at the common eps and at tuned's own eps. B_simple is read
where each run of a fixed strategy at the smallest batch size (the path a one-run prediction would take)
reaches that eps (`noise.b_simple_at_k` on the centred-window B_simple), with its spread over seeds; the median
over every batch size's runs is given beside it for context (B_simple at eps depends on the path).

For a fixed rate the same model gives B_crit(eta) ~ B_noise x / (1 - x), x = eta / eta_max, eta_max the large-
batch limit of the tuned optimum eta*(m) = eta_max / (1 + B_noise / m) (its fit in critical_batch.json; eta* at
the largest batch where the fit is missing): for blr (eta0 at every batch size) that prediction is set beside
blr's measured B_crit at the common eps, a second check, not a verdict on the noise scale. A study without a
tuned strategy gets rows with comparison ``needs_tuned`` and no ratio.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchscale.analysis.noise import b_simple_at_k, k_runs_from_cube

TUNED = "tuned"
NOISE_VS_TUNED_COLUMNS = (
    "strategy", "eps_scope", "threshold", "comparison", "source_batch", "n_runs", "b_simple", "b_simple_low",
    "b_simple_high", "b_simple_exact", "b_simple_median_all_batches", "invalid_fraction", "tuned_B_crit",
    "tuned_B_crit_low", "tuned_B_crit_high", "tuned_interval_kind", "tuned_B_crit_report", "ratio", "ratio_low",
    "ratio_high", "ratio_exact", "eta", "eta_max", "x", "fixed_rule_B_crit_predicted", "fixed_B_crit_measured",
    "fixed_B_crit_report", "fixed_ratio_measured_over_predicted",
)


def _number(value) -> float:
    if isinstance(value, dict):
        value = value.get("estimate")
    return float("nan") if value is None else float(value)


def _div(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")


def tuned_critical(entry: dict) -> dict:
    """tuned_B_crit, _low, _high, interval kind and report of a critical_batch.json entry (NaN where none)."""
    fit = (entry or {}).get("B_crit") or {}
    report = fit.get("report")
    return {"tuned_B_crit": _number(fit.get("estimate")), "tuned_B_crit_low": _number(fit.get("low")),
            "tuned_B_crit_high": _number(fit.get("high")),
            "tuned_interval_kind": fit.get("interval_kind") or (entry or {}).get("interval_kind") or "none",
            "tuned_B_crit_report": "" if report is None else str(report)}


def eta_max_of(entry: dict) -> float:
    """eta_max of tuned's optimal-rate fit; eta* at the largest batch size where the fit gives none."""
    value = _number((entry or {}).get("eta_max"))
    if math.isfinite(value) and value > 0:
        return value
    rates = {int(m): float(r) for m, r in ((entry or {}).get("eta_star") or {}).items() if r is not None}
    return rates[max(rates)] if rates else float("nan")


def b_simple_at_eps(over: pd.DataFrame, k_runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: B_simple (two-batch and exact) where it reaches eps, and its fraction of invalid windows."""
    rows = []
    grouped = {key: run for key, run in over.groupby(["strategy", "batch_size", "seed"])}
    for record in k_runs.itertuples(index=False):
        run = grouped.get((record.strategy, record.batch_size, record.seed))
        if run is None:
            continue
        rows.append({"strategy": record.strategy, "batch_size": int(record.batch_size), "seed": record.seed,
                     "at": b_simple_at_k(run["step"], run["b_simple"], float(record.k)),
                     "exact": b_simple_at_k(run["step"], run["b_simple_exact"], float(record.k)),
                     "invalid": float(run["window_invalid"].astype(bool).mean())})
    return pd.DataFrame(rows, columns=["strategy", "batch_size", "seed", "at", "exact", "invalid"])


def comparison_row(runs: pd.DataFrame, strategy: str, scope: str, eps: float, tuned_entry: dict | None) -> dict:
    """One row of noise_vs_tuned.csv: `strategy`'s B_simple at eps beside tuned's B_crit at that eps."""
    mine = runs[runs["strategy"] == strategy]
    source = int(mine["batch_size"].min()) if len(mine) else -1
    base = mine[(mine["batch_size"] == source) & np.isfinite(mine["at"])]
    exact = mine[(mine["batch_size"] == source) & np.isfinite(mine["exact"])]["exact"]
    every = mine[np.isfinite(mine["at"])]["at"]
    row = {"strategy": strategy, "eps_scope": scope, "threshold": eps, "source_batch": source,
           "n_runs": len(base), "b_simple": float(base["at"].mean()) if len(base) else math.nan,
           "b_simple_low": float(base["at"].min()) if len(base) else math.nan,
           "b_simple_high": float(base["at"].max()) if len(base) else math.nan,
           "b_simple_exact": float(exact.mean()) if len(exact) else math.nan,
           "b_simple_median_all_batches": float(every.median()) if len(every) else math.nan,
           "invalid_fraction": float(mine["invalid"].mean()) if len(mine) else math.nan,
           "comparison": TUNED if tuned_entry is not None else "needs_tuned"}
    row.update(tuned_critical(tuned_entry))
    row["ratio"] = _div(row["tuned_B_crit"], row["b_simple"])
    row["ratio_low"] = _div(row["tuned_B_crit_low"], row["b_simple_high"])
    row["ratio_high"] = _div(row["tuned_B_crit_high"], row["b_simple_low"])
    row["ratio_exact"] = _div(row["tuned_B_crit"], row["b_simple_exact"])
    return row


def fixed_rule_check(row: dict, eta: float, eta_max: float, measured: float, report: str = "") -> dict:
    """The fixed-rate relation B_crit(eta) ~ B_noise x / (1 - x), x = eta / eta_max, with B_simple for B_noise,
    beside the measured fixed-rate B_crit (its estimate, and its report: a value, a bound "> 64", or "")."""
    x = _div(eta, eta_max)
    predicted = row["b_simple"] * x / (1 - x) if math.isfinite(x) and x < 1 else math.nan
    return {"eta": eta, "eta_max": eta_max, "x": x, "fixed_rule_B_crit_predicted": predicted,
            "fixed_B_crit_measured": measured, "fixed_B_crit_report": report,
            "fixed_ratio_measured_over_predicted": _div(measured, predicted)}


def noise_vs_tuned(cube, over: pd.DataFrame, critical: dict, study: dict, metric: str = "train_loss") -> pd.DataFrame:
    """noise_vs_tuned.csv: for each fixed strategy with a noise trace, at the common eps and at tuned's own eps,
    B_simple at eps beside tuned's B_crit there (NOISE_VS_TUNED_COLUMNS; module docstring)."""
    tuned_own = ((critical.get("strategies") or {}).get(TUNED) or {}).get(metric)
    common = (critical.get("common") or {}).get(metric) or {}
    scopes = {"common": (common.get("threshold"), ((common.get("strategies") or {}).get(TUNED)))}
    if tuned_own is not None:
        scopes["tuned_own"] = (tuned_own.get("threshold"), tuned_own)
    fixed = [s for s in study.get("strategies", []) if s != TUNED and s in set(over["strategy"].astype(str))]
    rows = []
    for scope, (eps, entry) in scopes.items():
        if eps is None:
            continue
        runs = b_simple_at_eps(over, k_runs_from_cube(cube, {s: float(eps) for s in fixed}, metric))
        for strategy in fixed:
            row = comparison_row(runs, strategy, scope, float(eps), entry if tuned_own is not None else None)
            fit = (((common.get("strategies") or {}).get("blr") or {}).get("B_crit") or {}
                   if strategy == "blr" and scope == "common" else {})
            eta = float(study.get("eta0", math.nan)) if strategy == "blr" else math.nan
            row.update(fixed_rule_check(row, eta, eta_max_of(tuned_own), _number(fit),
                                        "" if fit.get("report") is None else str(fit["report"])))
            rows.append(row)
    return pd.DataFrame(rows, columns=list(NOISE_VS_TUNED_COLUMNS))


def study_noise_vs_tuned(cube, over: pd.DataFrame, critical: dict, study: dict,
                         metric: str = "train_loss") -> pd.DataFrame:
    """noise_vs_tuned.csv of a study: `noise_vs_tuned`, or its columns and no rows without a noise trace."""
    if over is None or over.empty:
        return pd.DataFrame(columns=list(NOISE_VS_TUNED_COLUMNS))
    return noise_vs_tuned(cube, over, critical, study, metric)


def noise_tuned_headlines(table: pd.DataFrame) -> list[dict]:
    """The rows of noise_vs_tuned.csv as summary.json entries (NaN as None by the caller's json_safe)."""
    if table is None or table.empty:
        return []
    out = []
    for row in table.to_dict("records"):
        entry = {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
        entry["tuned_B_crit_report"] = "" if entry.get("tuned_B_crit_report") is None else str(
            entry["tuned_B_crit_report"])
        out.append(entry)
    return out
