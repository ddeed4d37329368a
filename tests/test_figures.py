"""Figures from a small synthetic cube, checked through their matplotlib artists."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.contour import ContourSet

from batchscale import figures
from batchscale.analysis import tables
from batchscale.analysis.external import analyze_external

STRATEGIES = ["blr", "lsr", "srsr"]
SIZES = [8, 16, 32, 64]
SEEDS = [0, 1]
EPOCHS_STEPS = {8: 400, 16: 200, 32: 100, 64: 50}  # fixed epochs: steps fall as 1/m
STUDY = {
    "base_batch": 8,
    "description": "synthetic",
    "threshold": "lower_quartile_of_largest",
    "metrics": ["train_loss", "test_loss", "test_error"],
    "regimes": {"linear_efficiency": 0.8, "stagnation_gain": 0.1},
    "bootstrap": {"samples": 50, "confidence": 0.9},
}
DIVERGED = ("lsr", 64, 1)  # (strategy, batch size, seed)


def _grid(total: int) -> list[int]:
    """A run's evaluation points: a shared log grid (5 per decade) below its end, plus its final step."""
    log_grid = sorted({0} | {int(round(10 ** (i / 5))) for i in range(0, 14)})
    return sorted({s for s in log_grid if s < total} | {total})


def _loss(steps, m, strategy, seed):
    speed = {"blr": 1.0, "lsr": 1.6, "srsr": 1.3}[strategy]
    tau = 60.0 * (1 + 24.0 / m) / speed  # k(m) ~ S_min (1 + B/m): saturating speedup
    t = np.asarray(steps, dtype=float)
    return 0.05 + 2.25 / (1.0 + (t / tau) ** 1.5) * (1 + 0.02 * seed)


def make_cube() -> xr.Dataset:
    steps = sorted({s for total in EPOCHS_STEPS.values() for s in _grid(total)})
    index = {s: i for i, s in enumerate(steps)}
    shape = (len(STRATEGIES), len(SIZES), len(SEEDS), len(steps))
    train = np.full(shape, np.nan)
    status = np.full(shape[:3], "completed", dtype=object)
    for a, strategy in enumerate(STRATEGIES):
        for b, m in enumerate(SIZES):
            for c, seed in enumerate(SEEDS):
                own = _grid(EPOCHS_STEPS[m])
                values = _loss(own, m, strategy, seed)
                if (strategy, m, seed) == DIVERGED:
                    own, values = own[:5], np.array(list(values[:4]) + [np.inf])
                    status[a, b, c] = "diverged"
                train[a, b, c, [index[s] for s in own]] = values
    test = train * 1.1 + 0.05
    acc = np.where(np.isfinite(train), 1.0 - np.minimum(train, 2.0) / 2.2, np.nan)
    final_acc = np.nanmin(np.where(np.isfinite(acc), acc, np.inf), axis=-1)
    final_acc[np.isinf(final_acc)] = np.nan
    sizes = np.array(SIZES, dtype=float)[None, :, None]
    lin_err = np.broadcast_to(1e-4 * (sizes / 8.0) ** 2, shape[:3]).copy()
    lin_err[status == "diverged"] = np.nan
    run = ("strategy", "batch_size", "seed")
    dims = run + ("step",)
    return xr.Dataset(
        {"train_loss": (dims, train), "test_loss": (dims, test), "test_acc": (dims, acc),
         "status": (run, status.astype(str)), "final_test_acc": (run, final_acc),
         "final_linear_approx_error": (run, lin_err)},
        coords={"strategy": STRATEGIES, "batch_size": np.array(SIZES, dtype=np.int64),
                "seed": np.array(SEEDS, dtype=np.int64), "step": np.array(steps, dtype=np.int64)},
        attrs={"study": "toy_study", "base_batch": 8, "study_config_json": json.dumps(STUDY)},
    )


@pytest.fixture(scope="module")
def cube():
    return make_cube()


@pytest.fixture(scope="module")
def table(cube):
    return tables.speedup_table(cube, STUDY)


def _panels(fig):
    """Data axes: those with a title (colorbars and twin axes have none)."""
    return [ax for ax in fig.axes if ax.get_title()]


def _is_log2(axis) -> bool:
    return axis.get_scale() == "log" and axis.get_transform().base == 2


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_run_on_grid_uses_only_the_runs_own_points():
    steps = np.array([0, 1, 10, 100, 1000], dtype=float)
    values = np.array([5.0, 1.0, np.nan, 0.01, np.nan])  # NaN: another run's point / past its end
    out = figures.run_on_grid(steps, values, np.array([1, 10, 100, 1000], dtype=float))
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(0.1)  # log-log interpolation between (1, 1) and (100, 0.01)
    assert out[2] == pytest.approx(0.01)
    assert np.isnan(out[3])  # never extrapolated past the run's end


def test_contour_grid_blank_past_end_and_filled_at_other_runs_points(cube):
    sizes, grid, z = figures.contour_grid(cube, "train_loss", "blr")
    col = list(sizes).index(64)
    assert np.isnan(z[grid > 50, col]).all()  # bs64 ran 50 steps
    assert np.isfinite(z[(grid >= 1) & (grid <= 50), col]).all()
    # step 100 is only on the grids of the smaller batch sizes; bs32's own final step, interpolated for bs16
    assert 100 in grid and np.isfinite(z[list(grid).index(100), list(sizes).index(16)])


def test_contour_figure(cube):
    eps = tables.study_thresholds(cube, "train_loss", STUDY["threshold"])
    fig = figures.contour_figure(cube, "train_loss", eps, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == len(STRATEGIES)
    for ax, strategy in zip(panels, STRATEGIES):
        assert _is_log2(ax.xaxis) and ax.get_yscale() == "log"
        assert "batch size" in ax.get_xlabel() and "examples per step" in ax.get_xlabel()
        levels = [c for c in ax.collections if isinstance(c, ContourSet) and c.get_gid() == "threshold"]
        assert len(levels) == 1
        assert levels[0].levels[0] == pytest.approx(math.log10(eps[strategy][0]))
        assert f"{eps[strategy][0]:.3g}" in ax.get_title()
    assert "iterations" in panels[0].get_ylabel()
    assert any("log10 train loss (nats)" in ax.get_ylabel() for ax in fig.axes)  # the colorbar
    title = fig.get_suptitle()
    assert "toy_study" in title and "threshold" in title
    assert any("diverged" in t for t in _legend_texts(fig))
    diverged = [line for ax in panels for line in ax.lines if line.get_gid() == "diverged"]
    assert len(diverged) == 1


def test_speedup_figure(table):
    fig = figures.speedup_figure(table, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == 3 * (len(STRATEGIES) + 1)  # metrics x (strategies + overlay)
    for ax in panels:
        assert _is_log2(ax.xaxis) and _is_log2(ax.yaxis)
        assert [line.get_gid() for line in ax.lines].count("ideal") == 1
    curves = [[line for line in ax.lines if line.get_gid() == "speedup"] for ax in panels[:4]]
    assert [len(c) for c in curves] == [1, 1, 1, len(STRATEGIES)]
    assert "speedup" in panels[0].get_ylabel()
    assert "batch size" in panels[-1].get_xlabel()
    assert any(patch.get_gid() == "regime-linear" for patch in panels[0].patches)
    eps = table[(table.strategy == "blr") & (table.metric == "train_loss")]["threshold"].iloc[0]
    assert f"{eps:.3g}" in panels[0].get_title()
    texts = _legend_texts(fig)
    assert any(t.startswith("ideal") for t in texts)
    assert sum(t.startswith(("BLR", "LSR", "SRSR")) for t in texts) == 3
    assert any("diverged" in t for t in texts)
    assert "toy_study" in fig.get_suptitle() and "threshold" in fig.get_suptitle()
    lsr = panels[1]  # LSR train loss: the diverged bs64 is marked
    assert any(line.get_gid() == "diverged" for line in lsr.lines)


def test_speedup_marks_batch_sizes_that_never_reach_eps():
    rows = pd.DataFrame({
        "strategy": "blr", "batch_size": [4, 8, 16], "metric": "train_loss", "threshold": 0.5,
        "threshold_rule": "fixed:0.5", "base_batch": 4, "k_mean": [100.0, 50.0, np.inf],
        "speedup": [1.0, 2.0, 0.0], "speedup_low": [1.0, 1.8, 0.0], "speedup_high": [1.0, 2.2, 0.0],
        "ideal_speedup": [1.0, 2.0, 4.0], "regime": ["linear", "linear", "not_reached"],
        "status": ["completed", "completed", "not_reached"]})
    fig = figures.speedup_figure(rows, study="s")
    ax = _panels(fig)[0]
    marked = [line for line in ax.lines if line.get_gid() == "not_reached"]
    assert len(marked) == 1 and list(marked[0].get_xdata()) == [16]
    assert any("never reached" in t for t in _legend_texts(fig))


def test_accuracy_linear_error_figure(cube):
    fig = figures.accuracy_error_figure(cube, study="toy_study")
    left, right = fig.axes
    assert "toy_study" in left.get_title() and "LSR" in left.get_title()
    assert _is_log2(left.xaxis) and right.get_yscale() == "log"
    assert "accuracy (%)" in left.get_ylabel() and "linear approximation error" in right.get_ylabel()
    assert [line.get_gid() for line in left.lines].count("accuracy") == 1
    assert [line.get_gid() for line in right.lines].count("linear_error") == 1
    diverged = [line for line in left.lines if line.get_gid() == "diverged"]
    assert len(diverged) == 1 and list(diverged[0].get_xdata()) == [64]
    assert len(_legend_texts(fig)) >= 3


def test_steps_vs_examples_figure(table):
    fig = figures.steps_examples_figure(table, None, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == len(STRATEGIES)
    for ax in panels:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "examples" in ax.get_xlabel() and "steps" in ax.get_ylabel()
        gids = [line.get_gid() for line in ax.lines]
        assert gids.count("fit") == 1 and gids.count("b_crit") == 1 and gids.count("measured") == 1
    blr = table[(table.strategy == "blr") & (table.metric == "train_loss")]
    fit = figures.ms.fit_critical_batch(blr.batch_size, blr.k_mean)
    star = [line for line in panels[0].lines if line.get_gid() == "b_crit"][0]
    assert star.get_xdata()[0] == pytest.approx(2 * fit["E_min"])
    assert any("B_crit" in t for t in _legend_texts(fig))
    assert "toy_study" in fig.get_suptitle()


def test_loss_curves_figure(cube):
    eps = tables.study_thresholds(cube, "train_loss", STUDY["threshold"])
    fig = figures.loss_curves_figure(cube, eps, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == len(STRATEGIES)
    for ax, strategy in zip(panels, STRATEGIES):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert sum(str(line.get_gid()).startswith("bs") for line in ax.lines) == len(SIZES)
        threshold = [line for line in ax.lines if line.get_gid() == "threshold"]
        assert len(threshold) == 1 and threshold[0].get_ydata()[0] == pytest.approx(eps[strategy][0])
    texts = _legend_texts(fig)
    assert [t for t in texts if t.isdigit()] == [str(m) for m in SIZES]
    assert "threshold" in fig.get_suptitle() and "toy_study" in fig.get_suptitle()


def test_draw_study_figures_writes_every_file(cube, table, tmp_path):
    cube_path, csv_path = tmp_path / "cube.nc", tmp_path / "speedup.csv"
    cube.to_netcdf(cube_path, engine="h5netcdf")
    table.to_csv(csv_path, index=False)
    out = tmp_path / "figures"
    paths = figures.draw_study_figures(cube_path, STUDY, out, csv_path)
    expected = {f"{name}.{ext}" for name in figures.STUDY_FIGURES for ext in ("png", "svg")}
    assert len(paths) == 12 and {p.name for p in paths} == expected
    assert {p.name for p in out.iterdir()} == expected
    assert all(p.stat().st_size > 1000 for p in paths)


def test_saved_files_are_deterministic(table, tmp_path):
    rows = table[table.metric == "train_loss"]
    first = figures.save_figure(figures.speedup_figure(rows, study="s"), tmp_path / "a", "f")
    second = figures.save_figure(figures.speedup_figure(rows, study="s"), tmp_path / "b", "f")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()


def test_draw_comparison(cube, tmp_path):
    paths = []
    for name, scale in (("small", 1.0), ("large", 0.5)):
        other = cube.copy(deep=True)
        other["train_loss"] = other["train_loss"] * scale
        other.attrs["study"] = name
        path = tmp_path / f"{name}.nc"
        other.to_netcdf(path, engine="h5netcdf")
        paths.append(path)
    spec = {"studies": ["large", "small"], "labels": ["big data", "small data"], "strategy": "blr"}
    out = figures.draw_comparison(paths, spec, {"large": STUDY, "small": STUDY}, tmp_path / "cmp", "sizes")
    assert [p.name for p in out] == ["speedup.png", "speedup.svg"] and all(p.exists() for p in out)
    curves = figures.comparison_tables({"large": make_cube(), "small": cube}, spec, {"large": STUDY, "small": STUDY})
    fig = figures.comparison_figure(curves, title="sizes")
    ax = fig.axes[0]
    assert [line.get_gid() for line in ax.lines].count("speedup") == 2
    assert [line.get_gid() for line in ax.lines].count("ideal") == 1
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("big data (\u03b5 = ") for t in texts) and any(t.startswith("ideal") for t in texts)
    assert _is_log2(ax.xaxis) and "lower quartile" in fig.get_suptitle()


def test_external_figure_hook(tmp_path):
    rows = [{"batch_size": m, "seed": s, "step": t, "loss": float(_loss([t], m, "blr", s)[0])}
            for m in SIZES for s in SEEDS for t in _grid(EPOCHS_STEPS[m])]
    csv = tmp_path / "sweep.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    written = []
    analyze_external(csv, tmp_path / "out", bootstrap={"samples": 50},
                     figure_hook=lambda result, out: written.extend(figures.draw_external_figures(result, out)))
    assert sorted(p.name for p in written) == ["speedup.png", "speedup.svg", "steps_vs_examples.png",
                                               "steps_vs_examples.svg"]
    assert all(p.exists() for p in written)
