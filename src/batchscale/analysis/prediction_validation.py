"""The prediction validated against the grid: predicted B_crit (prediction.json) against the measured B_crit of
the tuned strategy at the same eps (critical_batch.json), one row per study (results/prediction_validation.csv).

Columns (units: examples per step for every B; CPU seconds for the cost):

======================  ===================================================================================
study                   the study
optimizer               its optimizer (sgd, adamw)
target_loss             eps the prediction read B_simple at (predict.target_threshold: the study's common eps
                        or tuned's own, unless predict.target_loss is set)
tuned_threshold         the eps at which the measured tuned B_crit was fitted (the same eps as the target)
estimator, quantity     how the prediction was read (exact or two_batch; B_simple)
B_pred, B_pred_low,     the prediction and its bootstrap interval
B_pred_high
verdict                 "trusted" or "cannot be trusted here: <reasons>"
B_crit, B_crit_low,     the measured tuned B_crit, its interval and the interval's kind; B_crit_report
B_crit_high,            is the analysis' text (``> 128`` when B_crit lies outside the measured range: a bound)
B_crit_interval_kind,
B_crit_report
ratio                   B_pred / B_crit (NaN when B_crit is a bound or not estimable)
ratio_low, ratio_high   B_pred_low / B_crit_high and B_pred_high / B_crit_low: both intervals at once
ratio_bound             where B_crit is a bound: what it says of the ratio (``< 0.42`` for B_crit > 128), else ""
within_2x               0.5 <= ratio <= 2; where B_crit is a bound, False if the bound excludes [0.5, 2], else empty
prediction_cpu_seconds  CPU seconds of the prediction runs
grid_cpu_seconds        CPU seconds of the study's grid runs
cost_fraction           their ratio
======================  ===================================================================================
"""

from __future__ import annotations

import math

import pandas as pd

from batchscale.analysis.accessors import report_bound
from batchscale.analysis.noise import critical_from_document
from batchscale.spec.strategies import TUNED

VALIDATION_COLUMNS = (
    "study", "optimizer", "target_loss", "tuned_threshold", "estimator", "quantity", "B_pred", "B_pred_low",
    "B_pred_high", "verdict", "B_crit", "B_crit_low", "B_crit_high", "B_crit_interval_kind", "B_crit_report",
    "ratio", "ratio_low", "ratio_high", "ratio_bound", "within_2x", "prediction_cpu_seconds", "grid_cpu_seconds",
    "cost_fraction",
)
WITHIN = (0.5, 2.0)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _divide(numerator: float, denominator: float) -> float:
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return float("nan")
    return numerator / denominator


def ratio_bound(predicted: float, report: str) -> tuple[str, bool | None]:
    """What a bound on B_crit says of the ratio B_pred / B_crit, and whether it settles `within_2x`.

    Args:
      predicted: B_pred.
      report: the analysis' text of B_crit (``> 128``: above the measured range; ``< 4``: below it).

    Returns:
      (text, within): ``< 0.416`` for B_crit > 128 (ratio below B_pred/128), ``> 2.5`` for B_crit < 4, "" when
      B_crit is no bound; within is False when the bound lies outside [0.5, 2] entirely, else None.
    """
    bound = report_bound(report)
    if bound is None or not math.isfinite(predicted):
        return "", None
    direction, edge = bound
    value = predicted / edge
    if direction == ">":  # B_crit above the range: the ratio below B_pred / edge
        return f"< {value:.3g}", (False if value < WITHIN[0] else None)
    return f"> {value:.3g}", (False if value > WITHIN[1] else None)


def validation_row(study_name: str, study: dict, prediction: dict, critical: dict, metric: str = "train_loss") -> dict:
    """One row of the validation table (VALIDATION_COLUMNS) from a study's prediction.json and
    critical_batch.json documents."""
    common = prediction.get("target_scope") == "common"
    if common:  # B_crit fitted at the study's common eps, where the prediction was read
        entry = (critical.get("common") or {}).get(metric) or {}
        critical = {"strategies": {name: {metric: {**fit, "threshold": entry.get("threshold")}}
                                   for name, fit in (entry.get("strategies") or {}).items()}}
    measured = critical_from_document(critical, metric)
    measured = measured[measured["strategy"] == TUNED]
    m = measured.iloc[0].to_dict() if len(measured) else {}
    b_crit = _number(m.get("B_crit"))
    report = str(m.get("B_crit_report") or "")
    bound = report_bound(report) is not None
    predicted = _number(prediction.get("B_pred"))
    ratio = float("nan") if bound else _divide(predicted, b_crit)
    bound_text, bound_within = ratio_bound(predicted, report)
    cost = prediction.get("cost") or {}
    tuned_eps = ((critical.get("strategies", {}).get(TUNED) or {}).get(metric) or {}).get("threshold")
    return {
        "study": study_name, "optimizer": study.get("optimizer", {}).get("name", "sgd"),
        "target_loss": _number(prediction.get("target_loss")), "tuned_threshold": _number(tuned_eps),
        "estimator": prediction.get("estimator"), "quantity": prediction.get("quantity"),
        "B_pred": predicted, "B_pred_low": _number(prediction.get("low")), "B_pred_high": _number(prediction.get("high")),
        "verdict": prediction.get("verdict"), "B_crit": b_crit, "B_crit_low": _number(m.get("B_crit_low")),
        "B_crit_high": _number(m.get("B_crit_high")), "B_crit_interval_kind": m.get("B_crit_interval_kind", "none"),
        "B_crit_report": report,
        "ratio": ratio,
        "ratio_low": float("nan") if bound else _divide(_number(prediction.get("low")), _number(m.get("B_crit_high"))),
        "ratio_high": float("nan") if bound else _divide(_number(prediction.get("high")), _number(m.get("B_crit_low"))),
        "ratio_bound": bound_text,
        "within_2x": (WITHIN[0] <= ratio <= WITHIN[1]) if math.isfinite(ratio) else bound_within,
        "prediction_cpu_seconds": _number(cost.get("prediction_cpu_seconds")),
        "grid_cpu_seconds": _number(cost.get("grid_cpu_seconds")),
        "cost_fraction": _number(cost.get("fraction_of_grid")),
    }


def validation_table(studies: dict, predictions: dict, criticals: dict) -> pd.DataFrame:
    """The validation table, one row per study of `predictions` (in `studies` order).

    Args:
      studies: {name: resolved study config}.
      predictions: {name: prediction.json document}.
      criticals: {name: critical_batch.json document}.
    """
    rows = [validation_row(name, studies[name], predictions[name], criticals[name])
            for name in studies if name in predictions and name in criticals]
    return pd.DataFrame(rows, columns=list(VALIDATION_COLUMNS))
