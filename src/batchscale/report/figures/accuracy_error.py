"""Paper Fig. 2 (right), redefined so that it can carry a claim (figure ``fig2_accuracy_linear_error``).

- A classification study: final test and train accuracy of every strategy against batch size, the mean over
  seeds with an interval (the analysis's interval columns where accuracy.csv has them, else mean ± sd,
  labelled so), on an axis that spans at least ACCURACY_SPAN percentage points up to 100, with the size of
  one test example in points when the test-set size is known (the cube's ``num_test`` attribute or
  accuracy.csv's ``n_test``), so one digit is not read as a trend.
- A least-squares study (`spec.studies.has_theory`: the loss is quadratic): the linear approximation error
  where each run first reaches eps, every strategy, mean ± sd over seeds, beside the expected value the
  recursion predicts for it (theory.json's ``predicted_linear_error``, where the figures have theory.json).
  For a quadratic loss the error is s⟨g − ∇L, g⟩ + ½ s² gᵀHg at the step s = η0 m/m0 along the batch
  gradient g, so its growth with m is a check of the theory, not noise of a curvature estimate.

On the nonlinear models the error's seed spread is as large as its mean and it zig-zags with m (one fresh
batch per run, measured at the evaluation point nearest to k): it is not drawn there. Numbers come from
accuracy.csv, linear_error.csv and theory.json; nothing is computed here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from batchscale.report.figures.base import (
    batch_axis,
    batch_edges,
    legend_columns,
    message_figure,
    new_figure,
    strategy_style,
    wrap_title,
)
from batchscale.report.figures.registry import FigureInputs, figure
from batchscale.spec.studies import has_theory

ACCURACY_SPAN = 10.0  # percentage points: the least an accuracy axis spans
INTERVAL_COLUMNS = ("{name}_low_pct", "{name}_high_pct")  # the analysis's interval, where accuracy.csv has it


def has_accuracy(rows: pd.DataFrame) -> bool:
    """Whether accuracy.csv rows carry any accuracy (a regression study's are empty)."""
    return any(np.isfinite(pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float)).any()
               for c in ("test_acc_mean_pct", "train_acc_mean_pct") if c in rows)


def accuracy_interval(rows: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(low, high, words) of `name` (test_acc or train_acc) in percent: the analysis's interval columns when
    accuracy.csv has them, else mean ± sd over seeds."""
    mean = pd.to_numeric(rows[f"{name}_mean_pct"], errors="coerce").to_numpy(float)
    low_col, high_col = (c.format(name=name) for c in INTERVAL_COLUMNS)
    if low_col in rows and high_col in rows:
        kind = str(rows[f"{name}_interval_kind"].iloc[0]) if f"{name}_interval_kind" in rows else "interval"
        return (pd.to_numeric(rows[low_col], errors="coerce").to_numpy(float),
                pd.to_numeric(rows[high_col], errors="coerce").to_numpy(float), kind.replace("_", " "))
    sd = pd.to_numeric(rows.get(f"{name}_sd_pct"), errors="coerce")
    sd = np.zeros_like(mean) if sd is None else np.nan_to_num(sd.to_numpy(float))
    return mean - sd, mean + sd, "mean \u00b1 sd over seeds"


def accuracy_limits(lows) -> tuple[float, float]:
    """(bottom, top) of an accuracy axis: up to 100, down to the lowest interval end rounded down to 5 points,
    spanning at least ACCURACY_SPAN."""
    finite = np.asarray([v for v in lows if np.isfinite(v)], dtype=float)
    if not finite.size:
        return 100.0 - ACCURACY_SPAN, 100.5
    bottom = min(100.0 - ACCURACY_SPAN, 5.0 * math.floor((float(finite.min()) - 1.0) / 5.0))
    return max(0.0, bottom), 100.5


def plot_accuracy(ax, rows: pd.DataFrame, name: str, strategies: list) -> tuple[list, str]:
    """Mean `name` accuracy of each strategy with its interval; a seed that diverged as an X at the bottom.
    Returns (the interval ends drawn, the interval's words)."""
    lows, words = [], ""
    for i, strategy in enumerate(strategies):
        style = strategy_style(strategy, i)
        part = rows[rows["strategy"].astype(str) == strategy].sort_values("batch_size")
        m = part["batch_size"].to_numpy(float) * (1.0 + 0.025 * (i - (len(strategies) - 1) / 2))  # dodge
        mean = pd.to_numeric(part[f"{name}_mean_pct"], errors="coerce").to_numpy(float)
        low, high, words = accuracy_interval(part, name)
        ok = np.isfinite(mean)
        bars = ax.errorbar(m[ok], mean[ok], yerr=np.vstack([mean[ok] - low[ok], high[ok] - mean[ok]]),
                           fmt=style["marker"] + "-", color=style["color"], capsize=2.5, markersize=4.5, lw=1.4,
                           label=style["label"])
        bars.lines[0].set_gid(f"{name} {strategy}")
        lows += list(low[ok])
        diverged = pd.to_numeric(part["n_diverged"], errors="coerce").to_numpy(float) > 0
        if diverged.any():
            ax.plot(m[diverged], np.full(int(diverged.sum()), 0.04), "X", color=style["color"],
                    markeredgecolor="black", markersize=8, linestyle="none", transform=ax.get_xaxis_transform(),
                    gid=f"diverged {strategy}")
    return lows, words


def test_size_words(test_size) -> str:
    """How big one test example is, in accuracy points."""
    if test_size is None or not test_size > 0:
        return "test-set size not recorded"
    return f"{int(test_size)} test examples: one is {100.0 / test_size:.2g} points"


def accuracy_figure(accuracy: pd.DataFrame, study: str = "study", test_size=None, classes=None) -> Figure:
    """Final test and train accuracy of every strategy (two panels, one honest axis; module docstring)."""
    strategies = list(dict.fromkeys(accuracy["strategy"].astype(str)))
    fig, axes = new_figure(2, 1, sharey=True, extra_width=0.3, extra_height=0.4)
    sizes = accuracy["batch_size"].to_numpy(float)
    lows = []
    for ax, name, title in zip(axes[0], ("test_acc", "train_acc"),
                               (f"final test accuracy ({test_size_words(test_size)})",
                                "final train accuracy (the training evaluation subset)")):
        drawn, words = plot_accuracy(ax, accuracy, name, strategies)
        lows += drawn
        batch_axis(ax, sizes)
        ax.set_xlim(batch_edges(sizes)[0], batch_edges(sizes)[-1])
        ax.set_title(wrap_title(f"{title}; bars: {words}", 4.0, 10), fontsize=10)
        ax.grid(True, color="0.9", lw=0.6)
    bottom, top = accuracy_limits(lows)
    chance = 100.0 / classes if classes else None
    if chance is not None and bottom - ACCURACY_SPAN <= chance < bottom:  # within a span: show how near it is
        bottom = 5.0 * math.floor(chance / 5.0)
    axes[0, 0].set_ylim(bottom, top)
    axes[0, 0].set_ylabel("final accuracy (%)")
    if chance is not None and chance >= bottom:
        for ax in axes[0]:
            ax.axhline(chance, color="0.5", linestyle=":", label=f"chance ({chance:.3g}%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=legend_columns(fig, handles), fontsize=9,
               frameon=False)
    fig.suptitle(wrap_title(f"{study}: final accuracy against batch size\n(axis from {bottom:g}% to 100%: it spans at "
                            f"least {ACCURACY_SPAN:g} points, so a gap reads at its true size)", fig.get_figwidth()),
                 fontsize=11)
    return fig


def plot_linear_error(ax, rows: pd.DataFrame, predicted: dict, strategies: list) -> None:
    """Measured linear approximation error at k (mean ± sd over seeds, markers) and the recursion's expected
    value (line) per strategy, on log axes."""
    for i, strategy in enumerate(strategies):
        style = strategy_style(strategy, i)
        part = rows[(rows["strategy"].astype(str) == strategy) & (rows["point"] == "at_threshold")]
        part = part.sort_values("batch_size")
        m = part["batch_size"].to_numpy(float) * (1.0 + 0.03 * (i - (len(strategies) - 1) / 2))
        mean = pd.to_numeric(part["absolute_mean"], errors="coerce").to_numpy(float)
        sd = np.nan_to_num(pd.to_numeric(part["absolute_sd"], errors="coerce").to_numpy(float))
        ok = np.isfinite(mean) & (mean > 0)
        lower = np.minimum(sd[ok], 0.9 * mean[ok])  # a log axis cannot draw mean - sd <= 0: bar stops at mean/10
        bars = ax.errorbar(m[ok], mean[ok], yerr=np.vstack([lower, sd[ok]]), fmt=style["marker"],
                           color=style["color"], capsize=2.5, markersize=5, linestyle="none",
                           label=f"{style['label']}: measured (mean \u00b1 sd over seeds)")
        bars.lines[0].set_gid(f"measured {strategy}")
        values = (predicted or {}).get(strategy, {})
        xs = sorted(int(k) for k, v in values.items() if v is not None and v > 0)
        if xs:
            ax.plot(xs, [values[str(x)] for x in xs], "-", color=style["color"], lw=1.5, gid=f"predicted {strategy}",
                    label=f"{style['label']}: expected value, recursion (theory.json)")
    ax.set_yscale("log")
    ax.set_ylabel("linear approx. error at k(m; \u03b5) (nats)")
    ax.grid(True, color="0.9", lw=0.6)


def linear_error_figure(linear_error: pd.DataFrame | None, theory: dict | None, study: str = "study") -> Figure:
    """The least-squares study's panel (module docstring); a message when the traces hold no such error."""
    title = f"{study}: linear approximation error where each run first reaches \u03b5"
    if linear_error is None or not len(linear_error):
        return message_figure(title, "no linear approximation error in the traces (evaluation.linear_approx: false)")
    at = linear_error[linear_error["point"] == "at_threshold"]
    if not (pd.to_numeric(at["absolute_mean"], errors="coerce") > 0).any():
        return message_figure(title, "no run reached \u03b5 with a linear approximation error measured")
    strategies = list(dict.fromkeys(at["strategy"].astype(str)))
    predicted = (theory or {}).get("predicted_linear_error")
    fig, axes = new_figure(1, 1, panel=(8.5, 4.6))
    ax = axes[0, 0]
    plot_linear_error(ax, linear_error, predicted, strategies)
    sizes = at["batch_size"].to_numpy(float)
    batch_axis(ax, sizes)
    ax.set_xlim(batch_edges(sizes)[0], batch_edges(sizes)[-1])
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    note = ("L(w \u2212 s g) \u2212 L(w) + s\u2016g\u2016\u00b2 with s = \u03b70 m/m0 and g a fresh batch gradient; "
            "the loss is quadratic, so its expectation is exact" +
            ("" if predicted else " (the prediction needs theory.json among the figures' inputs)"))
    fig.suptitle(wrap_title(f"{title}\n{note}", fig.get_figwidth(), 11), fontsize=11)
    return fig


@figure("fig2_accuracy_linear_error")
def fig2_accuracy_linear_error(study: FigureInputs) -> Figure:
    """Paper Fig. 2 (right), redefined: accuracy with intervals, or the least-squares linear approximation error."""
    config = study.config or {}
    quadratic = "dataset" in config and "model" in config and has_theory(config)
    if quadratic:
        return linear_error_figure(study.tables.get("linear_error"), study.tables.get("theory"), study.title)
    accuracy = study.tables.get("accuracy")
    if accuracy is None or not len(accuracy) or not has_accuracy(accuracy):
        return message_figure(f"{study.title}: accuracy", "the study has no accuracy (a regression task)")
    attrs = getattr(study.cube, "attrs", {}) or {}
    test_size = attrs.get("num_test", accuracy["n_test"].iloc[0] if "n_test" in accuracy else None)
    classes = attrs.get("num_classes", accuracy["n_classes"].iloc[0] if "n_classes" in accuracy else None)
    known = [value if value is not None and int(value) > 0 else None for value in (test_size, classes)]  # -1: unknown
    return accuracy_figure(accuracy, study.title, *known)
