"""Paper Fig. 2 (right): final accuracy and linear approximation error against batch size, drawn from
accuracy.csv and linear_error.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from batchscale.report.figures.base import (
    batch_axis,
    batch_edges,
    message_figure,
    new_figure,
    strategy_style,
    wrap_title,
)
from batchscale.report.figures.registry import FigureInputs, figure

# Which linear-approximation-error measurement to draw, most informative first: at the final weights of a
# converged run the gradient is about 0 and so is the error (about 1e-6 nats); where the run first reaches
# eps, or at the end of warm-up, it measures the curvature the step actually met.
LINEAR_ERROR_PREFERENCE = (  # (point, kind, what it is in words, axis label)
    ("at_threshold", "relative", "relative linear approximation error where the run first reaches \u03b5",
     "relative lin. approx. error at k(m; \u03b5)"),
    ("at_threshold", "absolute", "linear approximation error where the run first reaches \u03b5",
     "lin. approx. error at k(m; \u03b5) (nats)"),
    ("warmup_end", "relative", "relative linear approximation error at the end of warm-up",
     "relative lin. approx. error, end of warm-up"),
    ("warmup_end", "absolute", "linear approximation error at the end of warm-up",
     "lin. approx. error, end of warm-up (nats)"),
    ("final", "relative", "relative linear approximation error at the final (or last finite) weights",
     "relative lin. approx. error, final weights"),
    ("final", "absolute", "linear approximation error at the final (or last finite) weights",
     "lin. approx. error, final weights (nats)"),
)


def informative_linear_error(rows: pd.DataFrame):
    """(point, kind, words, axis label) of the first measurement of LINEAR_ERROR_PREFERENCE that `rows` (one strategy
    of linear_error.csv) hold with a finite positive value; None when there is none."""
    if rows is None or rows.empty:
        return None
    for point, kind, words, axis in LINEAR_ERROR_PREFERENCE:
        values = pd.to_numeric(rows.loc[rows["point"] == point, f"{kind}_mean"], errors="coerce")
        if (values > 0).any():
            return point, kind, words, axis
    return None


def plot_accuracy(ax, rows: pd.DataFrame, color: str = "#0072B2") -> None:
    """Final test accuracy (solid) and train accuracy (dotted), percent, from accuracy.csv rows of one
    strategy; batch sizes with a diverged seed marked with an X."""
    rows = rows.sort_values("batch_size")
    m = rows["batch_size"].to_numpy(dtype=float)
    for column, style, label, gid in (("test_acc_mean_pct", "-o", "final test accuracy", "accuracy"),
                                      ("train_acc_mean_pct", ":o", "final train accuracy", "train_accuracy")):
        if column not in rows:
            continue
        y = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(m[ok], y[ok], style, color=color, lw=2 if gid == "accuracy" else 1.4, markersize=5,
                    zorder=3, label=f"{label} (mean over seeds)", gid=gid, fillstyle="full" if gid == "accuracy"
                    else "none")
    plot_diverged(ax, rows)


def has_accuracy(rows: pd.DataFrame) -> bool:
    """Whether accuracy.csv rows carry any accuracy (a regression study's are empty)."""
    return any(np.isfinite(pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float)).any()
               for c in ("test_acc_mean_pct", "train_acc_mean_pct") if c in rows)


def plot_diverged(ax, rows: pd.DataFrame) -> None:
    """An X near the bottom of the panel at each batch size where a seed diverged (axes height, so it does
    not pretend to be a value on either y axis)."""
    rows = rows.sort_values("batch_size")
    m = rows["batch_size"].to_numpy(dtype=float)
    diverged = pd.to_numeric(rows["n_diverged"], errors="coerce").to_numpy(dtype=float) > 0
    if diverged.any():
        ax.plot(m[diverged], np.full(int(diverged.sum()), 0.06), "X", color="black", markersize=10,
                linestyle="none", zorder=5, label="a seed diverged", gid="diverged", transform=ax.get_xaxis_transform())


def plot_linear_error(ax, rows: pd.DataFrame, choice, color: str = "#D55E00") -> None:
    """The chosen (point, kind) of linear_error.csv rows of one strategy, mean over seeds, log axis."""
    point, kind, words, axis = choice
    rows = rows[rows["point"] == point].sort_values("batch_size")
    m = rows["batch_size"].to_numpy(dtype=float)
    y = pd.to_numeric(rows[f"{kind}_mean"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(y) & (y > 0)
    ax.plot(m[ok], y[ok], "--s", color=color, lw=2, markersize=6, label=f"{words} (mean over seeds)",
            gid="linear_error")
    ax.set_yscale("log")
    ax.set_ylabel(axis, color=color)
    ax.tick_params(axis="y", colors=color)


def accuracy_error_figure(accuracy: pd.DataFrame, linear_error: pd.DataFrame | None, strategy: str | None = None,
                          study: str = "study") -> Figure:
    """Final test and train accuracy (left axis, %) and the most informative linear approximation error
    available (right axis, log; `informative_linear_error`) against batch size for one strategy (default
    LSR, else the first)."""
    if accuracy is None or accuracy.empty:
        return message_figure(f"{study}: accuracy", "the study has no accuracy table")
    strategies = list(dict.fromkeys(accuracy["strategy"].astype(str)))
    strategy = strategy or ("lsr" if "lsr" in strategies else strategies[0])
    rows = accuracy[accuracy["strategy"].astype(str) == strategy]
    errors = None if linear_error is None else linear_error[linear_error["strategy"].astype(str) == strategy]
    choice = informative_linear_error(errors)
    what = choice[2] if choice else "no linear approximation error in the traces"
    fig, axes = new_figure(1, 1, panel=(8.5, 5.0))
    ax = axes[0, 0]
    sizes = rows["batch_size"].to_numpy(dtype=float)
    if not has_accuracy(rows):
        # regression: no accuracy axis at all (an empty one would read as 0%)
        ax.set_title(wrap_title(f"{study}: {strategy_style(strategy)['label']}\n{what} (no accuracy: a regression task)",
                                fig.get_figwidth()), fontsize=11)
        if choice is not None:
            plot_linear_error(ax, errors, choice)
        plot_diverged(ax, rows)
        batch_axis(ax, sizes)
        ax.set_xlim(batch_edges(sizes)[0], batch_edges(sizes)[-1])
        ax.grid(True, color="0.9", lw=0.6)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=1, fontsize=9, frameon=False)
        return fig
    title = f"{study}: {strategy_style(strategy)['label']}\nfinal accuracy and {what}"
    plot_accuracy(ax, rows)
    batch_axis(ax, sizes)
    ax.set_xlim(batch_edges(sizes)[0], batch_edges(sizes)[-1])
    ax.set_ylabel("final accuracy (%)", color="#0072B2")
    ax.tick_params(axis="y", colors="#0072B2")
    ax.grid(True, color="0.9", lw=0.6)
    handles, labels = ax.get_legend_handles_labels()
    if choice is not None:
        right = ax.twinx()
        plot_linear_error(right, errors, choice)
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    fig.legend(handles, labels, loc="outside lower center", ncols=1, fontsize=9, frameon=False)
    ax.set_title(wrap_title(title, fig.get_figwidth()), fontsize=11)
    return fig


@figure("fig2_accuracy_linear_error")
def fig2_accuracy_linear_error(study: FigureInputs) -> Figure:
    """Paper Fig. 2 (right): final accuracy and the linear approximation error against batch size."""
    return accuracy_error_figure(study.tables.get("accuracy"), study.tables.get("linear_error"), study=study.title)
