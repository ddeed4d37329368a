"""The least-squares theory check drawn beside the measurement (figure ``theory_lsr_breakdown``).

Left: k(m) to reach the train-loss threshold, measured (mean over seeds with the analysis's interval) and
predicted by the expected-loss recursion (read on the evaluation grid, as the measurement is). Middle:
measured / predicted k with a ±3% band. Right: the stability edge at the resolution of the study's batch
sizes: the fraction of seeds that diverged per m against gradient descent's limit (the rate reaches 2/λ₁)
and the recursion's mean-square edge. Draws theory.json and speedup_common.csv with the numbers
`batchscale.analysis.least_squares.theory_figure_numbers` derives from them (ratios, agreement, the edge
window); nothing is computed here. The command that draws it is ``batchscale theory-figure``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from batchscale.analysis.headline import HEADLINE_METRIC
from batchscale.analysis.least_squares import theory_figure_numbers
from batchscale.report.figures.base import (
    batch_axis,
    batch_ticks,
    count_axis,
    legend_columns,
    new_figure,
    strategy_style,
    wrap_title,
)

RATIO_LIMITS = (0.8, 1.2)  # the middle panel's range; ratios beyond it are drawn at its edge with their value
BAND = 0.03
GD_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.2}
MEAN_SQUARE_STYLE = {"color": "#CC79A7", "linestyle": ":", "linewidth": 2.0}


def plot_theory_k(ax, rows: pd.DataFrame, eps: float, edges: dict | None = None) -> None:
    """Measured k (markers, interval bars) and the recursion's k on the evaluation grid (line) per strategy;
    a batch size where some seed never reached eps as a triangle at the top; the stability edges as lines."""
    for i, (strategy, part) in enumerate(rows.groupby("strategy", sort=False)):
        style = strategy_style(strategy, i)
        m = part["batch_size"].to_numpy(float)
        predicted = part["predicted_k_on_grid"].to_numpy(float)
        ok = np.isfinite(predicted)
        ax.plot(m[ok], predicted[ok], "-", color=style["color"], lw=1.6, alpha=0.8, gid=f"predicted {strategy}",
                label=f"{style['label']}: recursion" if ok.any() else None)
        k = part["measured_k"].to_numpy(float)
        low, high = part["measured_low"].to_numpy(float), part["measured_high"].to_numpy(float)
        done = np.isfinite(k)
        err = np.vstack([k[done] - np.where(np.isfinite(low[done]), low[done], k[done]),
                         np.where(np.isfinite(high[done]), high[done], k[done]) - k[done]])
        bars = ax.errorbar(m[done], k[done], yerr=err, fmt=style["marker"], color=style["color"], markersize=5,
                           capsize=2.5, linestyle="none",
                           label=f"{style['label']}: measured (mean, {part['interval_kind'].iloc[0].replace('_', ' ')})")
        bars.lines[0].set_gid(f"measured {strategy}")
        if (~done).any():
            ax.plot(m[~done], np.full(int((~done).sum()), 0.97 - 0.05 * i), "v", color=style["color"], markeredgecolor="black",
                    linestyle="none", transform=ax.get_xaxis_transform(), clip_on=False, gid=f"not reached {strategy}")
    for edge in (edges or {}).values():
        if edge.get("gradient_descent") is not None:
            ax.axvline(edge["gradient_descent"], **dict(GD_STYLE, linewidth=0.8))
        if edge.get("mean_square") is not None:
            ax.axvline(edge["mean_square"], **dict(MEAN_SQUARE_STYLE, linewidth=1.2))
    batch_axis(ax, rows["batch_size"])
    count_axis(ax, axis="y")
    ax.set_ylabel("steps k(m) to the threshold")
    ax.set_title(f"k(m) at \u03b5 = {eps:.3g} (train loss)", fontsize=10)
    ax.grid(True, color="0.9", lw=0.6)


def plot_theory_ratio(ax, rows: pd.DataFrame, agreement: dict) -> None:
    """Measured / predicted k per strategy with a ±3% band; ratios beyond RATIO_LIMITS at the edge, labelled."""
    low, high = RATIO_LIMITS
    ax.axhspan(1 - BAND, 1 + BAND, color="0.85", lw=0, label=f"\u00b1{BAND:.0%}", gid="band")
    ax.axhline(1.0, color="0.4", lw=1)
    for i, (strategy, part) in enumerate(rows.groupby("strategy", sort=False)):
        style = strategy_style(strategy, i)
        m, ratio = part["batch_size"].to_numpy(float), part["ratio"].to_numpy(float)
        ok = np.isfinite(ratio)
        found = agreement.get(strategy)
        label = (f"{style['label']}: within {found['max_deviation']:.1%} up to m = {found['up_to']}"
                 if found else None)
        ax.plot(m[ok], np.clip(ratio[ok], low, high), style["marker"] + "-", color=style["color"], markersize=5,
                lw=1, label=label, gid=f"ratio {strategy}")
        for x, r in zip(m[ok], ratio[ok]):
            if not low <= r <= high:
                ax.annotate(f"\u00d7{r:.2g}", (x, min(max(r, low), high)), textcoords="offset points",
                            xytext=(0, -11 if r > high else 6), ha="center", fontsize=7, color=style["color"])
    batch_axis(ax, rows["batch_size"])
    ax.set_ylim(low - 0.02, high + 0.02)
    ax.set_ylabel("measured k / predicted k")
    ax.set_title("measured / predicted", fontsize=10)
    ax.grid(True, color="0.9", lw=0.6)


def plot_stability_edge(ax, rows: pd.DataFrame, edges: dict, window, lambda_max: float) -> None:
    """Fraction of seeds diverged per batch size in the edge window, with the predicted edges as lines."""
    if window is None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no strategy's rate reaches 2/\u03bb\u2081\nwithin the study's batch sizes", ha="center",
                va="center", fontsize=9, transform=ax.transAxes)
        return
    lo, hi = window
    for i, (strategy, part) in enumerate(rows.groupby("strategy", sort=False)):
        if strategy not in edges:
            continue
        style = strategy_style(strategy, i)
        part = part[(part["batch_size"] >= lo) & (part["batch_size"] <= hi)]
        ax.plot(part["batch_size"], part["diverged_fraction"], style["marker"] + "-", color=style["color"],
                markersize=6, label=f"{style['label']}: seeds diverged", gid=f"diverged {strategy}")
        for row in part.itertuples(index=False):
            ax.annotate(f"{row.n_diverged}/{row.n_seeds}", (row.batch_size, row.diverged_fraction),
                        textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
        gd, ms = edges[strategy].get("gradient_descent"), edges[strategy].get("mean_square")
        if gd is not None:
            ax.axvline(gd, **GD_STYLE, label=f"\u03b7(m) = 2/\u03bb\u2081 (gradient descent): m = {gd:.1f}", gid="gd edge")
        if ms is not None:
            ax.axvline(ms, **MEAN_SQUARE_STYLE, label=f"recursion turns mean-square unstable: m = {ms:.1f}",
                       gid="mean-square edge")
    sizes = sorted(int(m) for m in rows["batch_size"].unique() if lo <= m <= hi)
    ax.set_xlim(lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))
    labelled = batch_ticks(sizes, log=False)
    ax.set_xticks(labelled)
    ax.set_xticks([m for m in sizes if m not in labelled], minor=True)
    ax.set_ylim(-0.05, 1.15)
    ax.set_xlabel("batch size m (linear axis)")
    ax.set_ylabel("fraction of seeds diverged")
    ax.set_title(f"stability edge (\u03bb\u2081 = {lambda_max:.4g})", fontsize=10)
    ax.grid(True, color="0.9", lw=0.6)


def theory_figure(theory: dict, common: pd.DataFrame, metric: str = HEADLINE_METRIC) -> Figure:
    """The three panels from theory.json and speedup_common.csv."""
    numbers = theory_figure_numbers(theory, common, metric)
    fig, axes = new_figure(ncols=3, extra_width=0.4, extra_height=0.6)
    left, middle, right = axes[0]
    rows = numbers["rows"]
    plot_theory_k(left, rows, numbers["threshold"], numbers["edges"])
    plot_theory_ratio(middle, rows, numbers["agreement"])
    plot_stability_edge(right, rows, numbers["edges"], numbers["window"], numbers["lambda_max"])
    prediction = numbers["prediction"]
    if prediction.get("available", False):
        how = ("predicted: the expected loss of plain SGD by the second-moment recursion (analysis.theory), from the "
               "seeds' initial weights, on the traced training subset, read on the evaluation grid as the "
               "measurement is")
    else:
        how = f"no prediction of k: {prediction.get('note') or 'theory.json has none (an older theory command)'}"
    handles, labels = [], []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if (~np.isfinite(rows["measured_k"].to_numpy(float))).any():
        handles.append(Line2D([], [], marker="v", color="0.6", markeredgecolor="black", linestyle="none"))
        labels.append("measured k = \u221e: some seed never reached \u03b5 (diverged or too slow)")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, legend_columns(fig, handles)), fontsize=8,
               frameon=False)
    fig.suptitle(wrap_title(f"least-squares theory against the measurement\n{how}", fig.get_figwidth(), 10),
                 fontsize=10)
    return fig
