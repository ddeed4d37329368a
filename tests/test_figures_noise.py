"""The noise-scale panels draw exactly the numbers they are given."""

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from batchscale.report.figures.noise import plot_local_critical_batch, plot_noise_scale


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def test_noise_scale_lines_and_critical_batch():
    table = pd.DataFrame({
        "strategy": ["blr"] * 3 + ["lsr"] * 3, "batch_size": [4] * 3 + [16] * 3, "seed": [0] * 6,
        "step": [1, 10, 100, 1, 10, 100], "b_simple": [5.0, 8.0, np.nan, 6.0, 12.0, 30.0],
    })
    critical = pd.DataFrame({"strategy": ["blr", "lsr"], "B_crit": [64.0, np.nan], "B_crit_low": [40.0, np.nan],
                             "B_crit_high": [100.0, np.nan], "B_crit_overhead": [32.0, 50.0]})
    ax = Figure().add_subplot()
    plot_noise_scale(ax, table, critical)
    line, = by_gid(ax, "b_simple blr 4 0")
    np.testing.assert_array_equal(line.get_xdata(), [1.0, 10.0])  # the NaN point is not drawn
    np.testing.assert_array_equal(line.get_ydata(), [5.0, 8.0])
    line, = by_gid(ax, "b_simple lsr 16 0")
    np.testing.assert_array_equal(line.get_ydata(), [6.0, 12.0, 30.0])
    b_crit, = by_gid(ax, "B_crit blr")
    assert list(b_crit.get_ydata()) == [64.0, 64.0]
    band, = by_gid(ax, "B_crit interval blr")
    box = band.get_bbox()  # a Rectangle: x in axes fraction, y in data units
    assert (box.y0, box.y1) == (40.0, 100.0)
    assert [list(a.get_ydata()) for a in by_gid(ax, "B_crit_overhead lsr")] == [[50.0, 50.0]]
    assert not by_gid(ax, "B_crit lsr") and not by_gid(ax, "B_crit interval lsr")  # NaN: nothing drawn
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    exact_ax = Figure().add_subplot()
    plot_noise_scale(exact_ax, table.assign(b_simple_exact=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), y="b_simple_exact")
    line, = by_gid(exact_ax, "b_simple_exact blr 4 0")
    np.testing.assert_array_equal(line.get_ydata(), [1.0, 2.0, 3.0])


def test_local_critical_batch_brackets():
    table = pd.DataFrame({
        "checkpoint_examples": [160, 1600, 16000, 32000],
        "local_critical_batch": [64.0, 256.0, 16.0, 32.0],
        "upper_bracket": [128.0, math.inf, 32.0, 64.0],
        "bracket": ["interval", "at_least", "below", "interval"],
    })
    ax = Figure().add_subplot()
    plot_local_critical_batch(ax, table)
    container = ax.containers[0]
    data_line, _caps, (bars,) = container.lines
    np.testing.assert_array_equal(data_line.get_xdata(), [160, 32000])
    np.testing.assert_array_equal(data_line.get_ydata(), [64.0, 32.0])
    segments = [seg[:, 1].tolist() for seg in bars.get_segments()]
    assert segments == [[64.0, 128.0], [32.0, 64.0]]  # from the lower to the upper bracket
    at_least, = by_gid(ax, "at_least")
    assert (list(at_least.get_xdata()), list(at_least.get_ydata())) == ([1600.0], [256.0])
    below, = by_gid(ax, "below")
    assert (list(below.get_xdata()), list(below.get_ydata())) == ([16000.0], [32.0])


def test_noise_figure_labels_keep_apart_with_the_exact_row():
    """Issue 23: the two rows' y labels ran into each other; now short, on the first column, one legend."""
    from figure_text import collisions

    from batchscale.report.figures.noise import noise_scale_figure

    rows = [{"strategy": s, "batch_size": m, "seed": 0, "examples_seen": x, "b_simple": 50.0 + x / 100,
             "b_simple_exact": 55.0 + x / 100} for s in ("blr", "lsr") for m in (4, 16, 64) for x in (10, 100, 1000)]
    versus = pd.DataFrame({"strategy": ["blr", "lsr"], "B_crit": [20.0, 40.0], "B_crit_low": [10.0, 30.0],
                           "B_crit_high": [30.0, 50.0], "B_crit_overhead": [15.0, 25.0]})
    fig = noise_scale_figure(pd.DataFrame(rows), versus, "toy")
    assert collisions(fig) == []
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["B_simple, two-batch (examples)", "", "B_simple, exact (examples)", ""]
    assert "tr \u03a3 / |G|\u00b2" in fig.get_suptitle() and len(fig.legends) == 1
