"""B_crit across a family of thresholds (figure ``critical_vs_threshold``), drawn from
critical_vs_threshold.csv (the analysis: one row per strategy, metric and quantile q of the source batch's
loss, with the threshold eps it gives, the fitted B_crit with its interval and its kind, the bound the fit
reports when B_crit falls outside the measured sizes, the fit's log-RMSE and whether it was accepted, and
the overhead-based critical batch with its interval).

One panel per metric: critical batch against eps, both on log axes; per strategy (its colour) the fitted
B_crit (filled circles and a solid line where the fit was accepted, hollow circles and no line where it was
rejected: drawn so they can be seen, not read as a result), a bound as a triangle at the bound's batch size
pointing the way it goes (^ for "> m", v for "< m"), and the overhead-based critical batch (diamonds, dotted
line); bars are the table's intervals. Grey lines mark the smallest and largest batch size the study ran.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from batchscale.report.figures.base import (
    count_axis,
    legend_columns,
    message_figure,
    metric_label,
    new_figure,
    strategy_style,
    wrap_title,
)
from batchscale.report.figures.registry import FigureInputs, figure

TABLE = "critical_vs_threshold"
BOUND = re.compile(r"^\s*(>=|<=|>|<|\u2265|\u2264)\s*([0-9.eE+-]+)\s*$")


def truthy(values: pd.Series) -> np.ndarray:
    """A CSV column of booleans (True/False, 1/0, text) as a bool array; missing values are False."""
    return values.astype(str).str.strip().str.lower().isin(("true", "1", "yes")).to_numpy()


def bound_of(text) -> tuple[str, float] | None:
    """("above" | "below", batch size) of a bound text such as "> 128" or "< 4"; None for no bound."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    found = BOUND.match(str(text))
    if not found:
        return None
    return ("above" if found.group(1) in (">", ">=", "\u2265") else "below"), float(found.group(2))


def error_bars(values, low, high) -> np.ndarray:
    """Asymmetric bar lengths from (low, high) columns; 0 where an end is missing, or where the estimate lies
    outside its interval on that side (a Student-t interval of per-seed fits need not contain the fit of the
    seed means; the bar then reaches the far end only)."""
    values, low, high = (np.asarray(a, dtype=float) for a in (values, low, high))
    below = np.where(np.isfinite(low), values - low, 0.0)
    above = np.where(np.isfinite(high), high - values, 0.0)
    return np.clip(np.vstack([below, above]), 0.0, None)


def plot_critical_vs_threshold(ax, rows: pd.DataFrame, index: int = 0) -> None:
    """One strategy's rows of one metric: fitted B_crit (accepted / rejected), bounds and the overhead-based
    critical batch, against eps."""
    strategy = str(rows["strategy"].iloc[0])
    style = strategy_style(strategy, index)
    rows = rows.sort_values("threshold")
    eps = rows["threshold"].to_numpy(float)
    b_crit = pd.to_numeric(rows["b_crit"], errors="coerce").to_numpy(float)
    accepted = truthy(rows["accepted"])
    bounds = [bound_of(t) for t in rows["bound"]]
    fitted = np.isfinite(b_crit) & np.array([b is None for b in bounds])
    bars = error_bars(b_crit, pd.to_numeric(rows["low"], errors="coerce"), pd.to_numeric(rows["high"], errors="coerce"))
    good = fitted & accepted
    ax.plot(eps[good], b_crit[good], "-", color=style["color"], lw=1.4, gid=f"accepted {strategy}")
    ax.errorbar(eps[good], b_crit[good], yerr=bars[:, good], fmt="o", color=style["color"], capsize=2.5,
                markersize=5, linestyle="none")
    bad = fitted & ~accepted
    ax.errorbar(eps[bad], b_crit[bad], yerr=bars[:, bad], fmt="o", color=style["color"], mfc="white", capsize=2.5,
                markersize=5, linestyle="none", alpha=0.8, elinewidth=0.8)
    ax.plot(eps[bad], b_crit[bad], "o", mfc="white", color=style["color"], linestyle="none", gid=f"rejected {strategy}")
    for x, bound in zip(eps, bounds):
        if bound is not None:
            ax.plot([x], [bound[1]], "^" if bound[0] == "above" else "v", color=style["color"], markersize=8,
                    markeredgecolor="black", linestyle="none", gid=f"bound {strategy}")
    over = pd.to_numeric(rows["overhead_critical_batch"], errors="coerce").to_numpy(float)
    ok = np.isfinite(over)
    bars = error_bars(over, pd.to_numeric(rows["overhead_low"], errors="coerce"),
                      pd.to_numeric(rows["overhead_high"], errors="coerce"))
    ax.plot(eps[ok], over[ok], ":", color=style["color"], lw=1.4, gid=f"overhead {strategy}")
    ax.errorbar(eps[ok], over[ok], yerr=bars[:, ok], fmt="D", color=style["color"], capsize=2, markersize=4,
                linestyle="none", alpha=0.9)


def critical_panel(ax, rows: pd.DataFrame, strategies: list, sizes) -> None:
    """Every strategy's rows of one metric, with the measured range of batch sizes."""
    for size in (min(sizes), max(sizes)) if sizes else ():
        ax.axhline(size, color="0.6", lw=0.8, linestyle="-", zorder=0)
    for strategy in strategies:
        part = rows[rows["strategy"].astype(str) == strategy]
        if len(part):
            plot_critical_vs_threshold(ax, part, strategies.index(strategy))
    count_axis(ax, axis="x")  # log, compact ticks (0.05, 0.1, 0.2), a narrow range widened
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.set_xlabel("threshold \u03b5 (log scale)")
    ax.set_ylabel("critical batch size (examples per step)")
    ax.grid(True, color="0.9", lw=0.6, which="both")


def legend_handles(strategies: list) -> list:
    handles = [Line2D([], [], color=strategy_style(s, i)["color"], marker="o", label=strategy_style(s, i)["label"])
               for i, s in enumerate(strategies)]
    grey = "0.35"
    return handles + [
        Line2D([], [], color=grey, marker="o", linestyle="-", label="B_crit of an accepted fit (bars: its interval)"),
        Line2D([], [], color=grey, marker="o", mfc="white", linestyle="none",
               label="B_crit of a rejected fit (goodness of fit below the cut-off)"),
        Line2D([], [], color=grey, marker="^", markeredgecolor="black", linestyle="none",
               label="bound: B_crit outside the measured sizes (^ above, v below)"),
        Line2D([], [], color=grey, marker="D", linestyle=":", label="overhead-based critical batch (bars: interval)"),
        Line2D([], [], color="0.6", lw=0.8, label="smallest and largest batch size run"),
    ]


def critical_vs_threshold_figure(table: pd.DataFrame | None, sizes=(), study: str = "study") -> Figure:
    """The figure from critical_vs_threshold.csv (module docstring); a message when the table is absent."""
    title = f"{study}: critical batch size across a family of thresholds"
    if table is None:
        return message_figure(title, "critical_vs_threshold.csv is absent: this study's analysis did not write B_crit "
                                     "across a family of \u03b5 (an analysis older than that table)")
    if not len(table):
        return message_figure(title, "critical_vs_threshold.csv has no rows: no \u03b5 of the family was reached")
    metrics = list(dict.fromkeys(table["metric"].astype(str)))
    strategies = list(dict.fromkeys(table["strategy"].astype(str)))
    fig, axes = new_figure(len(metrics), 1, sharey=True, extra_width=0.4, extra_height=0.5)
    for ax, metric in zip(axes[0], metrics):
        rows = table[table["metric"].astype(str) == metric]
        critical_panel(ax, rows, strategies, list(sizes))
        kinds = ", ".join(sorted({str(k).replace("_", " ") for k in rows["interval_kind"].dropna()})) or "none"
        ax.set_title(f"{metric_label(metric, with_unit=False)} (intervals: {kinds})", fontsize=10)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    handles = legend_handles(strategies)
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_columns(fig, handles), fontsize=8,
               frameon=False)
    quantiles = ", ".join(f"{q:g}" for q in sorted(pd.to_numeric(table["quantile"], errors="coerce").dropna().unique()))
    fig.suptitle(wrap_title(f"{title}\n\u03b5 = quantile q of the source batch's loss, q = {quantiles or 'n/a'}",
                            fig.get_figwidth()), fontsize=11)
    return fig


@figure("critical_vs_threshold")
def critical_vs_threshold(study: FigureInputs) -> Figure:
    """B_crit and the overhead-based critical batch against eps (critical_vs_threshold.csv)."""
    sizes = study.config.get("batch_sizes", ())
    return critical_vs_threshold_figure(study.tables.get(TABLE), sizes if isinstance(sizes, (list, tuple)) else (),
                                        study.title)
