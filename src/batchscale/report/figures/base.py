"""Shared styles and small drawing helpers of the figures (no measurement: nothing here fits, bootstraps
or sets a threshold; the numbers drawn come from the analysis tables).

Every figure is a `matplotlib.figure.Figure` on the Agg canvas, built without pyplot (no global state,
nothing to leak), so tests can inspect its artists. Output is deterministic: fixed styles, no dates in the
files, a fixed SVG id salt. Colours are colour-blind safe (Okabe-Ito for categories, viridis for ordered
values). Raw traces are drawn on a common step grid that `batchscale.analysis.trace_grids` computes.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from batchscale.spec.strategies import STRATEGIES


OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "h", "*")
# strategies without a fixed style (Paul Tol's muted set after Okabe-Ito's black, orange, sky blue)
SPARE_COLORS = ("#000000", "#E69F00", "#56B4E9", "#882255", "#44AA99", "#999933", "#332288", "#AA4499")
STRATEGY_STYLES = {
    "blr": {"color": "#0072B2", "marker": "o", "label": "BLR (same LR for every m)"},
    "lsr": {"color": "#D55E00", "marker": "s", "label": "LSR (LR \u221d m)"},
    "srsr": {"color": "#009E73", "marker": "^", "label": "SRSR (LR \u221d \u221am)"},
    "longer": {"color": "#CC79A7", "marker": "D", "label": "longer (m/m0 \u00d7 epochs)"},
}
REGIME_STYLES = {
    "linear": {"color": "#009E73", "label": "linear regime (efficiency interval \u2265 cut-off)"},
    "superlinear": {"color": "#56B4E9", "label": "superlinear (efficiency > 1)"},
    "unresolved": {"color": "#DDDDDD", "label": "linear unresolved (interval below the cut-off)"},
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


def strategy_style(strategy: str, index: int = 0) -> dict:
    """Colour, marker and legend label of a strategy: fixed for those of STRATEGY_STYLES; for any other
    strategy of the registry (spec.strategies: `tuned`, a new strategy's file) from its position among them,
    so it looks the same in every figure; for a name outside the registry (an external CSV) from `index`.
    The colours avoid the fixed ones and Okabe-Ito's pale yellow."""
    if strategy in STRATEGY_STYLES:
        return dict(STRATEGY_STYLES[strategy])
    others = [name for name in STRATEGIES if name not in STRATEGY_STYLES]
    if strategy in others:
        index = others.index(strategy)
    return {"color": SPARE_COLORS[index % len(SPARE_COLORS)], "marker": MARKERS[(index + 4) % len(MARKERS)],
            "label": str(strategy)}


def metric_label(metric: str, with_unit: bool = True) -> str:
    name, unit = METRICS.get(metric, (metric.replace("_", " "), ""))
    return f"{name} ({unit})" if with_unit and unit else name


def rule_text(rule, metric: str | None = "train_loss") -> str:
    """Human text of a threshold rule as the tables write it (``lower_quartile_of_largest``,
    ``quantile_of_largest:q``, ``fixed:v``, ``given``), e.g. ``lower quartile of the largest batch's train
    loss (each seed's, the largest of them)``."""
    if rule is None or (isinstance(rule, float) and math.isnan(rule)):
        return "threshold rule unknown"
    rule = str(rule)
    if rule == "given":
        return "steps to target given in the CSV"
    name = metric_label(metric, with_unit=False) if metric else "values"
    kind, _, value = rule.partition(":")
    if kind == "fixed":
        return f"fixed at {value}"
    if kind == "lower_quartile_of_largest" or (kind == "quantile_of_largest" and value == "0.25"):
        return f"lower quartile of the source batch's {name} (per seed, the largest)"
    if kind == "quantile_of_largest":
        return f"{value} quantile of the source batch's {name} (per seed, the largest)"
    return rule


def format_number(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "\u221e" if value is not None and value > 0 else "n/a"
    if 1e3 <= abs(value) < 1e5:
        return f"{value:.0f}"
    return f"{value:.3g}"


def pow2_label(value: float, _pos=None) -> str:
    if value <= 0:
        return ""
    if value >= 1:
        return f"{value:g}"
    return f"1/{1 / value:g}"


def new_figure(ncols: int = 1, nrows: int = 1, panel=PANEL, sharey=False, sharex=False, extra_width=0.0,
               extra_height=0.0):
    """A constrained-layout Figure on the Agg canvas and its 2-D array of axes. With the default panel size,
    a figure of few columns is widened to MIN_WIDTH, so its title, legend and colour bar have room."""
    if panel == PANEL and ncols * panel[0] + extra_width < MIN_WIDTH:
        panel = ((MIN_WIDTH - extra_width) / ncols, panel[1])
    fig = Figure(figsize=(panel[0] * ncols + extra_width, panel[1] * nrows + extra_height), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)
    return fig, axes


def wrap_title(text: str, width_inches: float, fontsize: float = 11) -> str:
    """Each line of a title wrapped to about `width_inches` (a character is about 0.55 em wide), so a long
    study description does not run off a narrow figure."""
    chars = max(20, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def batch_ticks(sizes, min_octaves: float | None = None, log: bool = True) -> list[int]:
    """The batch sizes to label on a log2 axis: powers of two and the ends first, then any other size, each
    only when it is at least `min_octaves` (default: 1/11 of the axis span, about a label's width on a
    panel) from every label already taken, so that sizes such as 72, 76, 78 between 64 and 128 do not write
    over each other. With ``log=False`` the same on a linear axis (the gap in units of m)."""
    sizes = sorted({int(s) for s in sizes if s > 0})
    if len(sizes) <= 1:
        return sizes
    position = math.log2 if log else float
    span = position(sizes[-1]) - position(sizes[0])
    gap = span / 11.0 if min_octaves is None else min_octaves
    powers = [s for s in sizes if s & (s - 1) == 0]
    order = [sizes[0], sizes[-1]] + powers + sizes
    taken: list[int] = []
    for size in order:
        if size not in taken and all(abs(position(size) - position(t)) >= gap - 1e-9 for t in taken):
            taken.append(size)
    return sorted(taken)


def batch_axis(ax, sizes, axis: str = "x") -> None:
    """Log2 batch-size axis: a label at the sizes `batch_ticks` picks, a minor tick at every other measured
    size."""
    sizes = sorted({int(s) for s in sizes})
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    labelled = batch_ticks(sizes)
    target.set_major_locator(ticker.FixedLocator(labelled))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
    target.set_minor_locator(ticker.FixedLocator([s for s in sizes if s not in labelled]))
    target.set_minor_formatter(ticker.NullFormatter())
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(BATCH_LABEL)


def compact_count(value: float, _pos=None) -> str:
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
    if not low > 0:
        # an empty panel (no batch size reached eps) keeps linear limits around 0, which a log axis cannot
        # draw: give it a decade
        low, high = 1.0, 10.0
        (ax.set_xlim if axis == "x" else ax.set_ylim)(low, high)
    if high / low < 3.0:
        # a narrow range (one point) has no 1-2-5 tick: widen it to a factor 3.2 about its centre rather
        # than let matplotlib fall back to crowded linear ticks
        centre = math.sqrt(low * high)
        low, high = centre / 1.8, centre * 1.8
        (ax.set_xlim if axis == "x" else ax.set_ylim)(low, high)
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3 else (1.0,)
    target.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    target.set_major_formatter(ticker.FuncFormatter(compact_count))
    target.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10) * 1.0, numticks=12))
    target.set_minor_formatter(ticker.NullFormatter())


def legend_columns(fig: Figure, handles) -> int:
    """Columns for a figure legend under the panels: about 3.8 inches per entry (labels of about 45
    characters at 9 pt), at most 4."""
    return max(1, min(4, len(handles), int(fig.get_figwidth() // 3.8)))


def batch_edges(sizes) -> np.ndarray:
    """Geometric midpoints between neighbouring batch sizes (and half a step beyond the ends); repeated sizes
    count once."""
    m = np.asarray(sorted({float(s) for s in sizes}), dtype=float)
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
        if fig.get_layout_engine() is not None:
            # the SVG keeps the PNG's panel positions: the constrained layout, most of a figure's drawing
            # time, is not solved a second time
            fig.set_layout_engine("none")
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
    fig.suptitle(wrap_title(title, fig.get_figwidth(), 12))
    return fig


def study_title(cube=None, study_config: dict | None = None, name: str | None = None) -> str:
    if name is None and cube is not None:
        name = str(getattr(cube, "attrs", {}).get("study", "")) or None
    name = name or "study"
    description = (study_config or {}).get("description")
    return f"{name} ({description})" if description else name


def cube_strategies(cube) -> list[str]:
    """The strategies of a cube, in its order."""
    return [str(s) for s in cube["strategy"].values]


def eps_from_table(table, metric: str) -> dict:
    """{strategy: eps} of `metric` as the analysis wrote it in a speedup table."""
    rows = table[table["metric"].astype(str) == metric]
    return {str(s): float(g["threshold"].astype(float).iloc[0]) for s, g in rows.groupby("strategy", sort=False)}


def batch_colors(sizes) -> dict:
    """viridis over log2 batch size (stopping before the pale yellow end)."""
    sizes = sorted({int(s) for s in sizes})
    cmap = matplotlib.colormaps["viridis"]
    if len(sizes) == 1:
        return {sizes[0]: cmap(0.0)}
    span = math.log2(sizes[-1] / sizes[0])
    return {s: cmap(0.88 * math.log2(s / sizes[0]) / span) for s in sizes}


def marker_handles(flags: dict) -> list:
    handles = []
    if flags.get("not_reached"):
        handles.append(Line2D([], [], marker="v", color="0.6", markeredgecolor="black", markersize=8,
                              linestyle="none", label="never reached \u03b5 (k = \u221e)"))
    if flags.get("diverged"):
        handles.append(Line2D([], [], marker="X", color="0.6", markeredgecolor="black", markersize=9,
                              linestyle="none", label="a seed diverged"))
    return handles


def ordered_metrics(table: pd.DataFrame, metrics=None) -> list[str]:
    present = list(dict.fromkeys(table["metric"].astype(str)))
    if metrics is not None:
        return [m for m in metrics if m in present]
    known = [m for m in ("train_loss", "test_loss", "test_error") if m in present]
    return known + [m for m in present if m not in known]
