"""Figures from a small synthetic cube and its analysis tables, checked through their matplotlib artists;
and a check that no figure module measures anything itself."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.contour import ContourSet

from batchscale.analysis import trace_grids
from batchscale.report import figures
from batchscale.analysis.study import study_tables, write_tables
from batchscale.report.figures import base, comparison, contours, loss_curves, speedup, steps_examples
from batchscale.report.figures import accuracy_error
from batchscale.report.figures.registry import FIGURES, FigureInputs
from batchscale.spec.manifest import NOISE_FIGURES, STUDY_FIGURES, TUNED_FIGURES, names
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
    # relative linear approximation error along training: 0.01 * m/8 at every evaluation point
    rel_trace = np.where(np.isfinite(train), 0.01 * sizes[..., None] / 8.0, np.nan)
    run = ("strategy", "batch_size", "seed")
    dims = run + ("step",)
    return xr.Dataset(
        {"train_loss": (dims, train), "test_loss": (dims, test), "test_acc": (dims, acc),
         "status": (run, status.astype(str)), "final_test_acc": (run, final_acc),
         "final_linear_approx_error": (run, lin_err), "linear_approx_error_rel": (dims, rel_trace)},
        coords={"strategy": STRATEGIES, "batch_size": np.array(SIZES, dtype=np.int64),
                "seed": np.array(SEEDS, dtype=np.int64), "step": np.array(steps, dtype=np.int64)},
        attrs={"study": "toy_study", "base_batch": 8, "study_config_json": json.dumps(STUDY)},
    )


@pytest.fixture(scope="module")
def cube():
    return make_cube()


@pytest.fixture(scope="module")
def analysis(cube):
    return study_tables(cube, STUDY)


@pytest.fixture(scope="module")
def table(analysis):
    return analysis["speedup"]


def _panels(fig):
    """Data axes: those with a title (colorbars and twin axes have none)."""
    return [ax for ax in fig.axes if ax.get_title()]


def _is_log2(axis) -> bool:
    return axis.get_scale() == "log" and axis.get_transform().base == 2


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_no_figure_module_measures_anything():
    """Figures draw what the analysis computed: no module under report/figures/ imports a measuring module of
    the analysis or a fitting, bootstrap, interval or threshold function, nor calls one through an
    attribute; from the analysis they read cube traces (accessors), traces on a step grid (trace_grids) and
    the theory figure's numbers (least_squares.theory_figure_numbers) only."""
    allowed = {"batchscale.analysis.accessors": None, "batchscale.analysis.trace_grids": None,
               "batchscale.analysis.least_squares": {"theory_figure_numbers"},
               "batchscale.analysis.headline": {"HEADLINE_METRIC"}}
    words = ("fit", "bootstrap", "threshold", "interval", "quantile", "regime")
    folder = Path(figures.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "base", "contours", "speedup", "accuracy_error",
                                         "steps_examples", "loss_curves", "comparison", "noise", "tuned",
                                         "theory_check", "registry"}
    for path in modules:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names_ = [(a.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names_ = [(node.module or "", a.name) for a in node.names]
            else:
                names_ = []
            for module, name in names_:
                assert module != "scipy" and not module.startswith("scipy."), (path, module)
                if module.startswith("batchscale.analysis"):
                    assert module in allowed, (path, module)
                    assert allowed[module] is None or name in allowed[module], (path, module, name)
                    assert not any(w in name.lower() for w in words), (path, name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert not node.func.attr.startswith(("fit_", "bootstrap", "threshold_from", "study_threshold",
                                                      "seed_interval", "critical_batch")), (path, node.func.attr)


def test_every_figure_of_the_manifest_is_registered_once():
    """The figures rule draws STUDY_FIGURES and TUNED_FIGURES by name: each has one drawing function."""
    assert set(names(STUDY_FIGURES + TUNED_FIGURES + NOISE_FIGURES)) <= set(FIGURES)


def test_run_on_grid_uses_only_the_runs_own_points():
    steps = np.array([0, 1, 10, 100, 1000], dtype=float)
    values = np.array([5.0, 1.0, np.nan, 0.01, np.nan])  # NaN: another run's point / past its end
    out = trace_grids.run_on_grid(steps, values, np.array([1, 10, 100, 1000], dtype=float))
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(0.1)  # log-log interpolation between (1, 1) and (100, 0.01)
    assert out[2] == pytest.approx(0.01)
    assert np.isnan(out[3])  # never extrapolated past the run's end


def test_contour_grid_blank_past_end_and_filled_at_other_runs_points(cube):
    sizes, grid, z = trace_grids.contour_grid(cube, "train_loss", "blr")
    col = list(sizes).index(64)
    assert np.isnan(z[grid > 50, col]).all()  # bs64 ran 50 steps
    assert np.isfinite(z[(grid >= 1) & (grid <= 50), col]).all()
    # step 100 is only on the grids of the smaller batch sizes; bs32's own final step, interpolated for bs16
    assert 100 in grid and np.isfinite(z[list(grid).index(100), list(sizes).index(16)])


def test_contour_figure_draws_the_tables_eps_and_k(cube, table):
    fig = contours.contour_figure(cube, "train_loss", table, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == len(STRATEGIES)
    for ax, strategy in zip(panels, STRATEGIES):
        rows = table[(table.strategy == strategy) & (table.metric == "train_loss")]
        eps = rows.threshold.iloc[0]
        assert _is_log2(ax.xaxis) and ax.get_yscale() == "log"
        assert "batch size" in ax.get_xlabel() and "examples per step" in ax.get_xlabel()
        levels = [c for c in ax.collections if isinstance(c, ContourSet) and c.get_gid() == "threshold"]
        assert len(levels) == 1 and levels[0].levels[0] == pytest.approx(math.log10(eps))
        assert f"{eps:.3g}" in ax.get_title()
        # the k of the tables (mean of per-seed k), not a level read off the seed-mean surface
        dots = [line for line in ax.lines if line.get_gid() == "k_table"][0]
        finite = rows[np.isfinite(rows.k_mean)].sort_values("batch_size")
        np.testing.assert_allclose(dots.get_ydata(), finite.k_mean)
    never = [line for ax in panels for line in ax.lines if line.get_gid() == "k_not_reached"]
    assert [list(line.get_xdata()) for line in never] == [[64]]  # lsr 64: a seed diverged
    title = " ".join(fig.get_suptitle().split())  # titles wrap to the figure width
    assert "mean of each seed's k" in title and "seed-mean" in title
    assert any("diverged" in t for t in _legend_texts(fig))


def test_speedup_figure_overlays_at_the_common_eps(analysis, table):
    common = analysis["speedup_common"]
    fig = speedup.speedup_figure(table, common, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == 3 * (len(STRATEGIES) + 1)  # metrics x (strategies + overlay)
    for ax in panels:
        assert _is_log2(ax.xaxis) and _is_log2(ax.yaxis)
        assert [line.get_gid() for line in ax.lines].count("ideal") == 1
    curves = [[line for line in ax.lines if line.get_gid() == "speedup"] for ax in panels[:4]]
    assert [len(c) for c in curves] == [1, 1, 1, len(STRATEGIES)]
    # per-strategy panels: own eps; the overlay: the common eps, named, and the common table's speedups
    own = table[(table.strategy == "blr") & (table.metric == "train_loss")]
    assert f"{own.threshold.iloc[0]:.3g}" in panels[0].get_title()
    eps_common = common[common.metric == "train_loss"].threshold.iloc[0]
    assert "common" in panels[3].get_title() and f"{eps_common:.3g}" in panels[3].get_title()
    srsr = common[(common.strategy == "srsr") & (common.metric == "train_loss")].sort_values("batch_size")
    drawn = [line for line in panels[3].lines if line.get_gid() == "speedup"][2]
    np.testing.assert_allclose(drawn.get_ydata(), srsr.speedup[np.isfinite(srsr.speedup)])
    shaded = {patch.get_gid() for patch in panels[0].patches}
    assert shaded == {f"regime-{r}" for r in own.regime if r in base.REGIME_STYLES}  # the table's regimes
    assert "student t" in fig.get_suptitle()  # the interval kind of two seeds
    texts = _legend_texts(fig)
    assert sum(t.startswith(("BLR", "LSR", "SRSR")) for t in texts) == 3
    assert any("diverged" in t for t in texts)
    # without the common table the overlay says its curves are not like for like
    alone = speedup.speedup_figure(table, study="toy_study")
    assert "not like for like" in _panels(alone)[3].get_title()


def test_speedup_marks_batch_sizes_that_never_reach_eps_and_draws_no_missing_bar():
    rows = pd.DataFrame({
        "strategy": "blr", "batch_size": [4, 8, 16], "metric": "train_loss", "threshold": 0.5,
        "threshold_rule": "fixed:0.5", "base_batch": 4, "k_mean": [100.0, 50.0, np.inf],
        "speedup": [1.0, 2.0, np.nan], "speedup_low": [np.nan, np.nan, np.nan],
        "speedup_high": [np.nan, np.nan, np.nan], "speedup_interval_kind": "none",
        "ideal_speedup": [1.0, 2.0, 4.0], "regime": ["base", "linear", "not_reached"],
        "status": ["completed", "completed", "not_reached"]})
    fig = speedup.speedup_figure(rows, study="s")
    ax = _panels(fig)[0]
    marked = [line for line in ax.lines if line.get_gid() == "not_reached"]
    assert len(marked) == 1 and list(marked[0].get_xdata()) == [16]
    assert any("never reached" in t for t in _legend_texts(fig))
    bars = [c for c in ax.collections if c.get_segments()]
    for bar in bars:  # one seed: no interval, so every bar has zero length
        assert all(np.allclose(seg[0], seg[1]) for seg in bar.get_segments())
    assert "none (one seed)" in fig.get_suptitle()


def _errorbar_lines(ax, gid):
    return [line for line in ax.lines if line.get_gid() == gid]


def accuracy_table() -> pd.DataFrame:
    """accuracy.csv by hand: 98-99% test accuracy, sd 0.1-0.4 points, one diverged seed (lsr at m = 64)."""
    rows = []
    for i, strategy in enumerate(STRATEGIES):
        for j, m in enumerate(SIZES):
            rows.append({"strategy": strategy, "batch_size": m, "test_acc_mean_pct": 98.9 - 0.2 * j - 0.1 * i,
                         "test_acc_sd_pct": 0.1 * (j + 1), "train_acc_mean_pct": 100.0 - 0.3 * j,
                         "train_acc_sd_pct": 0.05, "n_seeds": 2, "n_diverged": int((strategy, m) == DIVERGED[:2])})
    return pd.DataFrame(rows)


def test_accuracy_figure_draws_every_strategy_with_intervals_on_an_honest_axis():
    accuracy = accuracy_table()
    fig = accuracy_error.accuracy_figure(accuracy, study="toy_study", test_size=360, classes=10)
    test, train = fig.axes[:2]
    for ax, name in ((test, "test_acc"), (train, "train_acc")):
        for strategy in STRATEGIES:
            (line,) = _errorbar_lines(ax, f"{name} {strategy}")
            rows = accuracy[accuracy.strategy == strategy].sort_values("batch_size")
            np.testing.assert_allclose(line.get_ydata(), rows[f"{name}_mean_pct"])
    # bars are mean ± sd, and say so
    bars = [c for c in test.containers if c.lines[0].get_gid() == "test_acc lsr"][0].lines[2][0]  # (data, caps, bars)
    lsr = accuracy[accuracy.strategy == "lsr"].sort_values("batch_size")
    np.testing.assert_allclose([seg[1][1] - seg[0][1] for seg in bars.get_segments()], 2 * lsr.test_acc_sd_pct)
    assert "bars: mean \u00b1 sd over seeds" in test.get_title().replace("\n", " ")
    bottom, top = test.get_ylim()
    assert (bottom, top) == (90.0, 100.5) and train.get_ylim() == test.get_ylim()
    assert "360 test examples: one is 0.28 points" in test.get_title().replace("\n", " ")
    # chance (10%) lies below this axis: not drawn; the diverged seed is marked in its strategy's panel
    assert not [line for line in test.lines if "chance" in str(line.get_label())]
    assert list(_errorbar_lines(test, "diverged lsr")[0].get_xdata()) == pytest.approx([64], rel=0.05)
    low = accuracy.assign(test_acc_mean_pct=accuracy.test_acc_mean_pct - 80)  # about 18%: chance is on the axis
    fig = accuracy_error.accuracy_figure(low, study="toy_study", test_size=360, classes=10)
    assert fig.axes[0].get_ylim()[0] == 10.0 and [line for line in fig.axes[0].lines if "chance" in line.get_label()]
    # the analysis's interval, where accuracy.csv has one, replaces mean ± sd
    with_interval = accuracy.assign(test_acc_low_pct=accuracy.test_acc_mean_pct - 1,
                                    test_acc_high_pct=accuracy.test_acc_mean_pct + 2,
                                    test_acc_interval_kind="student_t")
    fig = accuracy_error.accuracy_figure(with_interval, study="toy_study")
    title = fig.axes[0].get_title().replace("\n", " ")
    assert "bars: student t" in title and "not recorded" in title


def test_accuracy_axis_spans_at_least_ten_points_and_reaches_down_to_the_data():
    assert accuracy_error.accuracy_limits([98.2, 99.0]) == (90.0, 100.5)
    assert accuracy_error.accuracy_limits([43.1, 80.0]) == (40.0, 100.5)
    assert accuracy_error.accuracy_limits([]) == (90.0, 100.5)


def test_fig2_is_accuracy_alone_without_a_linear_error_panel(analysis):
    tables = {"accuracy": analysis["accuracy"], "linear_error": analysis["linear_error"]}
    config = {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "evaluation": {"linear_approx": False}}
    fig = FIGURES["fig2_accuracy_linear_error"](FigureInputs(tables, config, "toy_study", None))
    assert len(fig.axes) == 2 and all("accuracy" in ax.get_title() for ax in fig.axes)
    assert not any("linear" in ax.get_ylabel() for ax in fig.axes)
    # a regression study that the theory does not describe has nothing to draw, and says so
    accuracy = analysis["accuracy"].assign(test_acc_mean_pct=np.nan, train_acc_mean_pct=np.nan)
    fig = FIGURES["fig2_accuracy_linear_error"](FigureInputs({"accuracy": accuracy}, config, "toy_study", None))
    assert any("regression" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_fig2_of_a_least_squares_study_draws_the_linear_error_beside_its_prediction(analysis):
    config = {"dataset": {"name": "least_squares"}, "model": {"name": "linear"}}
    errors = analysis["linear_error"].copy()
    errors["absolute_mean"], errors["absolute_sd"] = errors["relative_mean"], errors["relative_sd"]
    predicted = {"predicted_linear_error": {"lsr": {"8": 1e-4, "16": 4e-4, "32": None, "64": 1.6e-3}}}
    tables = {"accuracy": analysis["accuracy"], "linear_error": errors, "theory": predicted}
    fig = FIGURES["fig2_accuracy_linear_error"](FigureInputs(tables, config, "toy_study", None))
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and _is_log2(ax.xaxis) and "linear approx" in ax.get_ylabel()
    for strategy in STRATEGIES:
        (measured,) = _errorbar_lines(ax, f"measured {strategy}")
        rows = errors[(errors.strategy == strategy) & (errors.point == "at_threshold")].sort_values("batch_size")
        np.testing.assert_allclose(measured.get_ydata(), rows.absolute_mean.dropna())
    (line,) = _errorbar_lines(ax, "predicted lsr")
    assert list(line.get_xdata()) == [8, 16, 64] and list(line.get_ydata()) == [1e-4, 4e-4, 1.6e-3]
    assert not _errorbar_lines(ax, "predicted blr")
    # without theory.json the figure says where the prediction would come from
    fig = FIGURES["fig2_accuracy_linear_error"](FigureInputs({"linear_error": errors}, config, "toy_study", None))
    assert "needs theory.json" in fig.get_suptitle()


def test_steps_vs_examples_figure_draws_the_analysis_fit_only_where_meaningful(analysis, table):
    fits = steps_examples.fits_from_critical(analysis["critical_batch"], "train_loss")
    fig = steps_examples.steps_examples_figure(table, fits, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == len(STRATEGIES)
    for ax, strategy in zip(panels, STRATEGIES):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        gids = [line.get_gid() for line in ax.lines]
        assert gids.count("measured") == 1
        assert gids.count("fit") == int(fits[strategy]["fit_meaningful"])
        if fits[strategy]["fit_meaningful"]:
            star = [line for line in ax.lines if line.get_gid() == "b_crit"][0]
            assert star.get_xdata()[0] == pytest.approx(2 * fits[strategy]["E_min"])
    # a fit the analysis reports as a bound is quoted, not drawn
    bounded = {s: dict(f, fit_meaningful=False, report="> 64", note="B_crit > 64: outside") for s, f in fits.items()}
    fig = steps_examples.steps_examples_figure(table, bounded, study="toy_study")
    assert all("fit" not in [line.get_gid() for line in ax.lines] for ax in _panels(fig))
    texts = [t.get_text() for ax in _panels(fig) for t in ax.get_legend().get_texts()]
    assert any(t.startswith("B_crit > 64") for t in texts) and any("fit not drawn" in t for t in texts)


def test_loss_curves_figure(cube, table):
    fig = loss_curves.loss_curves_figure(cube, table, study="toy_study")
    panels = _panels(fig)
    assert len(panels) == len(STRATEGIES)
    for ax, strategy in zip(panels, STRATEGIES):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert sum(str(line.get_gid()).startswith("bs") for line in ax.lines) == len(SIZES)
        threshold = [line for line in ax.lines if line.get_gid() == "threshold"]
        eps = table[(table.strategy == strategy) & (table.metric == "train_loss")].threshold.iloc[0]
        assert len(threshold) == 1 and threshold[0].get_ydata()[0] == pytest.approx(eps)
    texts = _legend_texts(fig)
    assert [t for t in texts if t.isdigit()] == [str(m) for m in SIZES]
    assert "threshold" in fig.get_suptitle() and "toy_study" in fig.get_suptitle()


def write_study_files(cube, folder):
    result = study_tables(cube, STUDY)
    frames = {name: result[name] for name in ("speedup", "speedup_common", "accuracy", "linear_error")}
    write_tables(folder, frames, result["critical_batch"])


def test_draw_study_figures_writes_every_file(cube, tmp_path):
    from batchscale.store.cube import cube_content_hash

    cube_path = tmp_path / "cube.nc"
    cube.attrs["content_sha256"] = cube_content_hash(cube)  # as build_cube records it
    cube.to_netcdf(cube_path, engine="h5netcdf")
    write_study_files(cube, tmp_path)
    out = tmp_path / "figures"
    paths = figures.draw_study_figures(cube_path, STUDY, out, tmp_path)
    expected = {f"{name}.{ext}" for name in names(STUDY_FIGURES) for ext in ("png", "svg")}
    assert len(paths) == 14 and {p.name for p in paths} == expected  # 7 figures (noise_scale only where traced)
    assert {p.name for p in out.iterdir()} == expected
    assert all(p.stat().st_size > 1000 for p in paths)


def test_saved_files_are_deterministic(table, tmp_path):
    rows = table[table.metric == "train_loss"]
    first = base.save_figure(speedup.speedup_figure(rows, study="s"), tmp_path / "a", "f")
    second = base.save_figure(speedup.speedup_figure(rows, study="s"), tmp_path / "b", "f")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()


def test_draw_comparison_from_its_table(cube, tmp_path):
    from batchscale.analysis.comparison import comparison_table

    large = cube.copy(deep=True)
    large["train_loss"] = large["train_loss"] * 0.5
    spec = {"studies": ["large", "small"], "labels": ["big data", "small data"], "strategy": "blr"}
    studies = {"large": STUDY, "small": dict(STUDY, threshold={"fixed": 0.5})}
    table = comparison_table({"large": large, "small": cube}, spec, studies)
    path = tmp_path / "cmp" / "speedup.csv"
    path.parent.mkdir()
    table.to_csv(path, index=False)
    out = figures.draw_comparison(path, spec, tmp_path / "cmp", "sizes")
    assert [p.name for p in out] == ["speedup.png", "speedup.svg"] and all(p.exists() for p in out)
    fig = comparison.comparison_figure(table, title="sizes")
    own, common = fig.axes[:2]
    for ax in (own, common):
        assert [line.get_gid() for line in ax.lines].count("speedup") == 2
        assert _is_log2(ax.xaxis)
    texts = [t.get_text() for t in own.get_legend().get_texts()]
    assert any(t.startswith("small data (\u03b5 = 0.5, fixed at 0.5;\nB_crit") for t in texts)  # its own rule
    assert any(t.startswith("big data (\u03b5 = ") and "lower quartile" in t for t in texts)
    # each curve's critical batch size, as the table gives it, is in its legend entry
    for label in ("big data", "small data"):
        report = table[(table.label == label) & (table.threshold_scope == "study")].b_crit_report.iloc[0]
        entry = next(t for t in texts if t.startswith(label))
        assert (f"B_crit {report}" if isinstance(report, str) and report else "B_crit not estimable") in entry
    eps_common = table[table.threshold_scope == "common"].threshold.iloc[0]
    assert "common" in common.get_title() and f"{eps_common:.3g}" in common.get_title()


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


def test_comparison_draws_a_critical_batch_only_where_its_fit_is_meaningful():
    # two curves, both with B_crit = 40 [30, 50] inside 8..512; only the first fit describes k(m)
    rows = []
    for label, meaningful in (("good", True), ("poor", False)):
        for m, k in ((8, 100.0), (32, 40.0), (128, 20.0), (512, 18.0)):
            rows.append({"study": label, "label": label, "strategy": "lsr", "batch_size": m, "metric": "train_loss",
                         "threshold": 0.2, "threshold_scope": "study", "threshold_rule": "fixed at 0.2",
                         "threshold_batch_size": 512, "base_batch": 8, "k_mean": k, "k_low": k, "k_high": k,
                         "interval_kind": "none", "n_seeds": 1, "n_reached": 1, "n_diverged": 0,
                         "examples_to_threshold": k * m, "speedup": 100.0 / k, "speedup_low": 100.0 / k,
                         "speedup_high": 100.0 / k, "speedup_interval_kind": "none", "ideal_speedup": m / 8,
                         "efficiency": 800.0 / (k * m), "regime": "diminishing", "status": "completed",
                         "b_crit": 40.0, "b_crit_low": 30.0, "b_crit_high": 50.0, "b_crit_interval_kind": "none",
                         "b_crit_report": "40", "b_crit_fit_meaningful": meaningful})
    fig = comparison.comparison_figure(pd.DataFrame(rows), title="fits")
    own = fig.axes[0]
    verticals = [line for line in own.lines if line.get_linestyle() == ":"]
    assert len(verticals) == 1 and list(verticals[0].get_xdata()) == [40.0, 40.0]
    texts = [t.get_text() for t in own.get_legend().get_texts()]
    assert any(t.startswith("good") and "B_crit 40 [30, 50])" in t for t in texts)
    assert any(t.startswith("poor") and "B_crit 40 [30, 50], poor fit: not drawn" in t for t in texts)


def test_an_empty_count_axis_draws():
    # a strategy with no threshold (no batch size trained) leaves its steps-vs-examples panel empty; a log
    # axis on the default linear limits around 0 cannot be drawn, so count_axis gives it a decade
    import io

    from batchscale.report.figures.base import count_axis, new_figure

    fig, axes = new_figure(1, 1)
    count_axis(axes[0, 0], "x")
    count_axis(axes[0, 0], "y")
    fig.savefig(io.BytesIO(), format="png")
    low, high = axes[0, 0].get_xlim()
    assert 0 < low <= 1.0 and high >= 10.0 and axes[0, 0].get_yscale() == "log"


def _all_text(fig) -> str:
    texts = [fig.get_suptitle()] + [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.get_title()] + [t.get_text() for t in ax.texts]
        if ax.get_legend():
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return "\n".join(texts)


def test_every_per_strategy_figure_draws_every_strategy(cube):
    """fig5 drew BLR and LSR only; a strategy of the study without a fixed style (here one outside the
    registry) is drawn like the others, in a style of its own."""
    extra = cube.sel(strategy=["lsr"]).assign_coords(strategy=["newrule"])
    four = xr.concat([cube, extra], dim="strategy")
    tables = study_tables(four, STUDY)
    inputs = FigureInputs(tables, STUDY, "toy_study", four)
    strategies = STRATEGIES + ["newrule"]
    for name in ("fig1_train_loss_contours", "fig5_test_loss_contours", "fig2_speedup", "steps_vs_examples",
                 "loss_curves", "fig2_accuracy_linear_error"):
        text = _all_text(FIGURES[name](inputs))
        for strategy in strategies:
            assert base.strategy_style(strategy, strategies.index(strategy))["label"] in text, (name, strategy)


def test_strategies_without_a_fixed_style_get_their_own_from_the_registry():
    fixed = {base.strategy_style(s)["color"] for s in base.STRATEGY_STYLES}
    tuned, adam = base.strategy_style("tuned", 7), base.strategy_style("adam_srsr", 0)
    assert tuned == base.strategy_style("tuned", 0)  # the same in every figure, whatever its position there
    assert tuned["color"] not in fixed and adam["color"] not in fixed and tuned["color"] != adam["color"]
    assert base.strategy_style("someone_elses", 1)["color"] not in ("#F0E442",)


@pytest.mark.parametrize("sizes", [SIZES, [8, 16, 32, 40, 44, 46, 48, 52, 64, 128]])
def test_no_text_of_a_study_figure_collides(monkeypatch, sizes):
    """Titles, axis labels, tick labels, legends and annotations of every study figure keep apart, also with
    batch sizes that are not powers of two (72, 76, 78 between 64 and 128 in the least-squares study)."""
    import sys

    from figure_text import collisions

    module = sys.modules[__name__]
    monkeypatch.setattr(module, "SIZES", sizes)
    monkeypatch.setattr(module, "EPOCHS_STEPS", {m: 3200 // m for m in sizes})
    fine = make_cube()
    tables = study_tables(fine, STUDY)
    inputs = FigureInputs(tables, dict(STUDY, batch_sizes=sizes), "toy_study (a synthetic study)", fine)
    for name in names(STUDY_FIGURES):
        assert collisions(FIGURES[name](inputs)) == [], name
