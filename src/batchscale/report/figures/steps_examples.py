"""Steps against examples to threshold with the fitted hyperbola (McCandlish et al. 2018)."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from batchscale.report.figures.base import (
    MIN_WIDTH,
    PANEL,
    batch_ticks,
    count_axis,
    format_number,
    legend_columns,
    message_figure,
    metric_label,
    new_figure,
    strategy_style,
    wrap_title,
)
from batchscale.report.figures.registry import FigureInputs, figure


def fits_from_critical(document: dict, metric: str) -> dict:
    """{strategy: {S_min, E_min, B_crit, B_crit_low, B_crit_high, report, interval_kind, log_rmse,
    fit_meaningful, note}} from a critical_batch.json document, as the analysis wrote them (None entries
    become NaN; B_crit None with S_min 0 is an infinite B_crit)."""
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
        b_part = entry.get("B_crit") or {}
        value["report"] = b_part.get("report")
        value["interval_kind"] = b_part.get("interval_kind", entry.get("interval_kind", "none"))
        value["log_rmse"] = float("nan") if entry.get("log_rmse") is None else float(entry["log_rmse"])
        value["fit_meaningful"] = bool(entry.get("fit_meaningful", False))
        value["note"] = entry.get("note")
        fits[str(strategy)] = value
    return fits


NO_FIT = {"S_min": float("nan"), "E_min": float("nan"), "B_crit": float("nan")}


def plot_measured_steps(ax, m, k, k_low, k_high, ok, style: dict) -> None:
    """The measured S = k(m) against E = m k(m) with each interval as a segment, labelled by m where the
    label keeps apart from the others (`batch_ticks`)."""
    for i in np.flatnonzero(ok):
        lo = k_low[i] if np.isfinite(k_low[i]) and k_low[i] > 0 else k[i]
        hi = k_high[i] if np.isfinite(k_high[i]) else k[i]
        ax.plot([m[i] * lo, m[i] * hi], [lo, hi], color=style["color"], lw=1.0, alpha=0.7, zorder=2)
    ax.plot(m[ok] * k[ok], k[ok], linestyle="none", marker=style["marker"], color=style["color"],
            markersize=6, zorder=3, label="measured k(m), seed mean", gid="measured")
    labelled = set(batch_ticks(m[ok]))  # sizes close to a labelled one (72, 76, 78 near 64) stay unlabelled
    for size, kk in zip(m[ok], k[ok]):
        if int(size) in labelled:
            ax.annotate(f"{size:g}", (size * kk, kk), textcoords="offset points", xytext=(4, 3), fontsize=7,
                        color="0.25")


def plot_fit(ax, fit: dict, m, ok):
    """The fitted hyperbola, its asymptotes and B_crit at (2 E_min, 2 S_min), where the analysis marked the
    fit meaningful; otherwise nothing. Returns (the B_crit marker or None, the notes under the panel)."""
    s_min, e_min, b_crit = (float(fit.get(n, float("nan"))) for n in ("S_min", "E_min", "B_crit"))
    meaningful = bool(fit.get("fit_meaningful", False))
    if not (meaningful and np.isfinite(s_min) and np.isfinite(e_min) and s_min > 0 and e_min > 0):
        return None, []
    lo_m = min(m[ok].min() if ok.any() else b_crit, b_crit) / 2
    hi_m = max(m[ok].max() if ok.any() else b_crit, b_crit) * 2
    dense = np.geomspace(lo_m, hi_m, 200)
    ax.plot(s_min * dense + e_min, s_min + e_min / dense, color="black", lw=1.4, zorder=2,
            label="fit S = S_min(1 + B_crit/m)", gid="fit")
    ax.axhline(s_min, color="0.45", lw=0.9, linestyle=":", zorder=1)
    ax.axvline(e_min, color="0.45", lw=0.9, linestyle=":", zorder=1)
    interval = ""
    kind = str(fit.get("interval_kind") or "none")
    if np.isfinite(fit.get("B_crit_low", float("nan"))) and kind != "none":
        interval = f" [{format_number(fit['B_crit_low'])}, {format_number(fit.get('B_crit_high', float('inf')))}] " \
                   f"({kind.replace('_', ' ')})"
    (star,) = ax.plot([2 * e_min], [2 * s_min], marker="*", color="#E69F00", markeredgecolor="black",
                      markersize=15, linestyle="none", zorder=5, gid="b_crit",
                      label=textwrap.fill(f"B_crit = {format_number(b_crit)}{interval} examples/step", 48))
    return star, [f"S_min = {format_number(s_min)} steps, E_min = {format_number(e_min)} examples, "
                  f"log-RMSE {fit.get('log_rmse', float('nan')):.2f}"]


def plot_steps_panel(ax, rows: pd.DataFrame, fit: dict, style: dict) -> bool:
    """One strategy's panel: measured points, the fit where meaningful, and notes (B_crit as the analysis
    reported it, why no curve is drawn, sizes not reached) in a legend under it. Returns whether the fit was
    drawn."""
    m = rows["batch_size"].to_numpy(dtype=float)
    k = pd.to_numeric(rows["k_mean"], errors="coerce").to_numpy(dtype=float)
    k_low = pd.to_numeric(rows["k_low"], errors="coerce").to_numpy(dtype=float)
    k_high = pd.to_numeric(rows["k_high"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(k) & (k > 0)
    plot_measured_steps(ax, m, k, k_low, k_high, ok, style)
    star, notes = plot_fit(ax, fit, m, ok)
    if star is None and fit.get("report"):
        notes.append(f"B_crit {fit['report']}" if str(fit["report"])[:1] in "<>" else f"B_crit = {fit['report']}")
        notes.append(f"fit not drawn: {fit.get('note') or 'not meaningful'}"
                     f" (log-RMSE {fit.get('log_rmse', float('nan')):.2f})")
    elif star is None:
        notes.append("no fit: " + (fit.get("note") or "fewer than 3 batch sizes reached \u03b5"))
    missed = m[~ok & np.isinf(k)]
    if missed.size:
        notes.append("not reached: m = " + ", ".join(f"{v:g}" for v in missed))
    # below the panel: nothing in the data area is hidden
    ax.legend(handles=([star] if star is not None else []) +
              [Line2D([], [], linestyle="none", label=textwrap.fill(text, 48)) for text in notes],
              loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, handlelength=1.2,
              frameon=False)
    count_axis(ax, "x")
    count_axis(ax, "y")
    ax.set_xlabel("examples to threshold E = m\u00b7S (examples)")
    ax.set_ylabel("steps to threshold S (steps)")
    ax.grid(True, which="major", color="0.9", lw=0.6)
    eps = pd.to_numeric(rows["threshold"], errors="coerce").iloc[0] if not rows.empty else float("nan")
    ax.set_title(f"{style['label']}\n\u03b5 = {format_number(eps)}" if np.isfinite(eps) else style["label"],
                 fontsize=10)
    return star is not None


def steps_handles(fitted: bool) -> list:
    """The legend of a steps-against-examples figure."""
    handles = [Line2D([], [], marker="o", color="0.4", linestyle="none", label="measured k(m) (label: m)"),
               Line2D([], [], color="0.4", lw=1.0, label="interval of k(m) over seeds (kind: speedup.csv interval_kind)")]
    if fitted:
        handles += [Line2D([], [], color="black", lw=1.4, label="fit S = S_min(1 + B_crit/m)"),
                    Line2D([], [], color="0.45", lw=0.9, linestyle=":", label="asymptotes S_min, E_min"),
                    Line2D([], [], marker="*", color="#E69F00", markeredgecolor="black", markersize=13,
                           linestyle="none", label="B_crit: (2 E_min, 2 S_min), where m = B_crit")]
    return handles


def steps_examples_figure(table: pd.DataFrame, fits: dict | None = None, metric: str = "train_loss",
                          strategies=None, study: str = "study") -> Figure:
    """S = k(m) against E = m k(m), one panel per strategy, with the fitted hyperbola
    (S/S_min - 1)(E/E_min - 1) = 1, its asymptotes and B_crit = E_min/S_min marked at (2 E_min, 2 S_min).

    `fits` {strategy: ...} from `fits_from_critical` (critical_batch.json). The fitted curve is drawn only
    where the analysis marked it meaningful (B_crit inside the measured range, small log-RMSE); otherwise
    the panel quotes B_crit as the analysis reported it (a bound such as ``> 256``) and why no curve is drawn.
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
    fitted = False
    for c, strategy in enumerate(strategies):
        rows = rows_all[rows_all["strategy"].astype(str) == strategy].sort_values("batch_size")
        fit = (fits or {}).get(strategy) or NO_FIT
        fitted = plot_steps_panel(axes[0, c], rows, fit, strategy_style(strategy, c)) or fitted
    handles = steps_handles(fitted)
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_columns(fig, handles), fontsize=9,
               frameon=False)
    fig.suptitle(wrap_title(title, fig.get_figwidth()), fontsize=11)
    return fig


def fit_metric(table: pd.DataFrame) -> str:
    """The metric whose fit a figure draws: the train loss where the table has it, else its first metric."""
    metrics = list(dict.fromkeys(table["metric"].astype(str)))
    return "train_loss" if "train_loss" in metrics else metrics[0]


@figure("steps_vs_examples")
def steps_vs_examples(study: FigureInputs) -> Figure:
    """Steps against examples to the threshold with the fitted hyperbola, for the fit's metric."""
    table = study.tables["speedup"]
    metric = fit_metric(table)
    fits = fits_from_critical(study.tables.get("critical_batch") or {}, metric)
    return steps_examples_figure(table, fits, metric=metric, study=study.title)
