"""The least-squares theory figure and the numbers it draws, from a hand-made theory.json and
speedup_common.csv (batch sizes that are not powers of two, a partly diverged size, an unreached one)."""

import math

import numpy as np
import pandas as pd
import pytest

from batchscale.analysis import least_squares
from batchscale.report.figures.theory_check import theory_figure

SIZES = [4, 8, 16, 64, 72, 76, 78, 80, 84]


def common_table() -> pd.DataFrame:
    rows = []
    for strategy, ks in (("blr", [760, 745, 740, 742, 742, 742, 742, 742, 742]),
                         ("lsr", [760, 376, 188, 48, 44.4, 46.4, 60.0, math.inf, math.inf])):
        for m, k in zip(SIZES, ks):
            diverged = {80: 1, 84: 5}.get(m, 0) if strategy == "lsr" else 0
            rows.append({"strategy": strategy, "batch_size": m, "metric": "train_loss", "threshold": 0.016,
                         "k_mean": k, "k_low": k * 0.98, "k_high": k * 1.02, "interval_kind": "percentile_bootstrap",
                         "n_seeds": 5, "n_reached": 5 - diverged, "n_diverged": diverged})
    rows.append(dict(rows[0], metric="test_loss", k_mean=1.0))
    return pd.DataFrame(rows)


def theory_doc(available: bool = True) -> dict:
    doc = {"lambda_max": 1.0, "batch_sizes": SIZES, "base_batch": 4,
           "prediction": {"available": available, "note": "" if available else "the threshold is not fixed"}}
    if available:
        blr = dict(zip(map(str, SIZES), [770, 755, 750, 745, 745, 745, 745, 745, 745]))
        lsr = dict(zip(map(str, SIZES), [770, 385, 192, 49.4, 48.4, 104.8, None, None, None]))
        doc.update({"predicted_k": {"blr": blr, "lsr": lsr}, "predicted_k_on_grid": {"blr": blr, "lsr": lsr},
                    "spectral_radius": {"blr": {str(m): 0.997 for m in SIZES},
                                        "lsr": dict(zip(map(str, SIZES), [0.997, 0.99, 0.98, 0.95, 0.95, 0.96,
                                                                          1.05, 1.16, 1.38]))},
                    "stability_edges": {"blr": {"gradient_descent": None, "mean_square": None},
                                        "lsr": {"gradient_descent": 79.06, "mean_square": 76.9}}})
    return doc


def test_theory_rows_ratio_and_window():
    numbers = least_squares.theory_figure_numbers(theory_doc(), common_table())
    rows = numbers["rows"]
    assert list(rows["strategy"].unique()) == ["blr", "lsr"] and len(rows) == 2 * len(SIZES)
    lsr = rows[rows.strategy == "lsr"].set_index("batch_size")
    assert lsr.loc[8, "ratio"] == pytest.approx(376 / 385)
    assert np.isnan(lsr.loc[78, "ratio"]) and np.isnan(lsr.loc[80, "ratio"])  # no prediction / not every seed
    assert lsr.loc[80, "diverged_fraction"] == pytest.approx(0.2) and lsr.loc[84, "diverged_fraction"] == 1.0
    # the window: the largest size <= 76.9/1.1 = 69.9 (64) to the smallest >= 79.06·1.1 = 87 (none: the last)
    assert numbers["window"] == (64.0, 84.0)
    # agreement up to the window's lower end: lsr at 4, 8, 16, 64
    expected = max(abs(760 / 770 - 1), abs(376 / 385 - 1), abs(188 / 192 - 1), abs(48 / 49.4 - 1))
    assert numbers["agreement"]["lsr"] == {"max_deviation": pytest.approx(expected), "up_to": 64}
    assert numbers["threshold"] == 0.016 and set(numbers["edges"]) == {"lsr"}


def test_breakdown_agrees_on_a_fine_grid_of_batch_sizes():
    assert least_squares.breakdown_agrees(80, 76) is True  # between m = 40 and 80
    assert least_squares.breakdown_agrees(80, 36) is False


def test_theory_figure_draws_prediction_measurement_and_edge():
    fig = theory_figure(theory_doc(), common_table())
    left, middle, right = fig.axes[:3]
    predicted = [line for line in left.lines if line.get_gid() == "predicted lsr"][0]
    assert list(predicted.get_xdata()) == [4, 8, 16, 64, 72, 76]
    np.testing.assert_allclose(predicted.get_ydata(), [770, 385, 192, 49.4, 48.4, 104.8])
    missing = [line for line in left.lines if line.get_gid() == "not reached lsr"][0]
    assert list(missing.get_xdata()) == [80, 84]
    ratio = [line for line in middle.lines if line.get_gid() == "ratio lsr"][0]
    assert ratio.get_ydata()[-1] == pytest.approx(0.8)  # 46.4 / 104.8 = 0.44, drawn at the panel's edge
    assert any(t.get_text() == "\u00d70.44" for t in middle.texts)
    diverged = [line for line in right.lines if line.get_gid() == "diverged lsr"][0]
    assert list(diverged.get_xdata()) == [64, 72, 76, 78, 80, 84]
    np.testing.assert_allclose(diverged.get_ydata(), [0, 0, 0, 0, 0.2, 1.0])
    edges = {line.get_gid(): line.get_xdata()[0] for line in right.lines if "edge" in str(line.get_gid())}
    assert edges == {"gd edge": 79.06, "mean-square edge": 76.9}
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("within 2.8% up to m = 64" in t for t in labels)
    # every labelled tick of the right panel is at least (84 - 64)/11 apart
    ticks = sorted(right.get_xticks())
    assert min(np.diff(ticks)) >= 20 / 11 - 1e-9


def test_theory_figure_without_a_prediction_says_why():
    fig = theory_figure(theory_doc(available=False), common_table())
    assert "the threshold is not fixed" in fig.get_suptitle()
    left = fig.axes[0]
    assert not any(str(line.get_gid()).startswith("predicted") and len(line.get_xdata()) for line in left.lines)


def test_theory_figure_text_keeps_apart():
    from figure_text import collisions

    assert collisions(theory_figure(theory_doc(), common_table())) == []
