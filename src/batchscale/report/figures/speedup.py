"""Paper Fig. 2 (left): speedup curves with regimes, per strategy and overlaid at the common threshold."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from batchscale.report.figures.base import (
    MIN_WIDTH,
    PANEL,
    REGIME_STYLES,
    batch_axis,
    batch_edges,
    format_number,
    legend_columns,
    marker_handles,
    message_figure,
    metric_label,
    new_figure,
    ordered_metrics,
    pow2_label,
    rule_text,
    strategy_style,
)
from batchscale.report.figures.registry import FigureInputs, figure


def shade_regimes(ax, sizes, regimes) -> None:
    edges = batch_edges(sizes)
    order = np.argsort(sizes)
    for rank, i in enumerate(order):
        style = REGIME_STYLES.get(str(regimes[i]))
        if style is not None:
            ax.axvspan(edges[rank], edges[rank + 1], color=style["color"], alpha=0.16, lw=0, zorder=0,
                       gid=f"regime-{regimes[i]}")


def speedup_limits(frames) -> tuple[float, float]:
    values = [1.0]
    for rows in frames:
        for column in ("speedup", "speedup_low", "speedup_high", "ideal_speedup"):
            v = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
            values.extend(v[np.isfinite(v) & (v > 0)].tolist())
    low, high = min(values), max(values)
    return 2.0 ** math.floor(math.log2(low / 1.6)), 2.0 ** math.ceil(math.log2(high * 1.3))


def speedup_axes(ax, sizes, ylim) -> None:
    batch_axis(ax, sizes)
    edges = batch_edges(sizes)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_yscale("log", base=2)
    ax.set_ylim(*ylim)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=2, numticks=9))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(pow2_label))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_ylabel("speedup k(m\u2080)/k(m) (\u00d7)")
    ax.grid(True, which="major", color="0.88", lw=0.6, zorder=0)


def plot_ideal(ax, sizes, base_batch, label: str | None = None) -> Line2D:
    """The ideal linear speedup m/m0 over the x range of `sizes`."""
    edges = batch_edges(sizes)
    x = np.array([edges[0], edges[-1]])
    (line,) = ax.plot(x, x / float(base_batch), linestyle="--", color="black", lw=1.2, zorder=2,
                      label=label or f"ideal: linear speedup m/m\u2080 (m\u2080 = {int(base_batch)})")
    line.set_gid("ideal")
    return line


def plot_speedup_curve(ax, rows: pd.DataFrame, style: dict, ylim, label: str | None = None,
                       note_base: bool = True) -> dict:
    """One speedup curve with interval bars; batch sizes that never reached eps (k = inf) or diverged are
    marked near the bottom, and (with `note_base`) a note says when the base batch itself never reached
    eps (no speedup is defined then). Returns {"not_reached": bool, "diverged": bool} (what was marked)."""
    rows = rows.sort_values("batch_size")
    m = rows["batch_size"].to_numpy(dtype=float)
    s = pd.to_numeric(rows["speedup"], errors="coerce").to_numpy(dtype=float)
    low = pd.to_numeric(rows["speedup_low"], errors="coerce").to_numpy(dtype=float)
    high = pd.to_numeric(rows["speedup_high"], errors="coerce").to_numpy(dtype=float)
    status = rows["status"].astype(str).to_numpy()
    regime = rows["regime"].astype(str).to_numpy()
    ok = np.isfinite(s) & (s > 0)
    y = s[ok]
    # an interval the analysis did not give (kind none, or an infinite mean) draws no bar, never a bar
    # down to the axis; an infinite upper bound reaches the top
    lo = np.minimum(np.where(np.isfinite(low[ok]) & (low[ok] > 0), low[ok], y), y)
    hi = np.maximum(np.where(np.isposinf(high[ok]), ylim[1], np.where(np.isfinite(high[ok]), high[ok], y)), y)
    container = ax.errorbar(m[ok], y, yerr=[y - lo, hi - y], color=style["color"], marker=style["marker"],
                            markersize=5.5, lw=1.8, elinewidth=1.0, capsize=3, zorder=3,
                            label=label or style["label"])
    container.lines[0].set_gid("speedup")
    diverged = status == "diverged"
    if (ok & diverged).any():
        ax.plot(m[ok & diverged], s[ok & diverged], "X", color="black", markersize=9, zorder=4,
                linestyle="none", gid="diverged")
    bottom = ylim[0] * 2 ** 0.35
    if "k_mean" in rows:
        k = pd.to_numeric(rows["k_mean"], errors="coerce").to_numpy(dtype=float)
        not_reached = np.isposinf(k)
    else:
        not_reached = ~ok & np.isin(status, ["not_reached", "diverged"])
    not_reached &= regime != "trivial"
    if (not_reached & ~diverged).any():
        ax.plot(m[not_reached & ~diverged], np.full((not_reached & ~diverged).sum(), bottom), "v",
                color=style["color"], markeredgecolor="black", markersize=8, zorder=4, linestyle="none",
                clip_on=False, gid="not_reached")
    if (not_reached & diverged).any():
        ax.plot(m[not_reached & diverged], np.full((not_reached & diverged).sum(), bottom), "X",
                color=style["color"], markeredgecolor="black", markersize=9, zorder=4, linestyle="none",
                clip_on=False, gid="diverged")
    base = float(rows["base_batch"].iloc[0]) if "base_batch" in rows and len(rows) else float("nan")
    at_base = m == base
    if note_base and at_base.any() and (not np.isfinite(s[at_base][0]) or not_reached[at_base][0]):
        ax.text(0.03, 0.97, f"m\u2080 = {base:g} never reached \u03b5:\nno speedup defined", transform=ax.transAxes,
                ha="left", va="top", fontsize=8, bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9})
    return {"not_reached": bool((not_reached & ~diverged).any()), "diverged": bool(diverged.any())}


def interval_kinds_text(*frames) -> str:
    """The interval kinds of the speedup bars, as one text (``student_t``, ``percentile_bootstrap`` ...)."""
    kinds = sorted({str(k) for f in frames if f is not None and "speedup_interval_kind" in f
                    for k in f["speedup_interval_kind"].dropna()} - {"none"})
    return ", ".join(k.replace("_", " ") for k in kinds) if kinds else "none (one seed)"


def plot_overlay_panel(ax, frames: dict, common, metric: str, strategies, sizes, ylim, base: int, flags: dict):
    """The last panel of a metric's row: every strategy at the metric's common eps (`common`,
    speedup_common.csv), or without it each at its own eps (`frames`), saying that this is not like for
    like. Updates `flags` with what was marked."""
    overlaid = frames
    title = f"all strategies\n{metric_label(metric, False)} (own \u03b5 each: not like for like)"
    if common is not None:
        overlaid = {s: common[(common["metric"] == metric) & (common["strategy"].astype(str) == s)]
                    for s in strategies}
        eps_common = [pd.to_numeric(f["threshold"], errors="coerce").iloc[0] for f in overlaid.values()
                      if not f.empty]
        if eps_common:
            title = f"all strategies at the common \u03b5\n{metric_label(metric, False)}: " \
                    f"\u03b5 = {format_number(eps_common[0])} (common)"
        ylim_overlay = speedup_limits(list(frames.values()) + list(overlaid.values()))
    else:
        ylim_overlay = ylim
    speedup_axes(ax, sizes, ylim_overlay)
    plot_ideal(ax, sizes, base)
    for c, strategy in enumerate(strategies):
        if not overlaid[strategy].empty:
            for key, value in plot_speedup_curve(ax, overlaid[strategy], strategy_style(strategy, c),
                                                 ylim_overlay, note_base=False).items():
                flags[key] = flags.get(key, False) or value
    ax.set_title(title, fontsize=10)


def speedup_handles(strategies, base: int, regimes_seen: set, flags: dict) -> list:
    """The legend of a speedup figure: the ideal line, the strategies, the regimes shown and the markers."""
    handles = [Line2D([], [], linestyle="--", color="black", lw=1.2,
                      label=f"ideal linear speedup m/m\u2080 (m\u2080 = {base})")]
    handles += [Line2D([], [], color=strategy_style(s, i)["color"], marker=strategy_style(s, i)["marker"],
                       label=strategy_style(s, i)["label"]) for i, s in enumerate(strategies)]
    handles += [Patch(facecolor=REGIME_STYLES[k]["color"], alpha=0.3, label=REGIME_STYLES[k]["label"])
                for k in REGIME_STYLES if k in regimes_seen]
    return handles + marker_handles(flags)


def speedup_figure(table: pd.DataFrame, common: pd.DataFrame | None = None, metrics=None, strategies=None,
                   study: str = "study", overlay: bool = True) -> Figure:
    """Speedup curves from the analysis tables (columns of `batchscale.analysis.curves.SPEEDUP_COLUMNS`).

    One row of panels per metric (default: every metric of the table, train loss first), one panel per
    strategy at its own eps (`table`, speedup.csv) with its regimes shaded, and (with `overlay` and more
    than one strategy) a last panel with all strategies at the metric's common eps (`common`,
    speedup_common.csv); without `common` the overlay says that each curve has its own eps.
    """
    metrics = ordered_metrics(table, metrics)
    all_strategies = list(dict.fromkeys(table["strategy"].astype(str)))
    strategies = [s for s in (strategies or all_strategies) if s in all_strategies]
    if not metrics or not strategies:
        return message_figure(f"{study}: speedup", "the speedup table has no rows to draw")
    ncols = len(strategies) + (1 if overlay and len(strategies) > 1 else 0)
    width = max(PANEL[0], MIN_WIDTH / ncols)
    fig, axes = new_figure(ncols, len(metrics), panel=(width, PANEL[1]), extra_height=0.9)
    flags, regimes_seen = {}, set()
    base = int(table["base_batch"].iloc[0])
    rules = []
    for r, metric in enumerate(metrics):
        frames = {s: table[(table["metric"] == metric) & (table["strategy"].astype(str) == s)] for s in strategies}
        ylim = speedup_limits(frames.values())
        sizes = sorted({int(b) for f in frames.values() for b in f["batch_size"]})
        for c, strategy in enumerate(strategies):
            ax, rows = axes[r, c], frames[strategy]
            style = strategy_style(strategy, c)
            speedup_axes(ax, sizes, ylim)
            if rows.empty:
                ax.set_title(f"{style['label']}: no rows", fontsize=10)
                continue
            shade_regimes(ax, rows["batch_size"].to_numpy(dtype=float), rows["regime"].astype(str).to_numpy())
            regimes_seen.update(rows["regime"].astype(str))
            plot_ideal(ax, sizes, int(rows["base_batch"].iloc[0]))
            for key, value in plot_speedup_curve(ax, rows, style, ylim).items():
                flags[key] = flags.get(key, False) or value
            eps = pd.to_numeric(rows["threshold"], errors="coerce").iloc[0]
            target = f"\u03b5 = {format_number(eps)}" if np.isfinite(eps) else "targets as given"
            ax.set_title(f"{style['label']}\n{metric_label(metric, False)}: {target}", fontsize=10)
            rules.append(str(rows["threshold_rule"].iloc[0]))
        if ncols > len(strategies):
            plot_overlay_panel(axes[r, -1], frames, common, metric, strategies, sizes, ylim, base, flags)
        for c in range(1, ncols):  # axis labels on the outer panels only
            axes[r, c].set_ylabel("")
        if r < len(metrics) - 1:
            for c in range(ncols):
                axes[r, c].set_xlabel("")
    handles = speedup_handles(strategies, base, regimes_seen, flags)
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_columns(fig, handles), fontsize=9,
               frameon=False)
    rule = rules[0] if rules and len(set(rules)) == 1 else None
    what = rule_text(rule, None) if rule else "per metric"
    fig.suptitle(f"{study}\nspeedup s(m) = k(m\u2080)/k(m) to reach \u03b5 (bars: interval over seeds, "
                 f"{interval_kinds_text(table, common)})\nthreshold \u03b5 per strategy: {what}", fontsize=11)
    return fig


@figure("fig2_speedup")
def fig2_speedup(study: FigureInputs) -> Figure:
    """Paper Fig. 2 (left): each strategy's speedup at its own eps, and all of them at the common eps."""
    return speedup_figure(study.tables["speedup"], study.tables.get("speedup_common"), study=study.title)
