"""The critical_vs_threshold figure from a hand-made critical_vs_threshold.csv, and its message when the
analysis did not write the table."""

import numpy as np
import pandas as pd
import pytest

from batchscale.report.figures import critical_threshold
from batchscale.report.figures.registry import FIGURES, FigureInputs

COLUMNS = ["strategy", "metric", "quantile", "threshold", "b_crit", "low", "high", "interval_kind", "bound",
           "log_rmse", "accepted", "overhead_critical_batch", "overhead_low", "overhead_high"]


def table() -> pd.DataFrame:
    rows = [
        # lsr, train loss: two accepted fits, one rejected, one bound above the measured sizes
        ("lsr", "train_loss", 0.1, 0.05, 20.0, 15.0, 26.0, "percentile_bootstrap", "", 0.08, True, 12.0, 10.0, 15.0),
        ("lsr", "train_loss", 0.25, 0.09, 35.0, 28.0, 44.0, "percentile_bootstrap", "", 0.11, True, 16.0, 12.0, 20.0),
        ("lsr", "train_loss", 0.5, 0.2, 60.0, 30.0, 90.0, "percentile_bootstrap", "", 0.4, False, 20.0, np.nan, np.nan),
        ("lsr", "train_loss", 0.75, 0.4, np.nan, np.nan, np.nan, "none", "> 128", 0.05, True, np.nan, np.nan, np.nan),
        # blr: a bound below the measured sizes
        ("blr", "train_loss", 0.25, 0.09, np.nan, np.nan, np.nan, "none", "< 4", 0.02, True, 5.0, 4.0, 6.0),
        ("tuned", "test_loss", 0.25, 0.3, 50.0, 40.0, 60.0, "student_t", "", 0.1, "True", np.nan, np.nan, np.nan),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def lines(ax, gid):
    return [line for line in ax.lines if line.get_gid() == gid]


def test_bound_text_is_read_with_its_direction():
    assert critical_threshold.bound_of("> 128") == ("above", 128.0)
    assert critical_threshold.bound_of("<4") == ("below", 4.0)
    assert critical_threshold.bound_of("") is None and critical_threshold.bound_of(np.nan) is None


def test_figure_draws_accepted_rejected_bounds_and_overhead():
    fig = critical_threshold.critical_vs_threshold_figure(table(), sizes=[4, 8, 16, 32, 64, 128], study="toy")
    train, test = fig.axes[:2]
    assert "train loss" in train.get_title() and "percentile bootstrap" in train.get_title()
    assert train.get_xscale() == "log" and train.get_yscale() == "log"
    (accepted,) = lines(train, "accepted lsr")
    assert list(accepted.get_xdata()) == [0.05, 0.09] and list(accepted.get_ydata()) == [20.0, 35.0]
    (rejected,) = lines(train, "rejected lsr")
    assert list(rejected.get_xdata()) == [0.2] and rejected.get_markerfacecolor() == "white"
    (above,) = lines(train, "bound lsr")
    assert above.get_marker() == "^" and list(above.get_ydata()) == [128.0]
    (below,) = lines(train, "bound blr")
    assert below.get_marker() == "v" and list(below.get_ydata()) == [4.0]
    (overhead,) = lines(train, "overhead lsr")
    assert list(overhead.get_ydata()) == [12.0, 16.0, 20.0]
    # the measured range as grey lines; the test-loss panel has the tuned fit (accepted written as text)
    assert sorted(line.get_ydata()[0] for line in train.lines if line.get_gid() is None and
                  len(line.get_xdata()) == 2 and line.get_color() == "0.6") == [4, 128]
    assert list(lines(test, "accepted tuned")[0].get_ydata()) == [50.0]
    assert "q = 0.1, 0.25, 0.5, 0.75" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("rejected fit" in t for t in legend) and any(t.startswith("bound") for t in legend)


@pytest.mark.parametrize("tables, words", [({}, "is absent"),
                                           ({"critical_vs_threshold": pd.DataFrame(columns=COLUMNS)}, "no rows")])
def test_registered_figure_says_why_there_is_nothing_to_draw(tables, words):
    fig = FIGURES["critical_vs_threshold"](FigureInputs(tables, {"batch_sizes": [4, 8]}, "toy"))
    assert any(words in t.get_text() for ax in fig.axes for t in ax.texts)


def test_critical_figure_text_keeps_apart():
    from figure_text import collisions

    assert collisions(critical_threshold.critical_vs_threshold_figure(table(), sizes=[4, 128], study="toy")) == []
