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
