"""Paper Figs. 3 and 4: speedup curves of several studies overlaid."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from batchscale.report.figures.base import (
    MARKERS,
    OKABE_ITO,
    format_number,
    marker_handles,
    message_figure,
    metric_label,
    new_figure,
    rule_text,
    strategy_style,
)
from batchscale.report.figures.speedup import (
    interval_kinds_text,
    plot_ideal,
    plot_speedup_curve,
    speedup_axes,
    speedup_limits,
)


def critical_text(rows: pd.DataFrame) -> str:
    """A curve's critical batch size as its legend says it: the value with its interval, or the bound."""
    if "b_crit_report" not in rows or not str(rows["b_crit_report"].iloc[0]) or \
            str(rows["b_crit_report"].iloc[0]) == "nan":
        return "B_crit not estimable"
    text = f"B_crit {rows['b_crit_report'].iloc[0]}"
    low, high = (pd.to_numeric(rows[c], errors="coerce").iloc[0] for c in ("b_crit_low", "b_crit_high"))
    inside = text.split()[1] not in ("<", ">")
    if inside and np.isfinite(low) and np.isfinite(high):
        text += f" [{format_number(low)}, {format_number(high)}]"
    if inside and not _fit_meaningful(rows):
        text += ", poor fit: not drawn"
    return text


def _fit_meaningful(rows: pd.DataFrame) -> bool:
    if "b_crit_fit_meaningful" not in rows:
        return True
    return str(rows["b_crit_fit_meaningful"].iloc[0]).lower() == "true"


def draw_critical_batch(ax, rows: pd.DataFrame, color) -> None:
    """A dotted line at the curve's B_crit and its interval shaded, where the fit puts it inside the range and
    describes k(m) (the study's own `fit_meaningful`, as its own figures decide)."""
    if "b_crit" not in rows:
        return
    b_crit = pd.to_numeric(rows["b_crit"], errors="coerce").iloc[0]
    report = str(rows["b_crit_report"].iloc[0])
    if not np.isfinite(b_crit) or report.startswith(("<", ">")) or not _fit_meaningful(rows):
        return
    ax.axvline(b_crit, color=color, linestyle=":", linewidth=1.2)
    low, high = (pd.to_numeric(rows[c], errors="coerce").iloc[0] for c in ("b_crit_low", "b_crit_high"))
    if np.isfinite(low) and np.isfinite(high):
        ax.axvspan(low, high, color=color, alpha=0.12, linewidth=0)


def comparison_figure(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Speedup curves of several studies (paper Figs. 3, 4) from the comparison table
    (`batchscale.analysis.comparison`): left, each study at its own eps (its own threshold rule); right, all
    at the common eps. Each legend label gives that curve's eps and critical batch size (with its interval, or
    the bound where it lies outside the measured range); a dotted line and shaded band mark it in range."""
    if table is None or table.empty:
        return message_figure(title or "comparison", "no studies to compare")
    strategy = str(table["strategy"].iloc[0])
    metric = str(table["metric"].iloc[0])
    fig, axes = new_figure(2, 1, panel=(6.0, 5.0), sharey=True, extra_height=0.4)
    labels = list(dict.fromkeys(table["label"].astype(str)))
    scopes = (("study", "each study at its own \u03b5 (its own rule)"), ("common", "all at the common \u03b5"))
    ylim = speedup_limits([table])
    sizes = sorted({int(b) for b in table["batch_size"]})
    flags = {}
    for ax, (scope, heading) in zip(axes[0], scopes):
        speedup_axes(ax, sizes, ylim)
        rows_scope = table[table["threshold_scope"].astype(str) == scope]
        for base in sorted({int(b) for b in rows_scope["base_batch"]}):
            plot_ideal(ax, sizes, base)
        for i, label in enumerate(labels):
            rows = rows_scope[rows_scope["label"].astype(str) == label]
            if rows.empty:
                continue
            eps = pd.to_numeric(rows["threshold"], errors="coerce").iloc[0]
            style = {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)],
                     "label": f"{label} (\u03b5 = {format_number(eps)}, {rule_text(rows['threshold_rule'].iloc[0], None)};\n"
                              f"{critical_text(rows)})" if scope == "study" else f"{label} ({critical_text(rows)})"}
            draw_critical_batch(ax, rows, style["color"])
            for key, value in plot_speedup_curve(ax, rows, style, ylim).items():
                flags[key] = flags.get(key, False) or value
        if scope == "common" and not rows_scope.empty:
            heading += f": \u03b5 = {format_number(pd.to_numeric(rows_scope['threshold']).iloc[0])}"
        ax.set_title(heading, fontsize=10)
        handles, _labels = ax.get_legend_handles_labels()
        # under the panel: a legend inside would hide the curves' large-batch ends, where they differ
        ax.legend(handles=handles + marker_handles(flags), loc="upper center", bbox_to_anchor=(0.5, -0.13),
                  fontsize=8, frameon=False)
    axes[0, 1].set_ylabel("")
    title = title or f"{strategy_style(strategy)['label']}: speedup to reach \u03b5 in {metric_label(metric, False)}"
    fig.suptitle(f"{title}\nbars: interval over seeds ({interval_kinds_text(table)})", fontsize=11)
    return fig
