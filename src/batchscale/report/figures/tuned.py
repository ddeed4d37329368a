"""Figures of the `tuned` strategy, drawn only from tuned.csv, tuned_trials.csv, speedup_common.csv and
critical_batch.json (no measurement here), for the study's first metric:

- ``tuned_steps_to_result``: steps to result k(m) against m on log-log axes at the common eps, tuned
  (interval over seeds and trials) beside the fixed rules, with the perfect-scaling line k(m0) m0/m;
- ``tuned_eta_star``: eta*(m) against m with the LSR and SRSR lines through eta*(m0), the fitted
  eta_max / (1 + B_noise/m), and the batch sizes whose eta* lies at an edge of the searched range marked;
- ``tuned_trials``: per batch size, every trial's k against its learning rate (not reached at the top).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from batchscale.report.figures.base import batch_axis, new_figure, strategy_style
from batchscale.report.figures.registry import FigureInputs, figure
from batchscale.spec.strategies import peak_learning_rate

TUNED_STYLE = {"color": "black", "marker": "*", "label": "tuned (best trial)"}


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.isfinite(values) & (values > 0)


def plot_steps_to_result(ax, tuned_rows: pd.DataFrame, fixed_rows: pd.DataFrame, base_batch: int) -> None:
    """k(m) of tuned (with its interval) and of each fixed rule, and the perfect-scaling line from tuned's m0."""
    for index, (strategy, rows) in enumerate(fixed_rows.groupby("strategy", sort=False)):
        keep = _finite(rows["k_mean"])
        style = strategy_style(str(strategy), index)
        ax.plot(rows["batch_size"][keep], rows["k_mean"][keep], marker=style["marker"], color=style["color"],
                label=style["label"], alpha=0.8)
    keep = _finite(tuned_rows["k"])
    m, k = tuned_rows["batch_size"][keep].to_numpy(float), tuned_rows["k"][keep].to_numpy(float)
    low = np.nan_to_num(k - tuned_rows["k_low"][keep].to_numpy(float), nan=0.0).clip(min=0)
    high = np.nan_to_num(tuned_rows["k_high"][keep].to_numpy(float) - k, nan=0.0, posinf=0.0).clip(min=0)
    ax.errorbar(m, k, yerr=[low, high], color=TUNED_STYLE["color"], marker=TUNED_STYLE["marker"], markersize=10,
                capsize=3, label=TUNED_STYLE["label"], zorder=5)
    base = tuned_rows[tuned_rows["batch_size"] == base_batch]
    if not base.empty and math.isfinite(float(base["k"].iloc[0])):
        sizes = np.asarray(sorted(tuned_rows["batch_size"]), dtype=float)
        ax.plot(sizes, float(base["k"].iloc[0]) * base_batch / sizes, ls="--", color="grey",
                label="perfect scaling k(m0)·m0/m")
    ax.set_yscale("log")
    batch_axis(ax, tuned_rows["batch_size"])
    ax.set_ylabel("steps to result k(m)")
    ax.legend(fontsize=8)


def plot_eta_star(ax, tuned_rows: pd.DataFrame, entry: dict, base_batch: int) -> None:
    """eta*(m), the LSR and SRSR lines through eta*(m0), the fitted optimal-step law and edge warnings."""
    m = tuned_rows["batch_size"].to_numpy(float)
    lr = tuned_rows["lr"].to_numpy(float)
    keep = _finite(lr)
    ax.plot(m[keep], lr[keep], color=TUNED_STYLE["color"], marker=TUNED_STYLE["marker"], markersize=10,
            ls="none", label="η*(m), best trial")
    sizes = np.geomspace(m.min(), m.max(), 64)
    at_base = tuned_rows.loc[tuned_rows["batch_size"] == base_batch, "lr"]
    if not at_base.empty and math.isfinite(float(at_base.iloc[0])):
        eta0 = float(at_base.iloc[0])
        for rule, style in (("lsr", "--"), ("srsr", ":")):
            rates = [peak_learning_rate(rule, eta0, m, base_batch) for m in sizes]
            ax.plot(sizes, rates, ls=style, color=strategy_style(rule)["color"], label=f"{rule.upper()} from η*(m0)")
    eta_max, b_noise = entry.get("eta_max"), (entry.get("B_noise") or {}).get("estimate")
    if eta_max is not None and b_noise is not None:
        ax.plot(sizes, eta_max / (1.0 + b_noise / sizes), color="tab:purple",
                label=f"η_max/(1+B_noise/m), B_noise = {b_noise:.3g}")
    edges = tuned_rows[tuned_rows["lr_edge"].fillna("").astype(str) != ""]
    if not edges.empty:
        ax.plot(edges["batch_size"], edges["lr"], ls="none", marker="o", markersize=16, markerfacecolor="none",
                markeredgecolor="red", label="η* at an edge of the searched range")
    for _, row in tuned_rows.iterrows():
        ax.vlines(row["batch_size"], row["lr_min"], row["lr_max"], color="lightgrey", lw=6, zorder=0)
    ax.set_yscale("log")
    batch_axis(ax, m)
    ax.set_ylabel("peak learning rate η*(m)")
    # under the panel: inside, it hid the top of the searched range where round 2 extended it
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)


def plot_trials(ax, trials: pd.DataFrame, best_trial: int, title: str) -> None:
    """Every trial's k against its learning rate; trials that never reached eps drawn at the top."""
    k = trials["k"].to_numpy(float)
    lr = trials["lr"].to_numpy(float)
    reached = np.isfinite(k)
    ax.plot(lr[reached], k[reached], "o", color="tab:blue", label="trial")
    top = np.nanmax(k[reached]) * 1.5 if reached.any() else 1.0
    ax.plot(lr[~reached], np.full((~reached).sum(), top), "x", color="red", label="not reached / diverged")
    best = trials[trials["trial"] == best_trial]
    if not best.empty and reached[trials["trial"].to_numpy() == best_trial].any():
        ax.plot(best["lr"], best["k"], "*", color="black", markersize=14, label="best")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("k (mean over seeds)")
    ax.set_title(title, fontsize=9)


def tuned_rows(study: FigureInputs, scope: str) -> pd.DataFrame:
    """tuned.csv's rows of the study's first metric at `scope` (``common`` or ``strategy``: tuned's own eps)."""
    tuned = study.tables["tuned"]
    return tuned[(tuned["metric"] == first_metric(study)) & (tuned["threshold_scope"] == scope)]


def first_metric(study: FigureInputs) -> str:
    return study.config.get("metrics", ["train_loss"])[0]


@figure("tuned_steps_to_result")
def tuned_steps_to_result(study: FigureInputs) -> Figure:
    """Steps to result at the common eps, tuned beside the fixed rules."""
    metric, base = first_metric(study), int(study.config["base_batch"])
    common = tuned_rows(study, "common")
    fixed = study.tables["speedup_common"]
    eps = float(common["threshold"].iloc[0]) if not common.empty else float("nan")
    fig, axes = new_figure(1, 1, panel=(6.0, 4.5))
    plot_steps_to_result(axes[0, 0], common, fixed[fixed["metric"] == metric], base)
    fig.suptitle(f"steps to result at the common ε = {eps:.4g} ({metric})")
    return fig


@figure("tuned_eta_star")
def tuned_eta_star(study: FigureInputs) -> Figure:
    """eta*(m) at tuned's own eps with the scaling rules through eta*(m0) and the fitted optimal-step law."""
    metric = first_metric(study)
    entry = ((study.tables.get("critical_batch") or {}).get("strategies", {}).get("tuned") or {}).get(metric) or {}
    fig, axes = new_figure(1, 1, panel=(6.0, 4.5))
    plot_eta_star(axes[0, 0], tuned_rows(study, "strategy"), entry, int(study.config["base_batch"]))
    fig.suptitle(f"η*(m) at tuned's own ε ({metric}); grey: the range searched")
    return fig


@figure("tuned_trials")
def tuned_trials(study: FigureInputs) -> Figure:
    """Every trial's k against its learning rate at tuned's own eps, one panel per batch size."""
    metric = first_metric(study)
    own = tuned_rows(study, "strategy")
    trials = study.tables["tuned_trials"]
    sizes = sorted(own["batch_size"].astype(int))
    at_own = trials[(trials["metric"] == metric) & (trials["threshold_scope"] == "strategy")]
    fig, axes = new_figure(len(sizes), 1, panel=(3.2, 3.0), sharey=True)
    for ax, size in zip(axes[0], sizes):
        best = int(own.loc[own["batch_size"] == size, "best_trial"].iloc[0])
        plot_trials(ax, at_own[at_own["batch_size"] == size], best, f"batch size {size}")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"every trial's k against its learning rate at tuned's ε ({metric})")
    return fig
