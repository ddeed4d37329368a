"""Loss against iterations per batch size, each strategy's threshold drawn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from batchscale.analysis.accessors import metric_values
from batchscale.analysis.trace_grids import diverged_ends, seed_mean_on_grid
from batchscale.report.figures.base import (
    STEP_LABEL,
    batch_colors,
    cube_strategies,
    eps_from_table,
    format_number,
    message_figure,
    metric_label,
    new_figure,
    rule_text,
    strategy_style,
    study_title,
    wrap_title,
)
from batchscale.report.figures.registry import FigureInputs, figure


def loss_curves_figure(cube, table: pd.DataFrame, metric: str = "train_loss", strategies=None,
                       study: str | None = None) -> Figure:
    """`metric` against iterations (log-log), one curve per batch size (seed mean, each run on its own
    evaluation points), one panel per strategy, the strategy's threshold from `table` (speedup.csv) as a
    dashed horizontal line."""
    strategies = [s for s in (strategies or cube_strategies(cube)) if s in cube_strategies(cube)]
    eps = eps_from_table(table, metric)
    rules = table.loc[table["metric"].astype(str) == metric, "threshold_rule"].astype(str)
    rule = rules.iloc[0] if len(rules) else None
    values = metric_values(cube, metric)
    steps = np.asarray(cube["step"].values, dtype=float)
    sizes = [int(b) for b in cube["batch_size"].values]
    colors = batch_colors(sizes)
    fig, axes = new_figure(len(strategies), 1, sharey=True, extra_width=1.4, extra_height=0.3)
    drawn_sizes, any_diverged = set(), False
    for ax, strategy in zip(axes[0], strategies):
        per = values.sel(strategy=strategy).transpose("batch_size", "seed", "step").values
        ends = {}
        for size, end in diverged_ends(cube, metric, strategy):
            ends.setdefault(int(size), []).append(end)
        for i, size in enumerate(sizes):
            own = np.isfinite(per[i]).any(axis=0) & (steps > 0)
            if not own.any():
                continue
            grid = steps[own]
            mean = seed_mean_on_grid(steps, per[i], grid)
            keep = np.isfinite(mean)
            ax.plot(grid[keep], mean[keep], color=colors[size], lw=1.6, label=f"m = {size}", gid=f"bs{size}")
            drawn_sizes.add(size)
            for end in ends.get(size, []):
                at = np.interp(math.log10(end), np.log10(grid[keep]), mean[keep]) if keep.any() else np.nan
                row = per[i][:, steps == end].ravel()
                value = np.nanmax(row) if np.isfinite(row).any() else at
                ax.plot([end], [value], "X", color=colors[size], markeredgecolor="black", markersize=9,
                        linestyle="none", zorder=5, gid="diverged")
                any_diverged = True
        e = eps.get(strategy, float("nan"))
        if np.isfinite(e) and e > 0:
            ax.axhline(e, color="black", linestyle="--", lw=1.3, zorder=4, gid="threshold",
                       label=f"\u03b5 = {format_number(e)}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(STEP_LABEL)
        ax.grid(True, which="major", color="0.9", lw=0.6)
        ax.set_title(f"{strategy_style(strategy)['label']}\n\u03b5 = {format_number(e)} (dashed)", fontsize=10)
    axes[0, 0].set_ylabel(metric_label(metric))
    handles = [Line2D([], [], color=colors[s], lw=2, label=f"{s}") for s in sizes if s in drawn_sizes]
    handles.append(Line2D([], [], color="black", linestyle="--", lw=1.3, label="threshold \u03b5"))
    if any_diverged:
        handles.append(Line2D([], [], marker="X", color="0.6", markeredgecolor="black", markersize=9,
                              linestyle="none", label="diverged (stopped)"))
    fig.legend(handles=handles, loc="outside right center", title="batch size m", fontsize=9, frameon=False)
    fig.suptitle(wrap_title(f"{study or study_title(cube)}: {metric_label(metric, False)} against iterations "
                            f"(mean over seeds)\nthreshold \u03b5 per strategy: {rule_text(rule, metric)}",
                            fig.get_figwidth()), fontsize=11)
    return fig


@figure("loss_curves")
def loss_curves(study: FigureInputs) -> Figure:
    """The train loss against iterations per batch size, each strategy's eps drawn."""
    if "train_loss" not in set(study.tables["speedup"]["metric"].astype(str)):
        return message_figure(study.title, "no train loss")
    return loss_curves_figure(study.cube, study.tables["speedup"], study=study.title)
