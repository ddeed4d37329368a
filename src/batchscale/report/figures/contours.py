"""Paper Figs. 1 and 5: loss contours over batch size and iterations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import patheffects, ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from batchscale.analysis.trace_grids import contour_grid, diverged_ends
from batchscale.report.figures.base import (
    STEP_LABEL,
    batch_axis,
    cube_strategies,
    eps_from_table,
    format_number,
    legend_columns,
    message_figure,
    metric_label,
    new_figure,
    rule_text,
    strategy_style,
    study_title,
    wrap_title,
)
from batchscale.report.figures.registry import FigureInputs, figure


def plot_k_markers(ax, rows: pd.DataFrame, top: float) -> bool:
    """The analysis's k(m) (speedup.csv's k_mean: the mean of each seed's k) as white dots on a contour
    panel; batch sizes whose k is infinite (some seed never reached eps) as triangles at the top.
    Returns whether any triangle was drawn."""
    rows = rows.sort_values("batch_size")
    m = rows["batch_size"].to_numpy(dtype=float)
    k = pd.to_numeric(rows["k_mean"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(k) & (k > 0)
    ax.plot(m[ok], k[ok], "o", color="white", markeredgecolor="black", markersize=6, zorder=6,
            linestyle="none", gid="k_table")
    never = np.isposinf(k)
    if never.any():
        ax.plot(m[never], np.full(never.sum(), top), "v", color="white", markeredgecolor="black", markersize=8,
                zorder=6, linestyle="none", clip_on=False, gid="k_not_reached")
    return bool(never.any())


def contour_levels(logz: dict) -> np.ndarray:
    """Shading levels of log10 loss shared by every panel: from the lowest value to a little above the
    highest early-training value (the first grid row), so the first steps do not take the whole scale."""
    finite = np.concatenate([v[np.isfinite(v)] for v in logz.values()])
    lo = float(finite.min())
    start = np.concatenate([v[0][np.isfinite(v[0])] for v in logz.values()])  # first grid row: early loss
    hi = float(finite.max())
    if start.size and np.isfinite(start.max()) and start.max() > lo:
        hi = min(hi, float(start.max()) + 0.05)
    if hi <= lo:
        hi = lo + 0.1
    levels = ticker.MaxNLocator(nbins=14, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    levels = levels[(levels >= lo - 1e-12) | (np.arange(levels.size) == 0)]
    if levels[0] > lo:
        levels = np.concatenate([[lo], levels])
    if levels[-1] < hi:
        levels = np.concatenate([levels, [hi]])
    return levels


def plot_contour_panel(ax, strategy: str, sizes, grid, logz: np.ndarray, levels, eps: float, rows: pd.DataFrame,
                       ends) -> tuple:
    """One strategy's panel: the shaded log10 loss, its eps level curve, the table's k(m) and diverged runs.

    Returns (the filled contour set or None, whether a never-reached triangle was drawn).
    """
    z = np.ma.masked_invalid(logz)
    filled = None
    if np.ma.count(z):
        filled = ax.contourf(sizes, grid, z, levels=levels, cmap="viridis_r", extend="max")
        filled.set_gid(f"contour-{strategy}")
    label = f"{strategy_style(strategy)['label']}\n\u03b5 = {format_number(eps)}"
    if np.isfinite(eps) and eps > 0 and np.ma.count(z) and z.min() <= math.log10(eps) <= z.max():
        line = ax.contour(sizes, grid, z, levels=[math.log10(eps)], colors="black", linewidths=2.0,
                          linestyles="solid")
        line.set(path_effects=[patheffects.withStroke(linewidth=4, foreground="white")])
        line.set_gid("threshold")
    else:
        label += " (level not in the seed mean)"
    never = plot_k_markers(ax, rows, grid.max()) if not rows.empty else False
    for size, end in ends:
        ax.plot([size], [end], marker="X", color="white", markeredgecolor="black", markersize=10,
                linestyle="none", zorder=5, gid="diverged")
    ax.set_title(label, fontsize=10)
    batch_axis(ax, sizes)
    ax.set_xlim(sizes.min(), sizes.max())
    ax.set_yscale("log")
    ax.set_ylim(grid.min(), grid.max())
    ax.set_facecolor("white")
    return filled, never


def contour_handles(never_any: bool, diverged_any: bool) -> list:
    """The legend of a contour figure."""
    handles = [Line2D([], [], color="black", lw=2, label="\u03b5 level curve of the seed-mean loss"),
               Line2D([], [], marker="o", color="white", markeredgecolor="black", linestyle="none",
                      label="k(m) from speedup.csv (mean of per-seed k)"),
               Patch(facecolor="white", edgecolor="0.6", label="blank: no run evaluated there (past its end)")]
    if never_any:
        handles.append(Line2D([], [], marker="v", color="white", markeredgecolor="black", linestyle="none",
                              label="k = \u221e: a seed never reached \u03b5 (the seed mean may)"))
    if diverged_any:
        handles.append(Line2D([], [], marker="X", color="white", markeredgecolor="black", markersize=9,
                              linestyle="none", label="diverged run (last point)"))
    return handles


def contour_figure(cube, metric: str, table: pd.DataFrame, strategies=None, study: str | None = None) -> Figure:
    """log10 of `metric` (seed mean) over batch size x iterations, one panel per strategy, with the level
    curve of each strategy's threshold and the k(m) of the table drawn on it.

    `table` is speedup.csv (each strategy's own eps and k_mean). The shading and the level curve are the
    seed-mean loss, while k_mean is the mean of each seed's k: the two differ where seeds differ (the level
    curve can reach a batch size at which one seed never reaches eps), and the figure says so.
    """
    strategies = [s for s in (strategies or cube_strategies(cube)) if s in cube_strategies(cube)]
    eps = eps_from_table(table, metric)
    rows_of = {s: table[(table["metric"].astype(str) == metric) & (table["strategy"].astype(str) == s)]
               for s in strategies}
    rules = table.loc[table["metric"].astype(str) == metric, "threshold_rule"].astype(str)
    rule = rules.iloc[0] if len(rules) else None
    grids = {s: contour_grid(cube, metric, s) for s in strategies}
    logz = {}
    for s, (_sizes, _grid, z) in grids.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            logz[s] = np.where(z > 0, np.log10(z), np.nan)
    name = metric_label(metric, with_unit=False)
    title = f"{study or study_title(cube)}: {name} over batch size and iterations (shading: mean over seeds)\n" \
            f"black line: the seed-mean {name} at \u03b5 = {rule_text(rule, metric)}; dots: k(m) of the tables " \
            "(mean of each seed's k)"
    if not any(np.isfinite(v).any() for v in logz.values()):
        return message_figure(title, f"no finite {name} values to draw")
    levels = contour_levels(logz)
    ends = {s: diverged_ends(cube, metric, s) for s in strategies}
    fig, axes = new_figure(len(strategies), 1, sharey=True, extra_width=0.9, extra_height=0.35)
    filled, never_any = None, False
    for ax, strategy in zip(axes[0], strategies):
        sizes, grid, _z = grids[strategy]
        panel, never = plot_contour_panel(ax, strategy, sizes, grid, logz[strategy], levels,
                                          eps.get(strategy, float("nan")), rows_of[strategy], ends[strategy])
        filled = panel if panel is not None else filled
        never_any = never_any or never
    axes[0, 0].set_ylabel(STEP_LABEL)
    if filled is not None:
        bar = fig.colorbar(filled, ax=list(axes[0]), shrink=0.95, pad=0.01)
        bar.set_label(f"log10 {metric_label(metric)}")
    handles = contour_handles(never_any, any(ends.values()))
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_columns(fig, handles), fontsize=9,
               frameon=False)
    fig.suptitle(wrap_title(title, fig.get_figwidth()), fontsize=11)
    return fig


def speedup_metrics(study: FigureInputs) -> set:
    """The metrics of the study's speedup.csv."""
    return set(study.tables["speedup"]["metric"].astype(str))


@figure("fig1_train_loss_contours")
def fig1_train_loss_contours(study: FigureInputs) -> Figure:
    """Paper Fig. 1: the train loss over batch size and iterations, every strategy."""
    if "train_loss" not in speedup_metrics(study):
        return message_figure(study.title, "no train loss")
    return contour_figure(study.cube, "train_loss", study.tables["speedup"], study=study.title)


@figure("fig5_test_loss_contours")
def fig5_test_loss_contours(study: FigureInputs) -> Figure:
    """Paper Fig. 5: the test loss over batch size and iterations, every strategy (the paper drew BLR and LSR)."""
    if "test_loss" not in study.cube or "test_loss" not in speedup_metrics(study):
        return message_figure(study.title, "the cube has no test_loss")
    return contour_figure(study.cube, "test_loss", study.tables["speedup"], study=study.title)
