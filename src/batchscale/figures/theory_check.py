"""The least-squares theory check drawn beside the measurement (issue 12).

Left: speedup k(m0)/k(m) at the common threshold of the training loss, the ideal m/m0, the predicted lsr
breakdown (first m with η0·m/m0 > 2/λ₁, dashed) and the measured one (the first m at which lsr's k stops
falling, dotted). Right: the learning rate of the fixed rules against 2/λ₁ and Ma et al.'s m/(β + (m − 1)λ₁).
Draws numbers from theory.json and speedup_common.csv; computes only the rules' η(m) for the right panel.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from batchscale.figures.base import new_figure, save_figure, strategy_style
from batchscale.analysis.headline import HEADLINE_METRIC
from batchscale.analysis.least_squares import measured_breakdown

RULE_STEP = {"blr": lambda eta0, m, m0: eta0 + 0 * m, "lsr": lambda eta0, m, m0: eta0 * m / m0,
             "srsr": lambda eta0, m, m0: eta0 * np.sqrt(m / m0)}


def theory_figure(theory: dict, common: pd.DataFrame, metric: str = HEADLINE_METRIC):
    fig, axes = new_figure(ncols=2, extra_width=0.6)
    left, right = axes[0]
    rows = common[common["metric"] == metric]
    m0 = int(theory["base_batch"])
    sizes = np.array(theory["batch_sizes"], dtype=float)
    left.plot(sizes, sizes / m0, color="0.6", linestyle="-", linewidth=1, label="ideal m/m0")
    for i, (strategy, part) in enumerate(rows.groupby("strategy", sort=False)):
        style = strategy_style(strategy, i)
        part = part.sort_values("batch_size")
        speed = part["speedup"].astype(float)
        left.plot(part["batch_size"], speed, color=style["color"], marker=style["marker"],
                  label=f"{style['label']} (measured)")
        missing = part[~np.isfinite(speed)]
        for m in missing["batch_size"]:
            left.annotate("not reached", (m, 1.0), rotation=90, fontsize=7, color=style["color"],
                          ha="center", va="bottom")
    predicted = theory.get("predicted_lsr_breakdown")
    measured = measured_breakdown(rows[rows["strategy"] == "lsr"], m0) if (rows["strategy"] == "lsr").any() else None
    if predicted is not None:
        left.axvline(predicted, color="black", linestyle="--", linewidth=1,
                     label=f"predicted lsr breakdown m = {predicted}")
    if measured is not None:
        left.axvline(measured, color="tab:red", linestyle=":", linewidth=1.5,
                     label=f"measured lsr breakdown m = {measured}")
    left.set_xscale("log", base=2)
    left.set_yscale("log", base=2)
    left.set_xlabel("batch size m")
    left.set_ylabel("speedup k(m0)/k(m)")
    eps = rows["threshold"].iloc[0] if len(rows) else float("nan")
    left.set_title(f"speedup at common ε = {eps:.3g} (train loss)", fontsize=9)
    left.legend(fontsize=7, loc="upper left")

    dense = np.geomspace(sizes.min(), sizes.max(), 200)
    lam, beta, eta0 = theory["lambda_max"], theory["beta"], theory["eta0"]
    right.axhline(theory["stability_limit"], color="black", linestyle="--", linewidth=1,
                  label=f"stability limit 2/λ₁ = {theory['stability_limit']:.3g}")
    right.plot(dense, dense / (beta + (dense - 1.0) * lam), color="0.4", linestyle="-.",
               label=f"Ma et al. m/(β+(m−1)λ₁), β = {beta:.3g}, λ₁ = {lam:.3g}")
    for i, strategy in enumerate(s for s in rows["strategy"].unique() if s in RULE_STEP):
        style = strategy_style(strategy, i)
        right.plot(sizes, RULE_STEP[strategy](eta0, sizes, m0), color=style["color"], marker=style["marker"],
                   label=f"{style['label']} η(m)")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("batch size m")
    right.set_ylabel("learning rate η")
    right.set_title("learning rates against the least-squares theory", fontsize=9)
    right.legend(fontsize=7, loc="upper left")
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m batchscale.figures.theory_check")
    parser.add_argument("--theory", required=True)
    parser.add_argument("--common", required=True)
    parser.add_argument("--out", required=True, help="path without extension; .png and .svg are written")
    args = parser.parse_args(argv)
    fig = theory_figure(json.loads(Path(args.theory).read_text()), pd.read_csv(args.common))
    out = Path(args.out)
    save_figure(fig, out.parent, out.name)


if __name__ == "__main__":
    main()
