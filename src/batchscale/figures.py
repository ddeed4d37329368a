"""Figures of a batch-size study (Golmant et al. 2018, Figs. 1-5) and of comparisons between studies.

Study figures, written by `draw_study_figures` as ``{name}.png`` and ``{name}.svg`` (names in
`STUDY_FIGURES`):

- ``fig1_train_loss_contours``: log10 of the train loss (mean over seeds) over batch size (x, log2) and
  iterations (y, log), one panel per strategy, with the level curve of each strategy's threshold eps.
- ``fig5_test_loss_contours``: the same for the test loss, BLR and LSR side by side (those of the two the
  study has; otherwise its first strategy).
- ``fig2_speedup``: speedup s(m) = k(m0)/k(m) per strategy (one row per metric of speedup.csv), with the
  ideal line m/m0, the regimes shaded, the bootstrap interval as bars, and markers for batch sizes that never
  reached eps or diverged; the last column overlays every strategy (paper Fig. 2 left).
- ``fig2_accuracy_linear_error``: final test accuracy and linear approximation error of LSR (else the first
  strategy) against batch size (paper Fig. 2 right).
- ``steps_vs_examples``: steps S = k(m) against examples E = m*S, per strategy, with the fitted hyperbola
  (S/S_min - 1)(E/E_min - 1) = 1 and B_crit = E_min/S_min marked (McCandlish et al. 2018).
- ``loss_curves``: train loss against iterations for every batch size, one panel per strategy, eps drawn.

`draw_comparison` overlays the speedup curves of several studies (paper Figs. 3 and 4) and
`draw_external_figures` draws the speedup and steps-vs-examples figures of `batchscale analyze`.

Every figure is a `matplotlib.figure.Figure` on the Agg canvas, built without pyplot (no global state,
nothing to leak) by a small function that returns it, so tests can inspect its artists. Output is
deterministic: fixed styles, no dates in the files, a fixed SVG id salt. Colours are colour-blind safe
(Okabe-Ito for categories, viridis for ordered values).

Cube points are NaN past a run's end and at the final steps of other runs (the cube's step axis is the union
of every run's evaluation points). Curves and contours therefore use, per run, only that run's own finite
points, interpolated in log-log onto the common step grid between its first and last point; outside that
range a run contributes nothing, and the mean over seeds is left blank wherever a seed with data is blank.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import patheffects, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from batchscale.analysis import measurements as ms
from batchscale.analysis import tables

STUDY_FIGURES = (
    "fig1_train_loss_contours",
    "fig5_test_loss_contours",
    "fig2_speedup",
    "fig2_accuracy_linear_error",
    "steps_vs_examples",
    "loss_curves",
)

# Okabe & Ito (2008), colour-blind safe.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "h", "*")
STRATEGY_STYLES = {
    "blr": {"color": "#0072B2", "marker": "o", "label": "BLR (same LR for every m)"},
    "lsr": {"color": "#D55E00", "marker": "s", "label": "LSR (LR \u221d m, warm-up)"},
    "srsr": {"color": "#009E73", "marker": "^", "label": "SRSR (LR \u221d \u221am)"},
    "longer": {"color": "#CC79A7", "marker": "D", "label": "longer (m/m0 \u00d7 epochs)"},
}
REGIME_STYLES = {
    "linear": {"color": "#009E73", "label": "linear regime (efficiency \u2265 cut-off)"},
    "diminishing": {"color": "#E69F00", "label": "diminishing returns"},
    "stagnation": {"color": "#CC79A7", "label": "stagnation"},
    "not_reached": {"color": "#999999", "label": "threshold not reached"},
}
METRICS = {
    "train_loss": ("train loss", "nats"),
    "test_loss": ("test loss", "nats"),
    "test_error": ("test error", "fraction"),
    "loss": ("loss", "as in the CSV"),
    "steps": ("steps to target", "given"),
}
BATCH_LABEL = "batch size m (examples per step)"
STEP_LABEL = "iterations (weight updates)"
PANEL = (4.2, 3.4)  # inches per panel
MIN_WIDTH = 8.5  # inches: room for the titles and figure legends of one-panel figures
DPI = 150
SVG_SALT = "batchscale"


# --------------------------------------------------------------------------------------------
# Styles and small helpers


def strategy_style(strategy: str, index: int = 0) -> dict:
    """Colour, marker and legend label of a strategy (fixed for the known ones, a cycle otherwise)."""
    if strategy in STRATEGY_STYLES:
        return dict(STRATEGY_STYLES[strategy])
    return {"color": OKABE_ITO[(index + 4) % len(OKABE_ITO)], "marker": MARKERS[index % len(MARKERS)],
            "label": str(strategy)}


def metric_label(metric: str, with_unit: bool = True) -> str:
    name, unit = METRICS.get(metric, (metric.replace("_", " "), ""))
    return f"{name} ({unit})" if with_unit and unit else name


def rule_text(rule, metric: str | None = "train_loss") -> str:
    """Human text of a threshold rule, e.g. ``lower quartile of the largest batch's train loss``
    (``... largest batch's values`` for `metric` None)."""
    if rule is None or (isinstance(rule, float) and math.isnan(rule)):
        return "threshold rule unknown"
    if rule == "given":
        return "steps to target given in the CSV"
    try:
        parsed = ms.parse_threshold_rule(rule)
    except ValueError:
        return str(rule)
    name = metric_label(metric, with_unit=False) if metric else "values"
    if parsed["kind"] == "fixed":
        return f"fixed at {parsed['value']:g}"
    if parsed["value"] == 0.25:
        return f"lower quartile of the largest batch's {name}"
    return f"{parsed['value']:g} quantile of the largest batch's {name}"


def _fmt(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "\u221e" if value is not None and value > 0 else "n/a"
    if 1e3 <= abs(value) < 1e5:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _pow2_label(value: float, _pos=None) -> str:
    if value <= 0:
        return ""
    if value >= 1:
        return f"{value:g}"
    return f"1/{1 / value:g}"


def new_figure(ncols: int = 1, nrows: int = 1, panel=PANEL, sharey=False, sharex=False, extra_width=0.0,
               extra_height=0.0):
    """A constrained-layout Figure on the Agg canvas and its 2-D array of axes."""
    fig = Figure(figsize=(panel[0] * ncols + extra_width, panel[1] * nrows + extra_height), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)
    return fig, axes


def batch_axis(ax, sizes, axis: str = "x") -> None:
    """Log2 batch-size axis with a tick at every measured batch size."""
    sizes = sorted({int(s) for s in sizes})
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    step = 1 if len(sizes) <= 10 else 2
    target.set_major_locator(ticker.FixedLocator(sizes[::step]))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
    target.set_minor_locator(ticker.NullLocator())
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(BATCH_LABEL)


def _compact(value: float, _pos=None) -> str:
    """Tick text for counts: 300, 2k, 45k, 1.2M."""
    if value <= 0:
        return ""
    if value < 1e3:
        return f"{value:g}"
    if value < 1e6:
        return f"{value / 1e3:g}k"
    return f"{value / 1e6:g}M"


def count_axis(ax, axis: str = "x") -> None:
    """Log10 axis for counts (steps, examples), ticks written compactly (300, 2k, 1.2M): at 1, 2, 5 x 10^k
    over up to 1.5 decades, 1 and 3 x 10^k up to 3, powers of ten beyond. Call after plotting."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    low, high = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3 else (1.0,)
    target.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    target.set_major_formatter(ticker.FuncFormatter(_compact))
    target.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10) * 1.0, numticks=12))
    target.set_minor_formatter(ticker.NullFormatter())


def _legend_columns(fig: Figure, handles) -> int:
    """Columns for a figure legend under the panels: about 3 inches per entry, at most 4."""
    return max(1, min(4, len(handles), int(fig.get_figwidth() // 3.0)))


def _batch_edges(sizes) -> np.ndarray:
    """Geometric midpoints between neighbouring batch sizes (and half a step beyond the ends)."""
    m = np.asarray(sorted(sizes), dtype=float)
    if m.size == 1:
        return np.array([m[0] / math.sqrt(2), m[0] * math.sqrt(2)])
    mids = np.sqrt(m[:-1] * m[1:])
    return np.concatenate([[m[0] ** 2 / mids[0]], mids, [m[-1] ** 2 / mids[-1]]])


def save_figure(fig: Figure, out_dir, name: str, close: bool = True) -> list[Path]:
    """Write ``{name}.png`` and ``{name}.svg`` into `out_dir` (deterministic bytes); returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "path"}):
        fig.savefig(paths[0], dpi=DPI, metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    if close:
        fig.clear()
    return paths


def message_figure(title: str, message: str) -> Figure:
    """A figure that only says why there is nothing to draw (keeps the workflow's outputs complete)."""
    fig, axes = new_figure(1, 1, panel=(6.0, 2.5))
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    fig.suptitle(title)
    return fig


def _study_title(cube=None, study_config: dict | None = None, name: str | None = None) -> str:
    if name is None and cube is not None:
        name = str(getattr(cube, "attrs", {}).get("study", "")) or None
    name = name or "study"
    description = (study_config or {}).get("description")
    return f"{name} ({description})" if description else name


def _cube_strategies(cube) -> list[str]:
    return [str(s) for s in cube["strategy"].values]


def _eps_dict(thresholds) -> dict:
    """Accept {strategy: eps} or study_thresholds' {strategy: (eps, source)}."""
    return {str(k): float(v[0] if isinstance(v, (tuple, list)) else v) for k, v in (thresholds or {}).items()}


# --------------------------------------------------------------------------------------------
# Traces on a common grid


def run_on_grid(steps, values, grid) -> np.ndarray:
    """One run's finite, positive points interpolated linearly in (log step, log value) onto `grid`.

    NaN outside the run's own first..last finite point (never extrapolated) and where the run has none.
    Step 0 is left out (no place on a log axis).
    """
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    grid = np.asarray(grid, dtype=float)
    out = np.full(grid.shape, np.nan)
    keep = np.isfinite(values) & np.isfinite(steps) & (steps > 0) & (values > 0)
    if not keep.any():
        return out
    order = np.argsort(steps[keep], kind="stable")
    s, v = steps[keep][order], values[keep][order]
    inside = (grid >= s[0]) & (grid <= s[-1])
    out[inside] = 10.0 ** np.interp(np.log10(grid[inside]), np.log10(s), np.log10(v))
    return out


def seed_mean_on_grid(steps, per_seed, grid) -> np.ndarray:
    """Mean over seeds of `run_on_grid` (per_seed: seed x step). Seeds without any finite point (missing
    runs) are ignored; elsewhere the mean is NaN as soon as one seed with data has no value there."""
    per_seed = np.atleast_2d(np.asarray(per_seed, dtype=float))
    runs = [run_on_grid(steps, row, grid) for row in per_seed if np.isfinite(row).any()]
    if not runs:
        return np.full(np.shape(grid), np.nan)
    return np.mean(np.vstack(runs), axis=0)


def _positive_steps(cube) -> np.ndarray:
    steps = np.asarray(cube["step"].values, dtype=float)
    return steps[steps > 0]


def contour_grid(cube, metric: str, strategy: str):
    """(batch sizes, step grid, Z) with Z[step, batch] = seed-mean `metric` of `strategy` on the grid."""
    values = tables.metric_values(cube, metric).sel(strategy=strategy).transpose("batch_size", "seed", "step")
    steps = np.asarray(cube["step"].values, dtype=float)
    grid = _positive_steps(cube)
    sizes = np.asarray(cube["batch_size"].values, dtype=float)
    z = np.column_stack([seed_mean_on_grid(steps, values.values[i], grid) for i in range(sizes.size)])
    return sizes, grid, z


def _diverged_ends(cube, metric: str, strategy: str) -> list[tuple[float, float]]:
    """(batch size, last finite step) of every diverged run of `strategy`."""
    if "status" not in cube:
        return []
    status = tables.run_status(cube).sel(strategy=strategy).transpose("batch_size", "seed").values
    values = tables.metric_values(cube, metric).sel(strategy=strategy).transpose("batch_size", "seed", "step")
    steps = np.asarray(cube["step"].values, dtype=float)
    ends = []
    for i, size in enumerate(np.asarray(cube["batch_size"].values, dtype=float)):
        for j in range(status.shape[1]):
            if str(status[i, j]) == "diverged":
                finite = np.isfinite(values.values[i, j]) & (steps > 0)
                if finite.any():
                    ends.append((float(size), float(steps[finite].max())))
    return ends


# --------------------------------------------------------------------------------------------
# Figure 1 / 5: loss contours


def contour_figure(cube, metric: str = "train_loss", thresholds=None, strategies=None, study: str | None = None,
                   rule=None) -> Figure:
    """log10 of `metric` (seed mean) over batch size x iterations, one panel per strategy, with the level
    curve of each strategy's threshold (`thresholds`: {strategy: eps} or study_thresholds' output; None
    computes it with `rule`, default the paper's lower quartile of the largest batch)."""
    strategies = [s for s in (strategies or _cube_strategies(cube)) if s in _cube_strategies(cube)]
    rule = rule if rule is not None else ms.LOWER_QUARTILE
    eps = _eps_dict(thresholds if thresholds is not None else tables.study_thresholds(cube, metric, rule))
    grids = {s: contour_grid(cube, metric, s) for s in strategies}
    logz = {}
    for s, (_sizes, _grid, z) in grids.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            logz[s] = np.where(z > 0, np.log10(z), np.nan)
    finite = np.concatenate([v[np.isfinite(v)] for v in logz.values()]) if logz else np.array([])
    name = metric_label(metric, with_unit=False)
    title = f"{study or _study_title(cube)}: {name} over batch size and iterations (mean over seeds)\n" \
            f"black line: threshold \u03b5 = {rule_text(rule, metric)}"
    if finite.size == 0:
        return message_figure(title, f"no finite {name} values to draw")
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
    fig, axes = new_figure(len(strategies), 1, sharey=True, extra_width=0.9, extra_height=0.35)
    filled = None
    for ax, strategy in zip(axes[0], strategies):
        sizes, grid, _z = grids[strategy]
        z = np.ma.masked_invalid(logz[strategy])
        if np.ma.count(z):
            filled = ax.contourf(sizes, grid, z, levels=levels, cmap="viridis_r", extend="max")
            filled.set_gid(f"contour-{strategy}")
        e = eps.get(strategy, float("nan"))
        label = f"{strategy_style(strategy)['label']}\n\u03b5 = {_fmt(e)}"
        if np.isfinite(e) and e > 0 and np.ma.count(z) and z.min() <= math.log10(e) <= z.max():
            line = ax.contour(sizes, grid, z, levels=[math.log10(e)], colors="black", linewidths=2.0,
                              linestyles="solid")
            line.set(path_effects=[patheffects.withStroke(linewidth=4, foreground="white")])
            line.set_gid("threshold")
        else:
            label += " (level not in the seed mean)"
        for size, end in _diverged_ends(cube, metric, strategy):
            ax.plot([size], [end], marker="X", color="white", markeredgecolor="black", markersize=10,
                    linestyle="none", zorder=5, gid="diverged")
        ax.set_title(label, fontsize=10)
        batch_axis(ax, sizes)
        ax.set_xlim(sizes.min(), sizes.max())
        ax.set_yscale("log")
        ax.set_ylim(grid.min(), grid.max())
        ax.set_facecolor("white")
    axes[0, 0].set_ylabel(STEP_LABEL)
    if filled is not None:
        bar = fig.colorbar(filled, ax=list(axes[0]), shrink=0.95, pad=0.01)
        bar.set_label(f"log10 {metric_label(metric)}")
    handles = [Line2D([], [], color="black", lw=2, label="threshold \u03b5 level curve (k(m; \u03b5))"),
               Patch(facecolor="white", edgecolor="0.6", label="blank: no run evaluated there (past its end)")]
    if any(_diverged_ends(cube, metric, s) for s in strategies):
        handles.append(Line2D([], [], marker="X", color="white", markeredgecolor="black", markersize=9,
                              linestyle="none", label="diverged run (last point)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(fig, handles), fontsize=9,
               frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# Figure 2 (left), 3, 4: speedup curves


def _shade_regimes(ax, sizes, regimes) -> None:
    edges = _batch_edges(sizes)
    order = np.argsort(sizes)
    for rank, i in enumerate(order):
        style = REGIME_STYLES.get(str(regimes[i]))
        if style is not None:
            ax.axvspan(edges[rank], edges[rank + 1], color=style["color"], alpha=0.16, lw=0, zorder=0,
                       gid=f"regime-{regimes[i]}")


def _speedup_limits(frames) -> tuple[float, float]:
    values = [1.0]
    for rows in frames:
        for column in ("speedup", "speedup_low", "speedup_high", "ideal_speedup"):
            v = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
            values.extend(v[np.isfinite(v) & (v > 0)].tolist())
    low, high = min(values), max(values)
    return 2.0 ** math.floor(math.log2(low / 1.6)), 2.0 ** math.ceil(math.log2(high * 1.3))


def _speedup_axes(ax, sizes, ylim) -> None:
    batch_axis(ax, sizes)
    edges = _batch_edges(sizes)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_yscale("log", base=2)
    ax.set_ylim(*ylim)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=2, numticks=9))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_pow2_label))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_ylabel("speedup k(m\u2080)/k(m) (\u00d7)")
    ax.grid(True, which="major", color="0.88", lw=0.6, zorder=0)


def draw_ideal(ax, sizes, base_batch, label: str | None = None) -> Line2D:
    """The ideal linear speedup m/m0 over the x range of `sizes`."""
    edges = _batch_edges(sizes)
    x = np.array([edges[0], edges[-1]])
    (line,) = ax.plot(x, x / float(base_batch), linestyle="--", color="black", lw=1.2, zorder=2,
                      label=label or f"ideal: linear speedup m/m\u2080 (m\u2080 = {int(base_batch)})")
    line.set_gid("ideal")
    return line


def draw_speedup_curve(ax, rows: pd.DataFrame, style: dict, ylim, label: str | None = None,
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
    lo = np.minimum(np.where(np.isfinite(low[ok]) & (low[ok] > 0), low[ok], ylim[0]), y)
    hi = np.maximum(np.where(np.isfinite(high[ok]), high[ok], ylim[1]), y)
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
        not_reached = np.isposinf(k) | ((~ok) & (s == 0))
    else:
        not_reached = (~ok) & (s == 0)
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


def _marker_handles(flags: dict) -> list:
    handles = []
    if flags.get("not_reached"):
        handles.append(Line2D([], [], marker="v", color="0.6", markeredgecolor="black", markersize=8,
                              linestyle="none", label="never reached \u03b5 (k = \u221e)"))
    if flags.get("diverged"):
        handles.append(Line2D([], [], marker="X", color="0.6", markeredgecolor="black", markersize=9,
                              linestyle="none", label="a seed diverged"))
    return handles


def _ordered_metrics(table: pd.DataFrame, metrics=None) -> list[str]:
    present = list(dict.fromkeys(table["metric"].astype(str)))
    if metrics is not None:
        return [m for m in metrics if m in present]
    known = [m for m in ("train_loss", "test_loss", "test_error") if m in present]
    return known + [m for m in present if m not in known]


def speedup_figure(table: pd.DataFrame, metrics=None, strategies=None, study: str = "study",
                   overlay: bool = True) -> Figure:
    """Speedup curves from a speedup table (columns of `tables.SPEEDUP_COLUMNS`).

    One row of panels per metric (default: every metric of the table, train loss first), one panel per
    strategy with its regimes shaded, and (with `overlay` and more than one strategy) a last panel with all
    strategies together. Panel titles give each curve's eps; the suptitle names the study and the rule.
    """
    metrics = _ordered_metrics(table, metrics)
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
        ylim = _speedup_limits(frames.values())
        sizes = sorted({int(b) for f in frames.values() for b in f["batch_size"]})
        for c, strategy in enumerate(strategies):
            ax, rows = axes[r, c], frames[strategy]
            style = strategy_style(strategy, c)
            _speedup_axes(ax, sizes, ylim)
            if rows.empty:
                ax.set_title(f"{style['label']}: no rows", fontsize=10)
                continue
            _shade_regimes(ax, rows["batch_size"].to_numpy(dtype=float), rows["regime"].astype(str).to_numpy())
            regimes_seen.update(rows["regime"].astype(str))
            draw_ideal(ax, sizes, int(rows["base_batch"].iloc[0]))
            for key, value in draw_speedup_curve(ax, rows, style, ylim).items():
                flags[key] = flags.get(key, False) or value
            eps = pd.to_numeric(rows["threshold"], errors="coerce").iloc[0]
            target = f"\u03b5 = {_fmt(eps)}" if np.isfinite(eps) else "targets as given"
            ax.set_title(f"{style['label']}\n{metric_label(metric, False)}: {target}", fontsize=10)
            rules.append(str(rows["threshold_rule"].iloc[0]))
        if ncols > len(strategies):
            ax = axes[r, -1]
            _speedup_axes(ax, sizes, ylim)
            draw_ideal(ax, sizes, base)
            for c, strategy in enumerate(strategies):
                if not frames[strategy].empty:
                    draw_speedup_curve(ax, frames[strategy], strategy_style(strategy, c), ylim, note_base=False)
            ax.set_title(f"all strategies\n{metric_label(metric, False)} (own \u03b5 each)", fontsize=10)
        for c in range(1, ncols):  # axis labels on the outer panels only
            axes[r, c].set_ylabel("")
        if r < len(metrics) - 1:
            for c in range(ncols):
                axes[r, c].set_xlabel("")
    handles = [Line2D([], [], linestyle="--", color="black", lw=1.2,
                      label=f"ideal linear speedup m/m\u2080 (m\u2080 = {base})")]
    handles += [Line2D([], [], color=strategy_style(s, i)["color"], marker=strategy_style(s, i)["marker"],
                       label=strategy_style(s, i)["label"]) for i, s in enumerate(strategies)]
    handles += [Patch(facecolor=REGIME_STYLES[k]["color"], alpha=0.3, label=REGIME_STYLES[k]["label"])
                for k in REGIME_STYLES if k in regimes_seen]
    handles += _marker_handles(flags)
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(fig, handles), fontsize=9,
               frameon=False)
    rule = rules[0] if rules and len(set(rules)) == 1 else None
    what = rule_text(rule, None) if rule else "per metric"
    fig.suptitle(f"{study}\nspeedup s(m) = k(m\u2080)/k(m) to reach \u03b5 (bars: bootstrap interval over seeds)\n"
                 f"threshold \u03b5 per strategy: {what}", fontsize=11)
    return fig


def comparison_figure(curves: dict, metric: str = "train_loss", strategy: str = "blr",
                      title: str | None = None) -> Figure:
    """Overlay of speedup curves, one per study (paper Figs. 3, 4).

    `curves` maps a legend label to the speedup rows of one study (one strategy and metric). Each label is
    followed by that study's eps; the ideal line is drawn for every distinct base batch size.
    """
    if not curves:
        return message_figure(title or "comparison", "no studies to compare")
    fig, axes = new_figure(1, 1, panel=(7.0, 5.0))
    ax = axes[0, 0]
    frames = list(curves.values())
    ylim = _speedup_limits(frames)
    sizes = sorted({int(b) for f in frames for b in f["batch_size"]})
    _speedup_axes(ax, sizes, ylim)
    for base in sorted({int(f["base_batch"].iloc[0]) for f in frames if not f.empty}):
        draw_ideal(ax, sizes, base)
    flags = {}
    for i, (label, rows) in enumerate(curves.items()):
        style = {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)]}
        eps = pd.to_numeric(rows["threshold"], errors="coerce").iloc[0] if not rows.empty else float("nan")
        style["label"] = f"{label} (\u03b5 = {_fmt(eps)})"
        if rows.empty:
            continue
        for key, value in draw_speedup_curve(ax, rows, style, ylim).items():
            flags[key] = flags.get(key, False) or value
    handles, _labels = ax.get_legend_handles_labels()
    ax.legend(handles=handles + _marker_handles(flags), loc="upper left", fontsize=9)
    title = title or f"{strategy_style(strategy)['label']}: speedup to reach \u03b5 in {metric_label(metric, False)}"
    fig.suptitle(f"{title}\nthreshold \u03b5 per study: {rule_text(ms.LOWER_QUARTILE, metric)} (the paper's rule)",
                 fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# Figure 2 (right): accuracy and linear approximation error


def _per_run(cube, name: str, strategy: str) -> np.ndarray:
    return np.asarray(cube[name].sel(strategy=strategy).transpose("batch_size", "seed").values, dtype=float)


def _final_acc(cube, strategy: str) -> np.ndarray:
    if "final_test_acc" in cube:
        return _per_run(cube, "final_test_acc", strategy)
    acc = cube["test_acc"].sel(strategy=strategy).ffill("step").isel(step=-1)
    return np.asarray(acc.transpose("batch_size", "seed").values, dtype=float)


def accuracy_error_figure(cube, strategy: str | None = None, study: str | None = None) -> Figure:
    """Final test accuracy (left axis, %) and linear approximation error (right axis, log) against batch
    size for one strategy (default LSR, else the first), seed means with every seed as a dot."""
    strategies = _cube_strategies(cube)
    strategy = strategy or ("lsr" if "lsr" in strategies else strategies[0])
    title = f"{study or _study_title(cube)}: {strategy_style(strategy)['label']}\n" \
            "final test accuracy and linear approximation error at the final weights"
    if "test_acc" not in cube and "final_test_acc" not in cube:
        return message_figure(title, "the cube has no test accuracy")
    sizes = np.asarray(cube["batch_size"].values, dtype=float)
    status = tables.run_status(cube).sel(strategy=strategy).transpose("batch_size", "seed").values.astype(str)
    present = status != "missing"
    acc = np.where(present, _final_acc(cube, strategy) * 100.0, np.nan)
    fig, axes = new_figure(1, 1, panel=(7.0, 5.0))
    ax = axes[0, 0]
    acc_color, err_color = "#0072B2", "#D55E00"
    with np.errstate(invalid="ignore"):
        acc_mean = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in acc])
    for j in range(acc.shape[1]):
        ax.plot(sizes, acc[:, j], "o", color=acc_color, alpha=0.35, markersize=4, linestyle="none", zorder=2)
    keep = np.isfinite(acc_mean)
    ax.plot(sizes[keep], acc_mean[keep], "-o", color=acc_color, lw=2, markersize=6, zorder=3,
            label="final test accuracy (mean; dots: seeds)", gid="accuracy")
    diverged = status == "diverged"
    if diverged.any():
        rows, cols = np.nonzero(diverged)
        y = np.where(np.isfinite(acc[rows, cols]), acc[rows, cols], np.nanmin(acc) if np.isfinite(acc).any() else 0)
        ax.plot(sizes[rows], y, "X", color="black", markersize=10, linestyle="none", zorder=5,
                label="diverged run", gid="diverged")
    batch_axis(ax, sizes)
    ax.set_xlim(_batch_edges(sizes)[0], _batch_edges(sizes)[-1])
    ax.set_ylabel("final test accuracy (%)", color=acc_color)
    ax.tick_params(axis="y", colors=acc_color)
    ax.grid(True, color="0.9", lw=0.6)
    right = ax.twinx()
    if "final_linear_approx_error" in cube:
        err = np.where(present, _per_run(cube, "final_linear_approx_error", strategy), np.nan)
        err = np.where(err > 0, err, np.nan)
        for j in range(err.shape[1]):
            right.plot(sizes, err[:, j], "s", color=err_color, alpha=0.35, markersize=4, linestyle="none")
        with np.errstate(invalid="ignore"):
            err_mean = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in err])
        ok = np.isfinite(err_mean)
        right.plot(sizes[ok], err_mean[ok], "--s", color=err_color, lw=2, markersize=6,
                   label="linear approximation error (mean; squares: seeds)", gid="linear_error")
        right.axhline(1.0, color=err_color, lw=0.8, linestyle=":", label="error = 1")
    right.set_yscale("log")
    right.set_ylabel("linear approximation error |L(w) \u2212 L\u0302(w)| (nats)", color=err_color)
    right.tick_params(axis="y", colors=err_color)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = right.get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    ax.set_title(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# Steps vs examples (McCandlish et al. 2018)


def fits_from_critical(document: dict, metric: str) -> dict:
    """{strategy: {S_min, E_min, B_crit, B_crit_low, B_crit_high}} from a critical_batch.json document
    (None entries become NaN; B_crit None with S_min 0 is an infinite B_crit)."""
    fits = {}
    for strategy, per_metric in (document or {}).get("strategies", {}).items():
        entry = per_metric.get(metric)
        if not entry:
            continue
        value = {}
        for name in ("S_min", "E_min", "B_crit"):
            part = entry.get(name) or {}
            value[name] = float("nan") if part.get("estimate") is None else float(part["estimate"])
            if name == "B_crit":
                value["B_crit_low"] = float("nan") if part.get("low") is None else float(part["low"])
                value["B_crit_high"] = float("inf") if part.get("high") is None else float(part["high"])
        if math.isnan(value["B_crit"]) and value["S_min"] == 0 and value["E_min"] > 0:
            value["B_crit"] = float("inf")
        fits[str(strategy)] = value
    return fits


def steps_examples_figure(table: pd.DataFrame, fits: dict | None = None, metric: str = "train_loss",
                          strategies=None, study: str = "study") -> Figure:
    """S = k(m) against E = m k(m), one panel per strategy, with the fitted hyperbola
    (S/S_min - 1)(E/E_min - 1) = 1, its asymptotes and B_crit = E_min/S_min marked at (2 E_min, 2 S_min).

    `fits` {strategy: {S_min, E_min, B_crit[, B_crit_low, B_crit_high]}}; None fits each strategy's k_mean
    with `measurements.fit_critical_batch` (the point estimate of critical_batch.json).
    """
    rows_all = table[table["metric"].astype(str) == metric]
    all_strategies = list(dict.fromkeys(rows_all["strategy"].astype(str)))
    strategies = [s for s in (strategies or all_strategies) if s in all_strategies]
    goal = "the given targets" if metric == "steps" else f"\u03b5 in {metric_label(metric, False)}"
    title = f"{study}\nsteps S = k(m) vs examples E = m\u00b7S to reach {goal}\n" \
            "fit (S/S_min \u2212 1)(E/E_min \u2212 1) = 1, B_crit = E_min/S_min"
    if not strategies:
        return message_figure(title, f"no rows for metric {metric}")
    width = max(PANEL[0], MIN_WIDTH / len(strategies))
    fig, axes = new_figure(len(strategies), 1, panel=(width, PANEL[1]), extra_height=1.5)
    flags = {"fit": False, "bcrit": False}
    for c, strategy in enumerate(strategies):
        ax = axes[0, c]
        style = strategy_style(strategy, c)
        rows = rows_all[rows_all["strategy"].astype(str) == strategy].sort_values("batch_size")
        m = rows["batch_size"].to_numpy(dtype=float)
        k = pd.to_numeric(rows["k_mean"], errors="coerce").to_numpy(dtype=float)
        k_low = pd.to_numeric(rows["k_low"], errors="coerce").to_numpy(dtype=float)
        k_high = pd.to_numeric(rows["k_high"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(k) & (k > 0)
        fit = (fits or {}).get(strategy) if fits is not None else ms.fit_critical_batch(m, k)
        fit = fit or {"S_min": float("nan"), "E_min": float("nan"), "B_crit": float("nan")}
        for i in np.flatnonzero(ok):
            lo = k_low[i] if np.isfinite(k_low[i]) and k_low[i] > 0 else k[i]
            hi = k_high[i] if np.isfinite(k_high[i]) else k[i]
            ax.plot([m[i] * lo, m[i] * hi], [lo, hi], color=style["color"], lw=1.0, alpha=0.7, zorder=2)
        ax.plot(m[ok] * k[ok], k[ok], linestyle="none", marker=style["marker"], color=style["color"],
                markersize=6, zorder=3, label="measured k(m), seed mean", gid="measured")
        for size, kk in zip(m[ok], k[ok]):
            ax.annotate(f"{size:g}", (size * kk, kk), textcoords="offset points", xytext=(4, 3), fontsize=7,
                        color="0.25")
        s_min, e_min, b_crit = (float(fit.get(n, float("nan"))) for n in ("S_min", "E_min", "B_crit"))
        notes, star = [], None
        if np.isfinite(s_min) and np.isfinite(e_min) and s_min > 0 and e_min > 0:
            lo_m = min(m[ok].min() if ok.any() else b_crit, b_crit) / 2
            hi_m = max(m[ok].max() if ok.any() else b_crit, b_crit) * 2
            dense = np.geomspace(lo_m, hi_m, 200)
            ax.plot(s_min * dense + e_min, s_min + e_min / dense, color="black", lw=1.4, zorder=2,
                    label="fit S = S_min(1 + B_crit/m)", gid="fit")
            ax.axhline(s_min, color="0.45", lw=0.9, linestyle=":", zorder=1)
            ax.axvline(e_min, color="0.45", lw=0.9, linestyle=":", zorder=1)
            interval = ""
            if np.isfinite(fit.get("B_crit_low", float("nan"))):
                interval = f" [{_fmt(fit['B_crit_low'])}, {_fmt(fit.get('B_crit_high', float('inf')))}]"
            (star,) = ax.plot([2 * e_min], [2 * s_min], marker="*", color="#E69F00", markeredgecolor="black",
                              markersize=15, linestyle="none", zorder=5, gid="b_crit",
                              label=f"B_crit = {_fmt(b_crit)}{interval} examples/step")
            notes.append(f"S_min = {_fmt(s_min)} steps, E_min = {_fmt(e_min)} examples")
            flags["fit"] = flags["bcrit"] = True
        elif np.isfinite(e_min) and e_min > 0 and (s_min == 0 or np.isinf(b_crit)):
            ax.axvline(e_min, color="black", lw=1.4, gid="fit", label="fit: S_min = 0, E = E_min")
            notes.append("B_crit above the measured range (k still \u221d 1/m)")
            flags["fit"] = True
        else:
            notes.append("no fit: fewer than 3 batch sizes reached \u03b5")
        missed = m[~ok & np.isinf(k)]
        if missed.size:
            notes.append("not reached: m = " + ", ".join(f"{v:g}" for v in missed))
        # below the panel: nothing in the data area is hidden
        ax.legend(handles=([star] if star is not None else []) +
                  [Line2D([], [], linestyle="none", label=text) for text in notes],
                  loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, handlelength=1.2,
                  frameon=False)
        count_axis(ax, "x")
        count_axis(ax, "y")
        ax.set_xlabel("examples to threshold E = m\u00b7S (examples)")
        ax.set_ylabel("steps to threshold S (steps)")
        ax.grid(True, which="major", color="0.9", lw=0.6)
        eps = pd.to_numeric(rows["threshold"], errors="coerce").iloc[0] if not rows.empty else float("nan")
        ax.set_title(f"{style['label']}\n\u03b5 = {_fmt(eps)}" if np.isfinite(eps) else style["label"],
                     fontsize=10)
    handles = [Line2D([], [], marker="o", color="0.4", linestyle="none", label="measured k(m) (label: m)"),
               Line2D([], [], color="0.4", lw=1.0, label="bootstrap interval of k(m)")]
    if flags["fit"]:
        handles.append(Line2D([], [], color="black", lw=1.4, label="fit S = S_min(1 + B_crit/m)"))
    if flags["bcrit"]:
        handles += [Line2D([], [], color="0.45", lw=0.9, linestyle=":", label="asymptotes S_min, E_min"),
                    Line2D([], [], marker="*", color="#E69F00", markeredgecolor="black", markersize=13,
                           linestyle="none", label="B_crit: (2 E_min, 2 S_min), where m = B_crit")]
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(fig, handles), fontsize=9,
               frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# Loss curves


def batch_colors(sizes) -> dict:
    """viridis over log2 batch size (stopping before the pale yellow end)."""
    sizes = sorted({int(s) for s in sizes})
    cmap = matplotlib.colormaps["viridis"]
    if len(sizes) == 1:
        return {sizes[0]: cmap(0.0)}
    span = math.log2(sizes[-1] / sizes[0])
    return {s: cmap(0.88 * math.log2(s / sizes[0]) / span) for s in sizes}


def loss_curves_figure(cube, thresholds=None, metric: str = "train_loss", strategies=None,
                       study: str | None = None, rule=None) -> Figure:
    """`metric` against iterations (log-log), one curve per batch size (seed mean, each run on its own
    evaluation points), one panel per strategy, the strategy's threshold as a dashed horizontal line."""
    strategies = [s for s in (strategies or _cube_strategies(cube)) if s in _cube_strategies(cube)]
    rule = rule if rule is not None else ms.LOWER_QUARTILE
    eps = _eps_dict(thresholds if thresholds is not None else tables.study_thresholds(cube, metric, rule))
    values = tables.metric_values(cube, metric)
    steps = np.asarray(cube["step"].values, dtype=float)
    sizes = [int(b) for b in cube["batch_size"].values]
    colors = batch_colors(sizes)
    fig, axes = new_figure(len(strategies), 1, sharey=True, extra_width=1.4, extra_height=0.3)
    drawn_sizes, any_diverged = set(), False
    for ax, strategy in zip(axes[0], strategies):
        per = values.sel(strategy=strategy).transpose("batch_size", "seed", "step").values
        ends = {}
        for size, end in _diverged_ends(cube, metric, strategy):
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
                       label=f"\u03b5 = {_fmt(e)}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(STEP_LABEL)
        ax.grid(True, which="major", color="0.9", lw=0.6)
        ax.set_title(f"{strategy_style(strategy)['label']}\n\u03b5 = {_fmt(e)} (dashed)", fontsize=10)
    axes[0, 0].set_ylabel(metric_label(metric))
    handles = [Line2D([], [], color=colors[s], lw=2, label=f"{s}") for s in sizes if s in drawn_sizes]
    handles.append(Line2D([], [], color="black", linestyle="--", lw=1.3, label="threshold \u03b5"))
    if any_diverged:
        handles.append(Line2D([], [], marker="X", color="0.6", markeredgecolor="black", markersize=9,
                              linestyle="none", label="diverged (stopped)"))
    fig.legend(handles=handles, loc="outside right center", title="batch size m", fontsize=9, frameon=False)
    fig.suptitle(f"{study or _study_title(cube)}: {metric_label(metric, False)} against iterations "
                 f"(mean over seeds)\nthreshold \u03b5 per strategy: {rule_text(rule, metric)}", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# Entry points


def _open_cube(path):
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as handle:
        return handle.load()


def _thresholds(cube, table: pd.DataFrame | None, metric: str, rule) -> dict:
    """eps per strategy for `metric`: from speedup.csv when it has the metric (what the tables used),
    else `tables.study_thresholds` with the study's rule."""
    if table is not None and metric in set(table["metric"].astype(str)):
        rows = table[table["metric"].astype(str) == metric]
        out = {str(s): float(pd.to_numeric(g["threshold"], errors="coerce").iloc[0])
               for s, g in rows.groupby("strategy", sort=False)}
        if set(out) >= set(_cube_strategies(cube)):
            return out
    return _eps_dict(tables.study_thresholds(cube, metric, rule))


def critical_fits(cube, study: dict, table: pd.DataFrame, metric: str) -> dict:
    """Fits for `steps_examples_figure`: the point estimate fitted to speedup.csv's k_mean (what
    critical_batch.json reports), with the bootstrap interval of B_crit from `tables.critical_batch_summary`
    where that summary used the same eps as the table (else the interval is left out)."""
    rows = table[table["metric"].astype(str) == metric]
    try:
        summary = fits_from_critical(tables.critical_batch_summary(cube, {**study, "metrics": [metric]}), metric)
    except (KeyError, ValueError):
        summary = {}
    thresholds = _eps_dict(tables.study_thresholds(cube, metric, study["threshold"])) if summary else {}
    fits = {}
    for strategy, group in rows.groupby("strategy", sort=False):
        group = group.sort_values("batch_size")
        fit = ms.fit_critical_batch(group["batch_size"].to_numpy(dtype=float),
                                    pd.to_numeric(group["k_mean"], errors="coerce").to_numpy(dtype=float))
        eps = float(pd.to_numeric(group["threshold"], errors="coerce").iloc[0])
        same = str(strategy) in summary and math.isclose(thresholds.get(str(strategy), float("nan")), eps,
                                                         rel_tol=1e-9, abs_tol=1e-12)
        if same:
            fit["B_crit_low"] = summary[str(strategy)]["B_crit_low"]
            fit["B_crit_high"] = summary[str(strategy)]["B_crit_high"]
        fits[str(strategy)] = fit
    return fits


def study_figures(cube, study_config: dict | None, table: pd.DataFrame) -> dict:
    """The study's figures, {name: Figure}, in the order of `STUDY_FIGURES`."""
    study = tables._resolve_study(cube, study_config)
    rule = study["threshold"]
    name = _study_title(cube, study_config if study_config is not None else
                        json.loads(cube.attrs.get("study_config_json", "{}")))
    strategies = _cube_strategies(cube)
    figures = {}
    train_eps = _thresholds(cube, table, "train_loss", rule)
    figures["fig1_train_loss_contours"] = contour_figure(cube, "train_loss", train_eps, study=name, rule=rule)
    if "test_loss" in cube:
        pair = [s for s in ("blr", "lsr") if s in strategies] or strategies[:1]
        figures["fig5_test_loss_contours"] = contour_figure(
            cube, "test_loss", _thresholds(cube, table, "test_loss", rule), strategies=pair, study=name, rule=rule)
    else:
        figures["fig5_test_loss_contours"] = message_figure(name, "the cube has no test_loss")
    figures["fig2_speedup"] = speedup_figure(table, study=name)
    figures["fig2_accuracy_linear_error"] = accuracy_error_figure(cube, study=name)
    metric = "train_loss" if "train_loss" in set(table["metric"].astype(str)) else _ordered_metrics(table)[0]
    fits = critical_fits(cube, study, table, metric)
    figures["steps_vs_examples"] = steps_examples_figure(table, fits, metric=metric, study=name)
    figures["loss_curves"] = loss_curves_figure(cube, train_eps, study=name, rule=rule)
    return figures


def draw_study_figures(cube_path, study_config: dict, out_dir, speedup_csv_path) -> list[Path]:
    """Draw every figure of `STUDY_FIGURES` for a study cube and its speedup.csv into `out_dir`
    (``{name}.png`` and ``{name}.svg``); returns the written paths."""
    cube = _open_cube(cube_path)
    table = pd.read_csv(speedup_csv_path)
    paths = []
    for name, fig in study_figures(cube, study_config, table).items():
        paths += save_figure(fig, out_dir, name)
    return paths


def comparison_tables(cubes: dict, spec: dict, studies: dict) -> dict:
    """{label: speedup rows of spec's strategy and metric} for each study of a comparison, each with the
    paper's threshold rule (lower quartile of that study's own largest batch size)."""
    from batchscale.config import ConfigError

    strategy = spec.get("strategy", "blr")
    metric = spec.get("metric", "train_loss")
    names = list(spec["studies"])
    labels = list(spec.get("labels") or names)
    if len(labels) != len(names):
        raise ConfigError(f"comparison labels ({len(labels)}) must match its studies ({len(names)})")
    out = {}
    for name, label in zip(names, labels):
        cube = cubes[name]
        if strategy not in _cube_strategies(cube):
            raise ConfigError(f"comparison: study {name!r} has no strategy {strategy!r} "
                              f"(it has {', '.join(_cube_strategies(cube))})")
        study = {**(studies.get(name) or {}), "threshold": ms.LOWER_QUARTILE, "metrics": [metric]}
        table = tables.speedup_table(cube.sel(strategy=[strategy]), study)
        out[label] = table[(table["strategy"] == strategy) & (table["metric"] == metric)]
    return out


def draw_comparison(cube_paths: list, spec: dict, studies: dict, out_dir, name: str) -> list[Path]:
    """Overlay the speedup curves of a group of studies into ``{out_dir}/speedup.png`` and ``.svg``.

    `spec`: studies, labels (optional), strategy (default blr), metric (default train_loss), title
    (optional). Cubes are matched to studies by their ``study`` attribute, else by position.
    """
    from batchscale.config import ConfigError

    opened = [_open_cube(p) for p in cube_paths]
    by_name = {str(c.attrs.get("study")): c for c in opened if c.attrs.get("study")}
    cubes = {}
    for i, study in enumerate(spec["studies"]):
        if study in by_name:
            cubes[study] = by_name[study]
        elif i < len(opened):
            cubes[study] = opened[i]
        else:
            raise ConfigError(f"comparison {name}: no cube for study {study!r}")
    curves = comparison_tables(cubes, spec, studies)
    metric = spec.get("metric", "train_loss")
    strategy = spec.get("strategy", "blr")
    title = spec.get("title") or f"{name}: {strategy_style(strategy)['label']}, speedup to reach \u03b5 in " \
                                  f"{metric_label(metric, False)}"
    fig = comparison_figure(curves, metric=metric, strategy=strategy, title=title)
    return save_figure(fig, out_dir, "speedup")


def draw_external_figures(result: dict, out_dir) -> list[Path]:
    """`figure_hook` of `batchscale.analysis.external.analyze_external`: ``speedup`` and
    ``steps_vs_examples`` (.png and .svg) for the external table, into `out_dir`."""
    table = result["speedup"]
    metric = _ordered_metrics(table)[0]
    source = Path(str(result.get("critical_batch", {}).get("source", "external CSV"))).name
    name = f"external sweep ({source})"
    paths = save_figure(speedup_figure(table, metrics=[metric], study=name), out_dir, "speedup")
    fits = fits_from_critical(result.get("critical_batch", {}), metric)
    paths += save_figure(steps_examples_figure(table, fits, metric=metric, study=name), out_dir,
                         "steps_vs_examples")
    return paths
