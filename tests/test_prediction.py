"""The critical batch predicted from short runs (study key `predict`): the reading on synthetic traces with a
hand-computed B_simple, the trust verdict, the cost, the validation table against hand values, the config
block, the prediction packs, the summary section and figure, and (slow) the whole workflow on a tiny config."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest

from batchscale.analysis.prediction import (cpu_seconds, phase_of, prediction_document, read_prediction,
                                           target_from_critical, trace_points)
from batchscale.analysis.prediction_validation import ratio_bound, validation_table
from batchscale.errors import ConfigError
from batchscale.jobs.packs import runs_from_json
from batchscale.jobs.predict_packs import predict_packs, predict_runs_json
from batchscale.report.figures.prediction import validation_figure
from batchscale.report.prediction_summary import lead_with, validation_section
from batchscale.spec.predict import predict_run_config
from batchscale.validate import load_config
from conftest import copy_workflow, snakemake, tiny_tuned_config, write_config

LOSS = [2.0, 1.0, 0.6, 0.4, 0.3, 0.2, 0.12, 0.05]
TARGET = 0.3  # band 1.5: reading window [0.2, 0.45] = points 3, 4, 5; before (0.45, 0.675]: point 2;
#               after [0.133, 0.2): none (0.12 and 0.05 lie below it)


def synthetic_trace(seed: int, b_simple, g2=None, wall=10.0, threads=2, pack_size=4) -> dict:
    """A trace whose two-batch B_simple at each point is `b_simple` (tr Sigma = B x |G|^2, |G|^2 = 1 unless
    given), the exact values NaN (not traced)."""
    g2 = np.ones(len(LOSS)) if g2 is None else np.asarray(g2, dtype=float)
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64])
    return {"attrs": {"seed": seed, "batch_size": 4, "lr": 0.01, "steps_total": 64, "status": "completed",
                      "wall_seconds": wall, "threads": threads, "info_json": json.dumps({"pack_size": pack_size})},
            "points": {"step": steps, "examples_seen": steps * 4, "train_loss": np.array(LOSS),
                       "noise_g2": g2, "noise_trace_sigma": np.asarray(b_simple, dtype=float) * g2}}


SETTINGS = {"loss_band": 1.5, "estimator": "auto", "bootstrap": {"samples": 500, "confidence": 0.9},
            "trust": {"max_interval_ratio": 3.0, "max_invalid_fraction": 0.25, "max_phase_ratio": 3.0}}


def points_of(traces, window=1):
    return pd.concat([trace_points(t, window) for t in traces], ignore_index=True)


def test_phases_of_the_loss_around_the_target():
    assert list(phase_of(LOSS, TARGET, 1.5)) == ["", "", "before", "at", "at", "at", "", ""]


def test_b_pred_is_the_median_over_seeds_and_window_points_and_trusted_when_stable():
    # seed 0 at points 3, 4, 5: 100, 110, 120; seed 1: 90, 105, 130 -> median of the six = (105 + 110) / 2
    traces = [synthetic_trace(0, [40, 50, 80, 100, 110, 120, 200, 300]),
              synthetic_trace(1, [40, 50, 80, 90, 105, 130, 200, 300])]
    reading = read_prediction(points_of(traces), TARGET, SETTINGS)
    assert reading["B_pred"] == pytest.approx(107.5)
    assert reading["estimator"] == "two_batch" and reading["quantity"] == "B_simple"
    assert reading["n_points"] == 6 and reading["n_seeds_in_window"] == 2
    assert reading["low"] <= 107.5 <= reading["high"] and 90 <= reading["low"] and reading["high"] <= 130
    # phases: before = point 2 (80, 80), at = 107.5; no point after -> ratio 107.5 / 80
    assert reading["phase_medians"]["before"] == pytest.approx(80.0)
    assert math.isnan(reading["phase_medians"]["after"])
    assert reading["phase_ratio"] == pytest.approx(107.5 / 80)
    assert reading["invalid_fraction"] == 0.0
    assert reading["verdict"] == "trusted" and reading["reasons"] == []


def test_window_of_the_estimator_is_the_ratio_of_trailing_means():
    # window 2 at point 3: mean(trace)/mean(g2) over points 2, 3 = (80*1 + 100*3) / (1 + 3) = 95
    trace = synthetic_trace(0, [40, 50, 80, 100, 110, 120, 200, 300], g2=[1, 1, 1, 3, 1, 1, 1, 1])
    assert trace_points(trace, 2)["b_two_batch"][3] == pytest.approx(95.0)


def test_unstable_reading_cannot_be_trusted_and_says_why():
    # the seeds disagree 10-fold and half of the window's points have |G|^2 <= 0
    traces = [synthetic_trace(0, [40, 50, 80, 20, 25, 30, 200, 300]),
              synthetic_trace(1, [40, 50, 80, 300, 250, 280, 200, 300], g2=[1, 1, 1, -1, -1, -1, 1, 1])]
    reading = read_prediction(points_of(traces), TARGET, SETTINGS)
    assert reading["verdict"].startswith("cannot be trusted here: ")
    assert reading["invalid_fraction"] == pytest.approx(0.5)
    assert any("no valid estimate" in reason for reason in reading["reasons"])
    phase_dependent = read_prediction(points_of([synthetic_trace(0, [1, 1, 10, 100, 100, 100, 1, 1])]), TARGET,
                                      SETTINGS)
    assert any("phase of training" in reason for reason in phase_dependent["reasons"])  # 100 / 10 > 3
    wide = read_prediction(points_of([synthetic_trace(0, [1, 1, 60, 5, 50, 500, 1, 1]),
                                      synthetic_trace(1, [1, 1, 60, 6, 60, 600, 1, 1])]), TARGET, SETTINGS)
    assert any("interval too wide" in reason for reason in wide["reasons"])


def test_a_target_the_runs_never_reach_cannot_be_trusted():
    reading = read_prediction(points_of([synthetic_trace(0, np.full(len(LOSS), 50.0))]), 0.001, SETTINGS)
    assert math.isnan(reading["B_pred"]) and reading["n_points"] == 0
    assert reading["verdict"].startswith("cannot be trusted here: no valid B_simple")


def test_cost_is_each_runs_share_of_its_pack_job_in_cpu_seconds():
    # wall 10 s x 2 threads / 4 runs in the pack = 5 s per run
    assert cpu_seconds([synthetic_trace(0, np.ones(8)), synthetic_trace(1, np.ones(8))]) == pytest.approx(10.0)
    study = {"predict": {**SETTINGS, "target_loss": TARGET, "target_strategy": None}, "strategies": ["blr"]}
    grid = [synthetic_trace(s, np.ones(8), wall=40.0, pack_size=2) for s in range(5)]  # 40 s each
    document = prediction_document("s", study, [synthetic_trace(0, np.full(8, 50.0))], grid, None, 1)
    assert document["cost"]["prediction_cpu_seconds"] == pytest.approx(5.0)
    assert document["cost"]["grid_cpu_seconds"] == pytest.approx(200.0)
    assert document["cost"]["fraction_of_grid"] == pytest.approx(0.025)
    assert document["B_pred"] == pytest.approx(50.0) and document["target_source"] == "predict.target_loss"


def critical_document(estimate, low, high, report=None, threshold=0.3):
    return {"strategies": {"tuned": {"train_loss": {
        "threshold": threshold, "B_crit": {"estimate": estimate, "low": low, "high": high,
                                           "report": estimate if report is None else report,
                                           "interval_kind": "bootstrap_seeds_trials"}}}}}


def test_validation_table_against_hand_values():
    prediction = {"B_pred": 100.0, "low": 80.0, "high": 125.0, "estimator": "exact", "quantity": "B_simple",
                  "target_loss": 0.3, "verdict": "trusted",
                  "cost": {"prediction_cpu_seconds": 5.0, "grid_cpu_seconds": 100.0, "fraction_of_grid": 0.05}}
    studies = {"a": {"optimizer": {"name": "sgd"}}, "b": {"optimizer": {"name": "adamw"}}}
    table = validation_table(studies, {"a": prediction, "b": prediction},
                             {"a": critical_document(50.0, 40.0, 62.5), "b": critical_document(130.0, None, None, "> 128")})
    a, b = table.to_dict("records")
    assert a["ratio"] == pytest.approx(2.0) and a["within_2x"] is True
    assert a["ratio_low"] == pytest.approx(80 / 62.5) and a["ratio_high"] == pytest.approx(125 / 40)
    assert a["tuned_threshold"] == 0.3 and a["cost_fraction"] == 0.05 and a["optimizer"] == "sgd"
    # B_crit > 128: the ratio is below 100/128 = 0.78, which does not settle within 2x
    assert math.isnan(b["ratio"]) and b["within_2x"] is None and b["B_crit_report"] == "> 128"
    assert b["ratio_bound"] == "< 0.781"
    assert ratio_bound(50.0, "> 128") == ("< 0.391", False) and ratio_bound(50.0, "< 4") == ("> 12.5", False)
    assert ratio_bound(50.0, "< 40") == ("> 1.25", None) and ratio_bound(50.0, "64.2") == ("", None)
    section = validation_section(table)
    assert "| a | 100 [80, 125] (exact) | 50 [40, 62.5]" in section and "| yes |" in section
    assert "| < 0.781 (B_crit a bound) |" in section
    # timings differ from run to run: the summary (the same bytes for the same config and code) leaves them out
    assert "5.0" not in section.split("| study |")[1] and "CPU seconds" in section
    page = lead_with("# title\n\nintro\n\n## study\n", section)
    assert page.startswith("# title\n\n## Predicted critical batch") and page.index("intro") > page.index("| a |")
    axes = validation_figure(table).axes[0]
    assert axes.get_xscale() == "log" and axes.get_yscale() == "log"
    # b's measured B_crit is a bound: drawn at 128 with an arrow to the right, not at the fit's 130
    drawn_x = sorted(float(line.get_xdata()[0]) for line in axes.lines  # the points, not the caps ("|", "_")
                     if line.get_marker() not in ("None", "", None, "|", "_") and len(line.get_xdata()) == 1)
    assert drawn_x == [50.0, 128.0]
    arrows = [text for text in axes.texts if getattr(text, "arrow_patch", None) is not None]
    assert len(arrows) == 1 and arrows[0].xy[0] > 128.0 and arrows[0].xyann[0] == 128.0


def test_a_prediction_read_at_the_common_eps_is_validated_against_tuned_at_the_common_eps():
    critical = critical_document(500.0, 400.0, 600.0, threshold=0.05)  # tuned at its own, stricter eps
    critical["common"] = {"train_loss": {"threshold": 0.2, "strategies": {"tuned": {"B_crit": {
        "estimate": 60.0, "low": 50.0, "high": 75.0, "report": "60", "interval_kind": "bootstrap_seeds_trials"}}}}}
    assert target_from_critical(critical, "tuned", scope="common") == 0.2
    assert target_from_critical(critical, "tuned", scope="own") == 0.05
    prediction = {"B_pred": 90.0, "low": 75.0, "high": 100.0, "target_loss": 0.2, "target_scope": "common",
                  "verdict": "trusted"}
    row = validation_table({"a": {}}, {"a": prediction}, {"a": critical}).iloc[0]
    assert row["B_crit"] == 60.0 and row["tuned_threshold"] == 0.2 and row["ratio"] == pytest.approx(1.5)
    assert row["ratio_low"] == pytest.approx(75 / 75) and row["ratio_high"] == pytest.approx(100 / 50)
    own = validation_table({"a": {}}, {"a": {**prediction, "target_scope": "own"}}, {"a": critical}).iloc[0]
    assert own["B_crit"] == 500.0 and own["ratio"] == pytest.approx(0.18)


CONFIG = tiny_tuned_config("tiny", (16, 32, 64), (0, 1), 3,
                           predict={"enabled": True, "epochs": 1, "max_grid_fraction": 0.2,
                                    "bootstrap": {"samples": 200}})


def test_prediction_runs_are_one_pack_with_their_own_config():
    config = load_config(CONFIG)
    (pack,) = predict_packs(config)
    assert pack.name == "predict_train_tiny_bs16"
    assert pack.outputs == ("results/tiny/predict/traces/bs16/seed0.h5", "results/tiny/predict/traces/bs16/seed1.h5")
    run = predict_run_config(config, "tiny", 1)
    assert run["strategy"] == "predict" and run["lr_peak"] == run["eta0"] == 0.05 and run["warmup_epochs"] == 0
    assert run["epochs"] == 1 and run["noise_scale"]["enabled"] is True
    assert run["noise_scale"]["exact_max_params_times_examples"] == 2.0e7
    assert run["evaluation"]["points_per_decade"] == 20
    assert runs_from_json(predict_runs_json(config, pack))[1] == run


def test_predict_block_errors_name_the_key():
    over = copy.deepcopy(CONFIG)
    over["studies"]["tiny"]["predict"].update(epochs=3, max_grid_fraction=0.05)  # 2 x 3 of 24 x 3 run-epochs: 8%
    with pytest.raises(ConfigError, match=r"studies\.tiny\.predict\.epochs: .*max_grid_fraction"):
        load_config(over)
    typo = copy.deepcopy(CONFIG)
    typo["studies"]["tiny"]["predict"]["noise"] = {"batch_smal": 8}
    with pytest.raises(ConfigError, match=r"studies\.tiny\.predict\.noise: batch_smal"):
        load_config(typo)


@pytest.mark.slow
def test_workflow_writes_the_prediction_the_validation_and_leads_the_summary_with_it(tmp_path):
    copy_workflow(tmp_path)
    write_config(tmp_path / "tiny.yaml", CONFIG)
    snakemake(tmp_path, "--cores", "2", "-q", configfile="tiny.yaml")
    document = json.loads((tmp_path / "results/tiny/prediction.json").read_text())
    assert document["target_source"] == "the study's common eps (critical_batch.json)"
    assert document["target_scope"] == "common" and document["n_points"] > 0
    assert document["verdict"] == "trusted" or document["verdict"].startswith("cannot be trusted here: ")
    assert document["cost"]["grid_runs"] == 24 and document["cost"]["prediction_cpu_seconds"] > 0
    table = pd.read_csv(tmp_path / "results/prediction_validation-tiny.csv")
    assert list(table["study"]) == ["tiny"] and table["B_pred"][0] == pytest.approx(document["B_pred"])
    assert (tmp_path / "results/prediction_validation-tiny.png").stat().st_size > 0
    summary = (tmp_path / "results/summary-tiny.md").read_text()
    assert summary.index("## Predicted critical batch") < summary.index("## tiny")
