"""Noise-scale and local-critical-batch panels: `plot_*(ax, table)` functions that draw given numbers only.

Nothing is computed here: the tables come from the analysis files noise_over_training.csv and
noise_scale.csv (batchscale.analysis.noise) and local_critical_batch.csv (batchscale.analysis.branching).

- `noise_scale_figure(over, versus, study)`: figure ``noise_scale``, one panel per strategy, B_simple
  against examples seen (two-batch, solid, and exact where traced, in a second row) with the strategy's
  critical batch band across it.
- `local_critical_batch_figure(table, study)`: figure ``local_critical_batch``.

- `plot_noise_scale(ax, table, critical)`: B_simple over training, one line per run (strategy x batch size
  x seed) of `table` (columns strategy, batch_size, seed, the x column, b_simple; as
  `analysis.noise.b_simple_over_training`), coloured by batch size (viridis, ordered) and dashed by
  strategy; the measured critical batch of each row of `critical` (columns strategy, B_crit, B_crit_low,
  B_crit_high, B_crit_overhead; as `analysis.noise.critical_from_document`) as a horizontal line with its
  interval as a band, and the overhead-based critical batch as a dotted line. NaN values are not drawn.
- `plot_local_critical_batch(ax, table)`: the local critical batch against examples seen, from
  `analysis.branching.local_critical_table`: an interval bracket is an error bar from the lower bracket
  (the marker) to the upper one; ``at_least`` a ^ marker at the largest batch tried; ``below`` a v marker
  at the upper bracket (the local critical batch lies below it).
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from batchscale.report.figures.base import message_figure, new_figure, wrap_title
from batchscale.report.figures.registry import FigureInputs, figure

STRATEGY_DASHES = {"blr": "-", "lsr": "--", "srsr": "-.", "longer": ":"}
CRITICAL_COLOR = "#000000"
OVERHEAD_COLOR = "#D55E00"
BRACKET_COLOR = "#0072B2"
X_LABELS = {"step": "iterations (weight updates)", "examples_seen": "examples seen"}
# short enough for a panel's height (the formula B_simple = tr Σ / |G|² is in the figure's title)
Y_LABELS = {"b_simple": "B_simple, two-batch (examples)", "b_simple_exact": "B_simple, exact (examples)"}


def _batch_colors(sizes) -> dict:
    """Viridis over log2 of the batch sizes (ordered values, colour-blind safe)."""
    sizes = sorted({int(s) for s in sizes})
    cmap = matplotlib.colormaps["viridis"]
    if len(sizes) == 1:
        return {sizes[0]: cmap(0.0)}
    logs = np.log2(sizes)
    return {s: cmap(0.9 * (v - logs[0]) / (logs[-1] - logs[0])) for s, v in zip(sizes, logs)}


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value)


def plot_noise_scale(ax, table: pd.DataFrame, critical: pd.DataFrame | None = None, x: str = "step",
                     y: str = "b_simple"):
    """Draw B_simple over training and the measured critical batch (see the module docstring).

    `x` is the column of the abscissa (step or examples_seen); `y` the B_simple column (b_simple, from the
    two-batch estimates, or b_simple_exact).
    """
    colors = _batch_colors(table["batch_size"]) if len(table) else {}
    keys = [k for k in ("strategy", "batch_size", "seed") if k in table]
    labelled = set()
    for key, run in table.sort_values(keys + [x]).groupby(keys, sort=True):
        strategy, batch_size = run["strategy"].iloc[0], int(run["batch_size"].iloc[0])
        keep = np.isfinite(run[y].to_numpy(float))
        label = f"{strategy} m={batch_size}" if (strategy, batch_size) not in labelled else None
        labelled.add((strategy, batch_size))
        ax.plot(run[x].to_numpy(float)[keep], run[y].to_numpy(float)[keep], color=colors[batch_size],
                linestyle=STRATEGY_DASHES.get(strategy, "-"), linewidth=1.0, label=label,
                gid=f"{y} {strategy} {batch_size} {run['seed'].iloc[0] if 'seed' in run else ''}".strip())
    if critical is not None:
        for row in critical.itertuples(index=False):
            dash = STRATEGY_DASHES.get(row.strategy, "-")
            if _finite(row.B_crit_low) and _finite(row.B_crit_high):
                ax.axhspan(row.B_crit_low, row.B_crit_high, color=CRITICAL_COLOR, alpha=0.12, linewidth=0,
                           gid=f"B_crit interval {row.strategy}")
            if _finite(row.B_crit):
                ax.axhline(row.B_crit, color=CRITICAL_COLOR, linestyle=dash, linewidth=1.6,
                           label=f"B_crit ({row.strategy})", gid=f"B_crit {row.strategy}")
            if _finite(getattr(row, "B_crit_overhead", None)):
                ax.axhline(row.B_crit_overhead, color=OVERHEAD_COLOR, linestyle=":", linewidth=1.6,
                           label=f"overhead-based critical batch ({row.strategy})",
                           gid=f"B_crit_overhead {row.strategy}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel(Y_LABELS.get(y, y))
    return ax


def plot_local_critical_batch(ax, table: pd.DataFrame):
    """Draw the local critical batch against examples seen, with brackets (see the module docstring)."""
    x = table["checkpoint_examples"].to_numpy(float)
    lower = table["local_critical_batch"].to_numpy(float)
    upper = table["upper_bracket"].to_numpy(float)
    kind = table["bracket"].to_numpy(str)
    interval = kind == "interval"
    if interval.any():
        ax.errorbar(x[interval], lower[interval], yerr=[np.zeros(interval.sum()), upper[interval] - lower[interval]],
                    fmt="o", color=BRACKET_COLOR, capsize=3, label="local critical batch [lower, upper)",
                    gid="interval")
    at_least = kind == "at_least"
    if at_least.any():
        ax.plot(x[at_least], lower[at_least], "^", color=BRACKET_COLOR, linestyle="none",
                label="\u2265 largest batch tried", gid="at_least")
    below = kind == "below"
    if below.any():
        ax.plot(x[below], upper[below], "v", color=BRACKET_COLOR, linestyle="none",
                label="< second batch tried", gid="below")
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("examples seen by the base run at the checkpoint")
    ax.set_ylabel("local critical batch (examples per step)")
    return ax


def critical_rows(versus: pd.DataFrame | None, strategy: str) -> pd.DataFrame | None:
    """The strategy's measured critical batch (one row) from noise_scale.csv, which repeats it per batch size."""
    if versus is None or not len(versus):
        return None
    rows = versus[versus["strategy"].astype(str) == strategy]
    columns = ["strategy", "B_crit", "B_crit_low", "B_crit_high", "B_crit_overhead"]
    return rows[columns].head(1) if len(rows) else None


def noise_legend(over: pd.DataFrame, strategies: list) -> list:
    """One legend for the figure: batch sizes (colour), strategies (dash), the critical batch lines."""
    colors = _batch_colors(over["batch_size"])
    handles = [Line2D([], [], color=color, lw=1.5, label=f"m = {m}") for m, color in colors.items()]
    handles += [Line2D([], [], color="0.3", linestyle=STRATEGY_DASHES.get(s, "-"), label=s) for s in strategies]
    handles += [Line2D([], [], color=CRITICAL_COLOR, lw=1.6, label="B_crit of the strategy (band: its interval)"),
                Line2D([], [], color=OVERHEAD_COLOR, linestyle=":", lw=1.6, label="overhead-based critical batch")]
    return handles


def noise_scale_figure(over: pd.DataFrame | None, versus: pd.DataFrame | None, study: str = "study") -> Figure:
    """B_simple over training per strategy (a column each): two-batch estimate above, exact below when
    traced; one line per run, coloured by batch size, the critical batch band across each panel; y labels on
    the first column only, one legend for the figure."""
    if over is None or not len(over):
        return message_figure(study, "no noise scale traced (set noise_scale.enabled: true)")
    strategies = list(dict.fromkeys(over["strategy"].astype(str)))
    exact = bool(np.isfinite(over["b_simple_exact"].to_numpy(float)).any())
    fig, axes = new_figure(len(strategies), 2 if exact else 1, sharey=True, extra_height=0.6)
    for column, strategy in enumerate(strategies):
        runs = over[over["strategy"].astype(str) == strategy]
        critical = critical_rows(versus, strategy)
        for row, y in enumerate(["b_simple"] + (["b_simple_exact"] if exact else [])):
            ax = axes[row, column]
            plot_noise_scale(ax, runs, critical, x="examples_seen", y=y)
            ax.set_title(f"{strategy}: {'two-batch estimate' if y == 'b_simple' else 'exact (per-example)'}",
                         fontsize=9)
            if column:
                ax.set_ylabel("")
    handles = noise_legend(over, strategies)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(wrap_title(f"{study}\ngradient noise scale B_simple = tr \u03a3 / |G|\u00b2 over training, one "
                            "line per run", fig.get_figwidth(), 10), fontsize=10)
    return fig


def local_critical_batch_figure(table: pd.DataFrame | None, study: str = "study") -> Figure:
    """The local critical batch against examples seen, with brackets (local_critical_batch.csv)."""
    if table is None or not len(table):
        return message_figure(study, "no branching results")
    fig, axes = new_figure(1, 1)
    plot_local_critical_batch(axes[0, 0], table)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(wrap_title(f"{study}\nlocal critical batch by branching", fig.get_figwidth(), 9), fontsize=9)
    return fig


@figure("noise_scale")
def noise_scale(study: FigureInputs) -> Figure:
    """B_simple over training with each strategy's critical batch (noise_over_training.csv, noise_scale.csv)."""
    return noise_scale_figure(study.tables.get("noise_over_training"), study.tables.get("noise_scale"), study.title)
