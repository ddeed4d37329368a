"""warmup_check.csv and critical_vs_threshold.csv (analysis.robustness) on a hand-made cube, and the summary
line of the warm-up check."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from batchscale.analysis import robustness
from batchscale.analysis.study import study_tables
from batchscale.report.figures.critical_threshold import plot_critical_vs_threshold  # noqa: F401 (the reader)

STEPS = [0, 25, 50, 100, 200, 400, 800]
K400 = [4, 3, 2.5, 2, 1.5, 1.0, 0.5]  # with eps = 1.0 the hits are exact evaluation points
K200 = [4, 3, 2, 1.5, 1.0, 0.7, 0.5]
K100 = [4, 2, 1.5, 1.0, 0.8, 0.6, 0.5]
NEVER = [4, 3, 2, 1.5, 1.2, 1.1, 1.05]
TRACES = {"blr": {16: K400, 32: K200, 64: K100, 128: K100}, "lsr": {16: K400, 32: K200, 64: K100, 128: NEVER}}
STUDY = {"base_batch": 16, "threshold": {"fixed": 1.0}, "metrics": ["train_loss"],
         "bootstrap": {"samples": 50, "confidence": 0.9}, "warmup_steps": 150, "warmup_strategies": ["lsr"],
         "warmup_check_factor": 2}
# the figure's columns (tests/test_figures_critical.py), which the analysis must write exactly
FIGURE_COLUMNS = ["strategy", "metric", "quantile", "threshold", "b_crit", "low", "high", "interval_kind", "bound",
                  "log_rmse", "accepted", "overhead_critical_batch", "overhead_low", "overhead_high"]


def make_cube(study=STUDY) -> xr.Dataset:
    strategies, sizes, seeds = ["blr", "lsr"], [16, 32, 64, 128], [0, 1]
    loss = np.array([[[TRACES[s][m]] * 2 for m in sizes] for s in strategies], dtype=float)
    run_dims = ("strategy", "batch_size", "seed")
    steps_total = np.broadcast_to(np.array([800.0] * 4)[None, :, None], (2, 4, 2)).copy()
    return xr.Dataset(
        {"train_loss": (run_dims + ("step",), loss), "status": (run_dims, np.full((2, 4, 2), "completed")),
         "steps_total": (run_dims, steps_total), "epochs": (run_dims, np.full((2, 4, 2), 20.0))},
        coords={"strategy": strategies, "batch_size": np.array(sizes, dtype=np.int64),
                "seed": np.array(seeds, dtype=np.int64), "step": np.array(STEPS, dtype=np.int64)},
        attrs={"study": "toy", "base_batch": 16, "study_config_json": json.dumps(study)})


def test_warmup_length_in_steps_or_epochs():
    assert robustness.warmup_length(150, 5.0, [800.0], [20.0]).tolist() == [150.0]
    # 5 epochs of floor(800 / 20) = 40 steps: 200 steps; 810 steps over 20 epochs is still 40 a epoch
    assert robustness.warmup_length(None, 5.0, [800.0, 810.0], [20.0, 20.0]).tolist() == [200.0, 200.0]


def test_warmup_check_flags_k_within_the_factor_of_the_warm_up():
    tables = study_tables(make_cube(), STUDY)
    check = tables["warmup_check"]
    assert list(check.columns) == list(robustness.WARMUP_COLUMNS)
    lsr = check[check["strategy"] == "lsr"].set_index("batch_size")
    # k at eps 1.0: 400, 200, 100, never; warm-up 150 steps, factor 2 (300 steps)
    assert lsr["k"].tolist()[:3] == [400.0, 200.0, 100.0] and np.isinf(lsr.loc[128, "k"])
    assert lsr["ratio"].tolist()[:3] == pytest.approx([400 / 150, 200 / 150, 100 / 150])
    assert lsr["inside_warmup"].tolist() == [False, False, True, False]
    assert lsr["flagged"].tolist() == [False, True, True, False]
    blr = check[check["strategy"] == "blr"]
    assert (blr["warmup_steps"] == 0).all() and not blr["flagged"].any() and blr["ratio"].isna().all()


def test_warmup_summary_line():
    from batchscale.analysis.robustness import warmup_headline
    from batchscale.report.summary import warmup_lines

    check = study_tables(make_cube(), STUDY)["warmup_check"]
    h = warmup_headline(check)
    assert h["lsr"]["flagged"] == [32, 64] and h["lsr"]["inside"] == [64]
    lines = warmup_lines(h)
    assert "lsr reaches ε within 2× its warm-up (150 steps) at m = 32, 64 (inside it at m = 64)" in lines[0]
    calm = check.copy()
    calm["flagged"] = False
    calm["inside_warmup"] = False
    assert warmup_lines(warmup_headline(calm)) == ["lsr: k(m) well past its warm-up at every m (≥ 2× it)"]


def test_critical_vs_threshold_has_the_figures_columns_and_the_family_of_eps():
    table = study_tables(make_cube(), STUDY)["critical_vs_threshold"]
    assert list(table.columns) == FIGURE_COLUMNS
    assert sorted(table["quantile"].unique()) == [0.1, 0.25, 0.5]
    assert len(table) == 2 * 3  # strategies x q, one metric
    # lsr's source batch is 128 (completed, trained: 4 -> 1.05), both seeds NEVER: resampled over steps
    # 0..800, the median is the value at step 400, 1.1 (to the 1000-point grid's resolution: 4e-4 of a step
    # span either side of 400)
    lsr = table[(table["strategy"] == "lsr") & (table["quantile"] == 0.5)].iloc[0]
    assert lsr["threshold"] == pytest.approx(1.1, abs=2e-4)
    # blr's source is 128 (K100): median at step 400 is 0.6
    blr = table[(table["strategy"] == "blr") & (table["quantile"] == 0.5)].iloc[0]
    assert blr["threshold"] == pytest.approx(0.6, abs=2e-4)
    # accepted is the goodness-of-fit cut-off, 0.15 by default
    assert (table["accepted"] == (table["log_rmse"] <= 0.15)).all()


def test_eta_star_interior_or_at_the_edge_per_batch_size():
    from batchscale.report.summary import tuned_text

    searched = {"min": 0.003, "max": 0.3}
    eta = {"4": 0.02, "64": 0.3, "128": 1.2, "256": None}
    edges = {"64": "high", "128": "high"}
    ranges = {"4": [0.003, 0.3], "64": [0.003, 0.3], "128": [0.003, 1.2], "256": [0.003, 0.3]}
    status = robustness.eta_edge_status(eta, edges, ranges, searched)
    # 64 stopped at the configured edge 0.3; 128's range reaches 1.2 > 0.3: round 2 extended it, and eta*
    # is still at its (new) edge: at the extension's cap
    assert status == {"4": "interior", "64": "high edge", "128": "high edge, extended to its cap",
                      "256": "none reached"}
    text = tuned_text({"threshold": 0.1, "eta_star": eta, "lr_edge": edges, "edge_status": status,
                       "B_noise": {}, "eta_fit_max_abs_log_residual": None})
    assert "interior at m = 4; high edge at m = 64; high edge, extended to its cap at m = 128" in text


def test_comparison_conclusion_only_where_intervals_are_disjoint():
    from batchscale.report.summary import render_comparison

    assert robustness.interval_verdict((10, 8, 12), (20, 13, 30)) == "lower"
    assert robustness.interval_verdict((20, 13, 30), (10, 8, 12)) == "higher"
    assert robustness.interval_verdict((10, 8, 14), (20, 13, 30)) == "not resolved"  # 13-14 overlap
    assert robustness.interval_verdict((10, np.nan, np.nan), (20, 13, 30)) == "not resolved"
    curves = [{"label": "SGD", "study": "s", "b_crit_report": "218", "b_crit": 218.0, "b_crit_low": 111.0,
               "b_crit_high": 557.0, "interval_kind": "bootstrap_seeds_trials", "largest_batch": 128,
               "speedup_at_largest": 18.2, "speedup_low_at_largest": 15.0, "speedup_high_at_largest": 24.1,
               "ideal_at_largest": 32.0},
              {"label": "AdamW", "study": "a", "b_crit_report": "40", "b_crit": 40.0, "b_crit_low": 30.0,
               "b_crit_high": 60.0, "interval_kind": "bootstrap_seeds_trials", "largest_batch": 128,
               "speedup_at_largest": 12.0, "speedup_low_at_largest": 10.0, "speedup_high_at_largest": 16.0,
               "ideal_at_largest": 32.0}]
    conclusions = robustness.comparison_conclusions(curves)
    # B_crit: [111, 557] vs [30, 60] are disjoint; speedup: [15, 24.1] vs [10, 16] overlap
    assert [c["verdict"] for c in conclusions] == ["higher", "not resolved"]
    text = render_comparison({"comparison": "opt", "title": "SGD vs AdamW", "strategy": "tuned",
                              "metric": "train_loss", "common_threshold": 0.01, "common_rule": "smallest",
                              "curves": curves, "conclusions": conclusions})
    assert "speedup at m = 128: 18.2 [15, 24.1] (ideal 32)" in text
    assert "SGD's B_crit above AdamW's" in text
    assert "speedup at m = 128, SGD vs AdamW: not resolved" in text


def test_warmup_in_epochs_from_each_runs_steps_per_epoch():
    study = {**STUDY, "warmup_steps": None, "warmup_epochs": 5.0}
    # steps_total 800 over 20 epochs: 40 steps an epoch, 5 epochs of warm-up = 200 steps; factor 2 -> 400
    check = study_tables(make_cube(study), study)["warmup_check"]
    lsr = check[check["strategy"] == "lsr"]
    assert lsr["warmup_steps"].tolist() == [200.0] * 4
    # k = 400, 200, 100: 400 is not below 2 x 200; 200 and 100 are; 100 is inside the warm-up
    assert lsr["flagged"].tolist() == [False, True, True, False]
    assert lsr["inside_warmup"].tolist() == [False, False, True, False]
