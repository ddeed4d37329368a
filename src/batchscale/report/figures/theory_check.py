"""The least-squares theory check drawn beside the measurement.

Left: speedup k(m0)/k(m) at the common threshold of the training loss, the ideal m/m0, the predicted lsr
breakdown (first m with η0·m/m0 > 2/λ₁, dashed) and the measured one (the first m at which lsr's k stops
falling, dotted). Right: the learning rate of the fixed rules against 2/λ₁ and Ma et al.'s m/(β + (m − 1)λ₁).
Draws theory.json and speedup_common.csv with the numbers `batchscale.analysis.least_squares` derives from
them (the measured breakdown, the rules' rates, Ma et al.'s curve). The command that draws it is
`batchscale.report.theory_figure`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from batchscale.analysis.headline import HEADLINE_METRIC
from batchscale.analysis.least_squares import theory_figure_numbers
from batchscale.report.figures.base import new_figure, strategy_style


def plot_theory_speedup(ax, rows: pd.DataFrame, base_batch: int, sizes, predicted, measured) -> None:
    """The measured speedups, the ideal m/m0 and the predicted and measured lsr breakdowns."""
    ax.plot(sizes, sizes / base_batch, color="0.6", linestyle="-", linewidth=1, label="ideal m/m0")
    for i, (strategy, part) in enumerate(rows.groupby("strategy", sort=False)):
        style = strategy_style(strategy, i)
        part = part.sort_values("batch_size")
        speed = part["speedup"].astype(float)
        ax.plot(part["batch_size"], speed, color=style["color"], marker=style["marker"],
                label=f"{style['label']} (measured)")
        missing = part[~np.isfinite(speed)]
        for m in missing["batch_size"]:
            ax.annotate("not reached", (m, 1.0), rotation=90, fontsize=7, color=style["color"],
                        ha="center", va="bottom")
    if predicted is not None:
        ax.axvline(predicted, color="black", linestyle="--", linewidth=1,
                   label=f"predicted lsr breakdown m = {predicted}")
    if measured is not None:
        ax.axvline(measured, color="tab:red", linestyle=":", linewidth=1.5,
                   label=f"measured lsr breakdown m = {measured}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("batch size m")
    ax.set_ylabel("speedup k(m0)/k(m)")
    eps = rows["threshold"].iloc[0] if len(rows) else float("nan")
    ax.set_title(f"speedup at common ε = {eps:.3g} (train loss)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def plot_theory_rates(ax, theory: dict, sizes, rates: dict, mbb_sizes, mbb_step) -> None:
    """The fixed rules' learning rates against the stability limit 2/λ₁ and Ma et al.'s step."""
    ax.axhline(theory["stability_limit"], color="black", linestyle="--", linewidth=1,
               label=f"stability limit 2/λ₁ = {theory['stability_limit']:.3g}")
    ax.plot(mbb_sizes, mbb_step, color="0.4", linestyle="-.",
            label=f"Ma et al. m/(β+(m−1)λ₁), β = {theory['beta']:.3g}, λ₁ = {theory['lambda_max']:.3g}")
    for i, (strategy, rate) in enumerate(rates.items()):
        style = strategy_style(strategy, i)
        ax.plot(sizes, rate, color=style["color"], marker=style["marker"], label=f"{style['label']} η(m)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size m")
    ax.set_ylabel("learning rate η")
    ax.set_title("learning rates against the least-squares theory", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def theory_figure(theory: dict, common: pd.DataFrame, metric: str = HEADLINE_METRIC) -> Figure:
    """The two panels from theory.json and speedup_common.csv."""
    numbers = theory_figure_numbers(theory, common, metric)
    sizes = np.array(theory["batch_sizes"], dtype=float)
    fig, axes = new_figure(ncols=2, extra_width=0.6)
    left, right = axes[0]
    plot_theory_speedup(left, numbers["rows"], int(theory["base_batch"]), sizes, numbers["predicted"],
                        numbers["measured"])
    plot_theory_rates(right, theory, sizes, numbers["rates"], numbers["mbb_sizes"], numbers["mbb_step"])
    return fig
