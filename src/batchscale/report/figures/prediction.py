"""The prediction's validation figure, drawn from results/prediction_validation.csv (no measurement here):
predicted B_crit (B_simple from the short runs) against the measured tuned B_crit, log-log, one point per
study with both intervals as error bars, the line y = x and the band of a factor 2 around it. A prediction
that cannot be trusted is drawn hollow; a measured B_crit that is a bound (outside the measured batch sizes)
is drawn at the bound, with an arrow towards where it lies and its text in the legend, not at the fit's
extrapolated value and without the fit's interval.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from batchscale.analysis.accessors import report_bound
from batchscale.report.figures.base import MARKERS, OKABE_ITO, message_figure, new_figure, save_figure
from batchscale.report.figures.registry import FigureInputs, figure

NAME = "prediction_validation"


def _error(value: float, low: float, high: float) -> list[float]:
    """Asymmetric error-bar lengths (0 where a bound is missing)."""
    below = value - low if math.isfinite(low) else 0.0
    above = high - value if math.isfinite(high) else 0.0
    return [max(below, 0.0), max(above, 0.0)]


def _limits(table: pd.DataFrame) -> tuple[float, float]:
    values = pd.concat([table[c] for c in ("B_pred", "B_pred_low", "B_pred_high", "B_crit", "B_crit_low",
                                           "B_crit_high")]).to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return 1.0, 1000.0
    return float(values.min()) / 2.0, float(values.max()) * 2.0


def validation_figure(table: pd.DataFrame, title: str = "Predicted vs measured critical batch") -> Figure:
    """The figure of the validation table (columns of analysis.prediction_validation.VALIDATION_COLUMNS)."""
    bounds = table["B_crit_report"].map(report_bound)
    measured = np.isfinite(table["B_crit"].astype(float)) | bounds.notna()
    drawable = table[np.isfinite(table["B_pred"].astype(float)) & measured]
    if drawable.empty:
        return message_figure(title, "no study has both a prediction and a measured tuned B_crit")
    fig, axes = new_figure(1, 1, panel=(5.5, 5.0))
    ax = axes[0, 0]
    low, high = _limits(drawable)
    line = np.geomspace(low, high, 50)
    ax.fill_between(line, line / 2, line * 2, color="0.9", label="within a factor 2")
    ax.plot(line, line, color="black", lw=1, label="predicted = measured")
    for i, row in enumerate(drawable.itertuples(index=False)):
        colour, marker = OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]
        trusted = str(row.verdict) == "trusted"
        bound = report_bound(row.B_crit_report)
        label = f"{row.study} ({row.estimator}{'' if trusted else ', not trusted'}" \
                f"{', measured ' + str(row.B_crit_report) if bound is not None else ''})"
        x = row.B_crit if bound is None else bound[1]
        xerr = None if bound is not None else np.array([_error(row.B_crit, row.B_crit_low, row.B_crit_high)]).T
        ax.errorbar([x], [row.B_pred], xerr=xerr,
                    yerr=np.array([_error(row.B_pred, row.B_pred_low, row.B_pred_high)]).T,
                    marker=marker, color=colour, mfc=colour if trusted else "white", ms=8, capsize=3, lw=1.2,
                    ls="none", label=label)
        if bound is not None:  # the measured B_crit lies beyond the bound, in the arrow's direction
            direction, edge = bound
            ax.annotate("", xy=(edge * (2.0 if direction == ">" else 0.5), row.B_pred), xytext=(edge, row.B_pred),
                        arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.set_xlabel("measured B_crit of tuned (examples per step)")
    ax.set_ylabel("predicted B_crit = B_simple at ε (examples)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return fig


@figure(NAME)
def draw(study: FigureInputs) -> Figure:
    """Registry entry: `study.tables["prediction_validation"]` is the validation table."""
    return validation_figure(study.tables["prediction_validation"], study.title or NAME)


def draw_validation_figure(table: pd.DataFrame, out_dir, name: str = NAME) -> list:
    """Write the validation figure as `{name}.png` and `{name}.svg` into `out_dir`."""
    return save_figure(draw(FigureInputs({"prediction_validation": table}, {}, "")), out_dir, name)
