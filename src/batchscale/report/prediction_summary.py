"""The summary's first section: the prediction of B_crit from short runs against the measured tuned B_crit,
rendered from results/prediction_validation.csv (read, never computed here)."""

from __future__ import annotations

import math

import pandas as pd

HEADER = ("## Predicted critical batch against the measured grid\n\n"
          "B_pred is B_simple = tr Σ/|G|² read from short runs at a small batch where their training loss crosses "
          "the target ε (the study's common ε unless the config says otherwise; the measured B_crit is fitted at "
          "the same ε); the measured B_crit is the tuned "
          "strategy's (learning rate re-tuned at every batch size). ratio = B_pred / B_crit, its range from both "
          "intervals (where B_crit is a bound, the bound it puts on the ratio). The CPU seconds of the prediction "
          "runs against the study's grid are in the validation table's CSV (timings: they differ from run to run, "
          "so this page, the same for the same config and code, leaves them out).\n\n"
          "| study | B_pred [interval] (estimator) | measured tuned B_crit [interval] | ratio [range] | within 2× "
          "| verdict |\n|---|---|---|---|---|---|\n")


def _fmt(value, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{value:.{digits}g}" if math.isfinite(value) else "n/a"


def _within(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "n/a"
    return "yes" if str(value).lower() in ("true", "1", "1.0") else "NO"


def _ratio(row: dict) -> str:
    """The ratio with its range, or what a bound on B_crit says of it (``< 0.42 (B_crit a bound)``)."""
    bound = row.get("ratio_bound")
    if _fmt(row["ratio"]) == "n/a" and isinstance(bound, str) and bound:
        return f"{bound} (B_crit a bound)"
    return f"{_fmt(row['ratio'], 2)} [{_fmt(row['ratio_low'], 2)}, {_fmt(row['ratio_high'], 2)}]"


def validation_line(row: dict) -> str:
    report = row["B_crit_report"] if isinstance(row["B_crit_report"], str) else ""
    measured = report if report.startswith(("<", ">")) else _fmt(row["B_crit"])  # a bound as the analysis wrote it
    return (f"| {row['study']} | {_fmt(row['B_pred'])} [{_fmt(row['B_pred_low'])}, {_fmt(row['B_pred_high'])}] "
            f"({row['estimator']}) | {measured} [{_fmt(row['B_crit_low'])}, {_fmt(row['B_crit_high'])}] "
            f"({row['B_crit_interval_kind']}) | {_ratio(row)} | {_within(row['within_2x'])} | {row['verdict']} |")


def validation_section(table: pd.DataFrame) -> str:
    """The section as markdown (a line saying there is nothing to validate when the table is empty)."""
    if table.empty:
        return HEADER.split("\n\n")[0] + "\n\nNo study both predicts and runs tuned: nothing to validate.\n"
    return HEADER + "\n".join(validation_line(row) for row in table.to_dict("records")) + "\n"


def lead_with(page: str, section: str) -> str:
    """The summary page with `section` right after its title line."""
    title, _, rest = page.partition("\n\n")
    return f"{title}\n\n{section}\n{rest}"
