"""Tables from a small synthetic cube, and the external-CSV backend, against hand-computed values."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from batchscale.analysis.accuracy import (
    ACCURACY_COLUMNS,
    accuracy_markdown,
    accuracy_table,
    linear_error_table,
    nearest_point_value,
)
from batchscale.analysis.curves import SPEEDUP_COLUMNS
from batchscale.report.critical_lines import critical_batch_lines
from batchscale.analysis.study import analyse_cube, critical_batch_summary, speedup_table, write_study_tables
from batchscale.analysis.thresholds import common_threshold, study_thresholds, trained
from batchscale.analysis.external import AnalysisInputError, analyze_external, load_external_csv
from batchscale.errors import ConfigError

STEPS = [0, 25, 50, 100, 200, 400, 800]
NAN = np.nan
# train_loss traces; with eps = 1.0 the hits are exact evaluation points
K400 = [4, 3, 2.5, 2, 1.5, 1.0, 0.5]
K200 = [4, 3, 2, 1.5, 1.0, 0.7, 0.5]
K100 = [4, 2, 1.5, 1.0, 0.8, 0.6, 0.5]
K50 = [4, 2, 1, 0.8, 0.6, 0.5, 0.4]
DIVERGED = [4, 3, NAN, NAN, NAN, NAN, NAN]
NEVER = [4, 3, 2, 1.5, 1.2, 1.1, 1.05]

TRACES = {  # strategy -> batch size -> (seed 0, seed 1)
    "blr": {16: (K400, K400), 32: (K200, K200), 64: (K100, K200), 128: (K50, DIVERGED)},
    "lsr": {16: (K400, K400), 32: (K200, K200), 64: (K100, K100), 128: (NEVER, NEVER)},
}
FINAL_ACC = {
    "blr": {16: (0.93, 0.95), 32: (0.92, 0.92), 64: (0.90, 0.91), 128: (0.50, 0.10)},
    "lsr": {16: (0.93, 0.95), 32: (0.93, 0.93), 64: (0.92, 0.92), 128: (0.80, 0.82)},
}
STUDY = {
    "base_batch": 16,
    "threshold": {"fixed": 1.0},
    "metrics": ["train_loss", "test_loss", "test_error"],
    "regimes": {"linear_efficiency": 0.8, "stagnation_gain": 0.1},
    "bootstrap": {"samples": 200, "confidence": 0.9},
}


def make_cube() -> xr.Dataset:
    strategies, sizes, seeds = ["blr", "lsr"], [16, 32, 64, 128], [0, 1]
    loss = np.array([[[TRACES[s][m][i] for i in range(2)] for m in sizes] for s in strategies], dtype=float)
    acc = np.array([[[FINAL_ACC[s][m][i] for i in range(2)] for m in sizes] for s in strategies], dtype=float)
    status = np.full(acc.shape, "completed", dtype=object)
    status[0, 3, 1] = "diverged"
    run_dims = ("strategy", "batch_size", "seed")
    dims = run_dims + ("step",)
    cube = xr.Dataset(
        {
            "train_loss": (dims, loss),
            "test_loss": (dims, loss + 0.1),
            "test_acc": (dims, 1.0 - loss / 5.0),
            "status": (run_dims, status),
            "final_test_acc": (run_dims, acc),
        },
        coords={"strategy": strategies, "batch_size": np.array(sizes, dtype=np.int64),
                "seed": np.array(seeds, dtype=np.int64), "step": np.array(STEPS, dtype=np.int64)},
        attrs={"study": "toy", "base_batch": 16, "study_config_json": json.dumps(STUDY)},
    )
    return cube


def row(df, strategy, size, metric="train_loss"):
    match = df[(df.strategy == strategy) & (df.batch_size == size) & (df.metric == metric)]
    assert len(match) == 1
    return match.iloc[0]


def test_speedup_table_fixed_threshold():
    df = speedup_table(make_cube(), STUDY)
    assert list(df.columns) == list(SPEEDUP_COLUMNS)
    assert len(df) == 2 * 4 * 3  # strategy x batch size x metric, diverged and not-reached rows kept

    r = row(df, "blr", 16)
    assert (r.k_mean, r.speedup, r.efficiency, r.regime, r.status) == (400.0, 1.0, 1.0, "base", "completed")
    assert (r.threshold, r.threshold_rule, r.n_seeds, r.n_reached) == (1.0, "fixed:1", 2, 2)
    assert pd.isna(r.threshold_batch_size)
    r = row(df, "blr", 32)
    assert (r.k_mean, r.speedup, r.ideal_speedup, r.efficiency, r.regime) == (200.0, 2.0, 2.0, 1.0, "linear")
    # both seeds exactly twice as fast: no spread, so no interval (not a zero-width one)
    assert math.isnan(r.speedup_low) and math.isnan(r.speedup_high)
    assert r.speedup_interval_kind == "none: one distinct value"
    r = row(df, "blr", 64)  # seeds 100 and 200: a Student-t interval (log scale), not the seed range
    assert r.k_mean == 150.0 and r.interval_kind == "student_t"
    # logs 4.6052 and 5.2983: sd 0.4901, se 0.3466, t(0.95, 1 dof) = 6.3138 -> half-width 2.1882
    half = 6.313751514675 * (math.log(2) / math.sqrt(2)) / math.sqrt(2)
    assert r.k_low == pytest.approx(math.sqrt(100 * 200) / math.exp(half))  # 15.86
    assert r.k_high == pytest.approx(math.sqrt(100 * 200) * math.exp(half))  # 1261
    assert r.speedup_interval_kind == "student_t"
    assert r.speedup == pytest.approx(400 / 150) and r.efficiency == pytest.approx(400 / 150 / 4)
    assert r.examples_to_threshold == 64 * 150.0
    assert r.regime == "diminishing"  # efficiency 0.67 < 0.8; 150/200 = 0.75: not stagnating
    r = row(df, "blr", 128)  # seed 0 k = 50, seed 1 diverged
    assert r.status == "diverged" and r.regime == "not_reached"
    assert (r.n_seeds, r.n_reached, r.n_diverged) == (2, 1, 1)
    assert r.k_mean == math.inf and math.isnan(r.speedup) and math.isnan(r.efficiency)  # empty, not 0

    assert [row(df, "lsr", m).regime for m in (16, 32, 64)] == ["base", "linear", "linear"]
    r = row(df, "lsr", 128)
    assert (r.status, r.regime, r.n_seeds, r.n_reached, r.n_diverged) == ("not_reached", "not_reached", 2, 0, 0)
    # test_error = loss / 5 starts at 0.8 <= 1.0: met at step 0 everywhere except the diverged seed
    r = row(df, "lsr", 32, "test_error")
    assert (r.k_mean, r.regime) == (0.0, "trivial")


def test_speedup_table_lower_quartile_per_strategy():
    study = dict(STUDY, threshold="lower_quartile_of_largest", metrics=["train_loss"])
    df = speedup_table(make_cube(), study)
    # Quantiles are over each seed's curve resampled uniformly in steps (0..800), at the largest batch size
    # where every seed completed. blr: a seed diverged at 128, so the source is 64 (K100 and K200); their
    # lowest quarter of steps is 600..800: K100 falls 0.55 -> 0.5 there (quartile 0.55), K200 0.6 -> 0.5
    # (quartile 0.6); eps is the larger, 0.6, which both seeds reach
    r = row(df, "blr", 128)
    assert r.threshold == pytest.approx(0.6, rel=2e-3) and r.threshold_batch_size == 64
    assert r.threshold_rule == "lower_quartile_of_largest"
    assert r.n_reached == 1 and r.k_mean == math.inf  # seed 0 reaches it; seed 1 diverged
    r = row(df, "blr", 64)  # K100 at 400 (0.6); K200 between (400, 0.7) and (800, 0.5): t = 0.5
    assert r.n_reached == 2 and r.k_mean == pytest.approx((400 + 400 * 2 ** 0.5) / 2, rel=1e-2)
    # lsr, bs 128 (NEVER, both seeds): 1.1 at 400 -> 1.05 at 800, value at step 600 = 1.075;
    # bracket (400, 1.1) -> (800, 1.05), t = 0.5 -> k = 400 * 2 ** 0.5
    r = row(df, "lsr", 128)
    assert r.threshold == pytest.approx(1.075, rel=2e-3)
    assert r.k_mean == pytest.approx(400 * 2 ** 0.5, rel=1e-2) and r.status == "completed"
    # lsr, bs 16 at eps 1.075: bracket (200, 1.5) -> (400, 1.0), t = 0.85 -> 200 * 2 ** 0.85
    assert row(df, "lsr", 16).k_mean == pytest.approx(200 * 2 ** 0.85, rel=1e-2)
    assert row(df, "lsr", 128).regime == "stagnation"
    # at the common eps (the smaller of 0.6 and 1.075) both strategies are measured alike: lsr's 128 stays
    # not reached, and lsr 16 (K400) takes as long as blr 16 (K400)
    common = speedup_table(make_cube(), study, scope="common")
    assert common.threshold.nunique() == 1 and common.threshold.iloc[0] == pytest.approx(0.6, rel=2e-3)
    assert (common.threshold_scope == "common").all() and (df.threshold_scope == "strategy").all()
    assert row(common, "lsr", 16).k_mean == pytest.approx(row(df, "blr", 16).k_mean)
    assert row(common, "lsr", 128).k_mean == math.inf
    largest = speedup_table(make_cube(), dict(study, common_threshold="largest"), scope="common")
    assert largest.threshold.iloc[0] == pytest.approx(1.075, rel=2e-3)


def test_critical_batch_summary_is_json_safe():
    summary = critical_batch_summary(make_cube(), STUDY)
    text = json.dumps(summary, allow_nan=False)
    assert summary["study"] == "toy" and summary["base_batch"] == 16
    lsr = summary["strategies"]["lsr"]["train_loss"]
    # lsr: k = 400, 200, 100 = 6400 / m, and 128 never reached eps within its 800 steps: censored, not
    # dropped (a fit through the three reached points alone says k(128) = 50)
    assert lsr["n_points"] == 3 and lsr["n_censored"] == 1 and lsr["excluded"] == {}
    s_min, e_min = lsr["S_min"]["estimate"], lsr["E_min"]["estimate"]
    assert s_min > 0 and s_min + e_min / 128 > 50
    assert lsr["largest_linear_batch_size"] == 64 and lsr["first_stagnation_batch_size"] is None
    # both seeds trace the same curves: no spread, so no interval of the fit
    assert lsr["log_rmse"] > 0 and lsr["interval_kind"] == "none: one distinct value"
    blr = summary["strategies"]["blr"]["train_loss"]
    assert blr["n_points"] == 3 and blr["largest_linear_batch_size"] == 32
    assert "128" in blr["excluded"] and "diverged" in blr["excluded"]["128"]  # excluded, with the reason
    assert summary["thresholds"]["train_loss"]["common"] == 1.0
    assert blr["B_crit"]["estimate"] is not None and blr["B_crit"]["estimate"] > 0
    assert "null" in summary and "NaN" not in text and "Infinity" not in text


def test_critical_batch_summary_needs_three_points():
    cube = make_cube().sel(batch_size=[16, 32])
    summary = critical_batch_summary(cube, STUDY)
    entry = summary["strategies"]["blr"]["train_loss"]
    assert entry["n_points"] == 2 and entry["B_crit"]["estimate"] is None and entry["B_crit"]["low"] is None
    assert entry["interval_kind"] == "none" and entry["fit_meaningful"] is False
    assert "needs 3" in entry["note"]


def test_accuracy_table_and_markdown():
    acc = accuracy_table(make_cube())
    assert list(acc.columns) == list(ACCURACY_COLUMNS)
    r = acc[(acc.strategy == "blr") & (acc.batch_size == 16)].iloc[0]
    assert r.test_acc_mean_pct == pytest.approx(94.0) and r.test_acc_sd_pct == pytest.approx(math.sqrt(2))
    r = acc[(acc.strategy == "blr") & (acc.batch_size == 128)].iloc[0]
    assert r.test_acc_mean_pct == pytest.approx(30.0) and (r.n_seeds, r.n_diverged) == (2, 1)
    # final train loss beside the test accuracy: K50's last value 0.4, the diverged seed's last finite 3
    assert r.train_loss_mean == pytest.approx(1.7) and r.train_loss_sd == pytest.approx(math.sqrt(2 * 1.3 ** 2))
    assert math.isnan(r.train_acc_mean_pct)  # the toy cube traces no train accuracy
    md = accuracy_markdown(acc)
    assert md.startswith("| batch size | blr | blr train acc % | blr train loss | lsr | lsr train acc % |")
    assert "| 128 | 30.00 ± 28.28 (diverged 1/2) | — | 1.7 ± 1.84 (diverged 1/2) | 81.00 ± 1.41 | — | 1.05 ± 0 |" in md


def test_write_study_tables_roundtrip(tmp_path):
    from batchscale.store.cube import cube_content_hash

    cube_path = tmp_path / "cube.nc"
    cube = make_cube()
    cube.attrs["content_sha256"] = cube_content_hash(cube)  # as build_cube records it
    cube.to_netcdf(cube_path, engine="h5netcdf")
    result = write_study_tables(cube_path, None, tmp_path / "out")  # config from the cube attrs
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.csv", "accuracy.md", "analysis_record.json",
                                                    "critical_batch.json", "critical_vs_threshold.csv",
                                                    "linear_error.csv", "noise_over_training.csv", "noise_scale.csv",
                                                    "noise_vs_tuned.csv", "speedup.csv", "speedup_common.csv",
                                                    "warmup_check.csv"]
    assert len(pd.read_csv(out / "noise_scale.csv")) == 0  # no noise traced: the columns, no rows
    speed = pd.read_csv(out / "speedup.csv")
    assert list(speed.columns) == list(SPEEDUP_COLUMNS) and len(speed) == 24
    r = row(speed, "blr", 128)
    assert r.k_mean == math.inf and r.status == "diverged"
    assert row(speed, "blr", 64).k_mean == 150.0
    critical = json.loads((out / "critical_batch.json").read_text())
    assert critical["strategies"]["lsr"]["train_loss"]["n_censored"] == 1
    assert "(diverged 1/2)" in (out / "accuracy.md").read_text()
    assert len(pd.read_csv(out / "accuracy.csv")) == 8
    assert result["speedup"].shape == (24, len(SPEEDUP_COLUMNS))


# ------------------------------------------------------------------ external CSV


def write_traces_csv(path, with_optional=True):
    rows = []
    for m, pair in TRACES["lsr"].items():
        for seed, trace in enumerate(pair):
            for step, loss in zip(STEPS, trace):
                rows.append({"strategy": "lsr", "seed": seed, "batch_size": m, "step": step, "loss": loss})
    df = pd.DataFrame(rows)
    if not with_optional:
        df = df[df.seed == 0].drop(columns=["strategy", "seed"])
    df.to_csv(path, index=False)
    return path


def test_external_traces_happy_path(tmp_path):
    path = write_traces_csv(tmp_path / "traces.csv")
    kind, df = load_external_csv(path)
    assert kind == "traces" and len(df) == 4 * 2 * len(STEPS)
    result = analyze_external(path, tmp_path / "out", {"fixed": 1.0})
    speed = pd.read_csv(tmp_path / "out" / "speedup.csv")
    assert list(speed.columns) == list(SPEEDUP_COLUMNS)
    assert speed.k_mean.tolist() == [400.0, 200.0, 100.0, math.inf]
    assert speed.speedup.tolist()[:3] == [1.0, 2.0, 4.0] and math.isnan(speed.speedup.iloc[3])
    assert speed.regime.tolist() == ["base", "linear", "linear", "not_reached"]
    assert set(speed.metric) == {"loss"}
    critical = json.loads((tmp_path / "out" / "critical_batch.json").read_text())
    assert critical["kind"] == "traces" and "lsr" in critical["strategies"]
    assert result["kind"] == "traces"


def test_external_traces_without_seed_and_strategy(tmp_path):
    path = write_traces_csv(tmp_path / "traces.csv", with_optional=False)
    hooked = []
    result = analyze_external(path, tmp_path / "out", "fixed:1.0", base_batch=32,
                              figure_hook=lambda res, out: hooked.append(out))
    speed = result["speedup"]
    assert set(speed.strategy) == {"external"} and (speed.n_seeds == 1).all()
    assert speed.speedup.tolist()[:3] == [0.5, 1.0, 2.0]  # relative to m0 = 32
    assert hooked == [tmp_path / "out"]


def test_external_steps_to_target_recovers_critical_batch(tmp_path):
    rng = np.random.default_rng(0)
    sizes = 2 ** np.arange(4, 14)
    rows = [{"batch_size": m, "seed": s, "steps": 100 * (1 + 300 / m) * math.exp(rng.normal(0, 0.05))}
            for m in sizes for s in range(4)]
    path = tmp_path / "steps.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    result = analyze_external(path, tmp_path / "out", bootstrap={"samples": 200})
    entry = result["critical_batch"]["strategies"]["external"]["steps"]
    assert entry["B_crit"]["estimate"] == pytest.approx(300, rel=0.05)
    assert entry["B_crit"]["low"] <= 300 <= entry["B_crit"]["high"]
    speed = pd.read_csv(tmp_path / "out" / "speedup.csv")
    assert len(speed) == len(sizes) and (speed.threshold_rule == "given").all()


@pytest.mark.parametrize("content, message", [
    ("batch_size,step\n16,0\n32,0\n", "missing column(s) loss"),
    ("batch_size,value\n16,1\n", "missing columns"),
    ("batch_size,step,loss\n0,0,1.0\n32,0,1.0\n", "'batch_size' must be positive"),
    ("batch_size,step,loss\n16,-5,1.0\n32,0,1.0\n", "'step' must be >= 0"),
    ("batch_size,steps\n16,100\n32,-1\n", "'steps' must be positive"),
    ("batch_size,steps\n16,100\n16,90\n", "duplicated rows"),
    ("batch_size,seed,steps\n16,0,100\n16,1,90\n", "at least 2 batch sizes"),
    ("batch_size,step,loss\n16,0,abc\n32,0,1.0\n", "non-numeric value 'abc'"),
    ("batch_size,steps\n", "no rows"),
    ("", "it is empty"),
    ('batch_size,steps\n16,100\n"32,1\n', "cannot read the file as CSV"),
])
def test_external_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(AnalysisInputError) as info:
        analyze_external(path, tmp_path / "out")
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_external_unreadable_and_bad_base(tmp_path):
    with pytest.raises(AnalysisInputError, match="does not exist"):
        load_external_csv(tmp_path / "absent.csv")
    path = tmp_path / "steps.csv"
    path.write_text("batch_size,steps\n16,100\n32,60\n64,40\n")
    with pytest.raises(AnalysisInputError, match="base batch size 8 is not among"):
        analyze_external(path, tmp_path / "out", base_batch=8)
    with pytest.raises(AnalysisInputError, match="threshold rule"):
        analyze_external(write_traces_csv(tmp_path / "t.csv"), tmp_path / "out", "median")


# ------------------------------------------------------------------ per-seed thresholds, intervals by seed count


def two_seed_cube():
    """One strategy, batch sizes 16 and 32 on steps 0, 10, 100. At 32 (the source batch) seed 0 falls to
    0.01 and stays; seed 1 only reaches 0.5: a pooled lower quartile (0.01) lies below seed 1's minimum."""
    steps = [0, 10, 100]
    loss = np.array([[[[1.0, 0.2, 0.005], [1.0, 0.3, 0.01]],
                      [[1.0, 0.01, 0.01], [1.0, 0.6, 0.5]]]])
    dims = ("strategy", "batch_size", "seed", "step")
    return xr.Dataset({"train_loss": (dims, loss)},
                      coords={"strategy": ["lsr"], "batch_size": np.array([16, 32]), "seed": np.array([0, 1]),
                              "step": np.array(steps)})


def test_every_seed_of_the_source_batch_reaches_its_threshold():
    study = {"base_batch": 16, "threshold": "lower_quartile_of_largest", "metrics": ["train_loss"],
             "bootstrap": {"samples": 50}}
    result = analyse_cube(two_seed_cube(), study)
    r = row(result["speedup"], "lsr", 32)
    # seed 1's quartile: its lowest quarter of steps is 75..100, where it falls from 0.6 - 0.1 * 65/90 =
    # 0.5278 to 0.5 -> 0.5278 is the larger per-seed quartile (seed 0's is 0.01)
    assert r.threshold == pytest.approx(0.6 - 0.1 * 65 / 90, abs=2e-3)
    assert r.threshold_batch_size == 32 and r.n_reached == 2 and math.isfinite(r.k_mean)
    check = result["critical_batch"]["thresholds"]["train_loss"]["strategies"]["lsr"]
    assert check["source_batch_size"] == 32 and check["source_seeds_all_reached"] is True


def test_linear_approximation_error_points_from_traces_and_scalars():
    cube = make_cube().sel(strategy=["lsr"])
    run_dims, dims = ("strategy", "batch_size", "seed"), ("strategy", "batch_size", "seed", "step")
    steps = np.array(STEPS, dtype=float)
    # the error trace is 10 * step, its relative version step / 1000; scalars: warm-up end 0.3, final 1e-6
    trace = np.broadcast_to(10.0 * steps, cube["train_loss"].shape).copy()
    cube["linear_approx_error"] = (dims, trace)
    cube["linear_approx_error_rel"] = (dims, trace / 1e4)
    cube["linear_approx_error_warmup_end"] = (run_dims, np.full(cube["status"].shape, 0.3))
    cube["final_linear_approx_error"] = (run_dims, np.full(cube["status"].shape, 1e-6))
    table = linear_error_table(cube, {"lsr": 1.0})
    at = table[(table.point == "at_threshold")].set_index("batch_size")
    # eps 1.0: k = 400 (m = 16), 200 (32), 100 (64) exactly at evaluation points -> errors 4000, 2000, 1000;
    # m = 128 never reaches eps -> empty
    assert at.loc[16, "absolute_mean"] == 4000.0 and at.loc[64, "absolute_mean"] == 1000.0
    assert at.loc[32, "relative_mean"] == pytest.approx(0.2) and math.isnan(at.loc[128, "absolute_mean"])
    assert bool(at.loc[16, "available"])
    warm = table[table.point == "warmup_end"]
    assert (warm.absolute_mean == 0.3).all() and warm.relative_mean.isna().all()
    assert (table[table.point == "final"].absolute_mean == 1e-6).all()
    # a cube without the measurements: every point present, values empty, available false
    bare = linear_error_table(make_cube(), {"blr": 1.0, "lsr": 1.0})
    assert len(bare) == 2 * 4 * 3 and not bare.available.any() and bare.absolute_mean.isna().all()
    # a nearest point in log step: k = 565 lies nearer 400 than 800 (log distance 0.35 vs 0.35+)
    assert nearest_point_value(steps, steps, 565.0) == 400.0
    assert nearest_point_value(steps, steps, 566.0) == 800.0


def test_comparison_uses_each_studys_rule_and_one_common_threshold():
    from batchscale.analysis.comparison import comparison_table

    cube = make_cube()
    studies = {"a": dict(STUDY, threshold={"fixed": 1.0}), "b": dict(STUDY, threshold={"fixed": 1.5})}
    spec = {"studies": ["a", "b"], "labels": ["A", "B"], "strategy": "lsr", "metric": "train_loss"}
    table = comparison_table({"a": cube, "b": cube}, spec, studies)
    own = table[table.threshold_scope == "study"].groupby("study").threshold.first().to_dict()
    assert own == {"a": 1.0, "b": 1.5}  # each study's own rule, not a forced lower quartile
    common = table[table.threshold_scope == "common"]
    assert set(common.threshold) == {1.0} and set(common.label) == {"A", "B"}
    # lsr 16 (K400) at 1.0: exactly step 400
    assert common[(common.study == "b") & (common.batch_size == 16)].k_mean.iloc[0] == 400.0
    loose = comparison_table({"a": cube, "b": cube}, dict(spec, common_threshold="largest"), studies)
    loose = loose[loose.threshold_scope == "common"]
    assert set(loose.threshold) == {1.5}
    assert loose[(loose.study == "a") & (loose.batch_size == 16)].k_mean.iloc[0] == 200.0  # K400 at 1.5


def test_common_threshold_choices():
    own = {"blr": (0.761, 1024), "srsr": (0.0469, 1024), "lsr": (0.00253, 512)}
    assert common_threshold(own) == 0.00253
    assert common_threshold(own, "largest") == 0.761
    assert common_threshold({"a": float("nan"), "b": 0.3}) == 0.3
    with pytest.raises(ValueError, match="common_threshold"):
        common_threshold(own, "median")
    # the study key reaches the common table: the loosest eps (lsr's 1.075 vs blr's 0.6 -> 1.075)
    study = dict(STUDY, threshold="lower_quartile_of_largest", metrics=["train_loss"], common_threshold="largest")
    common = speedup_table(make_cube(), study, scope="common")
    assert common.threshold.iloc[0] == pytest.approx(1.075, rel=2e-3)


def test_headline_quotes_bounds_kinds_regimes_and_source_checks():
    document = {
        "thresholds": {"train_loss": {"strategies": {"lsr": {"source_batch_size": 512,
                                                            "source_seeds_all_reached": False}}}},
        "strategies": {"lsr": {"train_loss": {
            "threshold": 0.0033, "log_rmse": 0.41,
            "B_crit": {"estimate": 704.0, "low": 500.0, "high": None, "interval_kind": "student_t",
                       "report": "> 256"},
            "S_min": {"estimate": 31.5, "low": None, "high": None, "interval_kind": "none"},
            "overhead_critical_batch": {"overhead": 0.2, "direct": {"report": "37.2"}},
            "largest_linear_batch_size": None, "first_stagnation_batch_size": 128}}},
    }
    lines = critical_batch_lines(document)
    assert lines[0] == "WARNING: lsr train_loss: a seed of the source batch size 512 never reached its own eps"
    assert lines[1] == ("lsr train_loss at eps = 0.0033: B_crit > 256 [500, inf] (student t), "
                        "S_min = 31.5 (no interval), log-RMSE 0.41")
    assert lines[2] == ("  overhead-based critical batch (20% over linear): 37.2; regimes: linear up to none "
                        "beyond m0, stagnation from 128")


def test_comparison_rows_carry_each_studys_critical_batch_as_its_own_tables_give_it():
    from batchscale.analysis.comparison import comparison_table

    cube = make_cube()
    studies = {"a": dict(STUDY, threshold={"fixed": 1.0}), "b": dict(STUDY, threshold={"fixed": 1.5})}
    table = comparison_table({"a": cube, "b": cube}, {"studies": ["a", "b"], "strategy": "lsr"}, studies)
    for name in ("a", "b"):
        own = analyse_cube(cube, studies[name])["critical_batch"]["strategies"]["lsr"]["train_loss"]["B_crit"]
        rows = table[(table.study == name) & (table.threshold_scope == "study")]
        assert rows.b_crit_report.nunique() == 1 and rows.b_crit_report.iloc[0] == own["report"]
        assert rows.b_crit_fit_meaningful.iloc[0] == analyse_cube(cube, studies[name])["critical_batch"][
            "strategies"]["lsr"]["train_loss"]["fit_meaningful"]
        for column, key in (("b_crit", "estimate"), ("b_crit_low", "low"), ("b_crit_high", "high")):
            want = float("nan") if own[key] is None else own[key]
            assert rows[column].iloc[0] == pytest.approx(want, nan_ok=True, rel=1e-12)


def test_a_largest_batch_that_did_not_train_sets_no_threshold():
    # m = 32 ends where it started (2.30 -> 2.31: the CNN's lsr at eta = 0.64 in an earlier default run);
    # its lower quartile (about 2.30) would only measure the escape from initialisation. m = 16 trained
    # (2.30 -> 0.3), so it is the source; a drop of exactly 10% counts as trained.
    steps = [0, 10, 100]
    loss = np.array([[[[2.30, 1.0, 0.3], [2.30, 0.9, 0.3]],
                      [[2.30, 2.40, 2.31], [2.30, 2.2, 2.30]]]])
    dims = ("strategy", "batch_size", "seed", "step")
    cube = xr.Dataset({"train_loss": (dims, loss),
                       "status": (dims[:3], np.full(loss.shape[:3], "completed", dtype=object))},
                      coords={"strategy": ["lsr"], "batch_size": np.array([16, 32]), "seed": np.array([0, 1]),
                              "step": np.array(steps)})
    thresholds = study_thresholds(cube, "train_loss", "lower_quartile_of_largest")
    assert thresholds["lsr"][1] == 16
    assert trained([[2.0, 1.9, 1.8]]) and not trained([[2.0, 1.9, 1.81]])
