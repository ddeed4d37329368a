"""results/summary.json and summary.md: headline numbers read from hand-made analysis files
(batchscale.analysis.headline), their words (batchscale.report.summary), and the least-squares theory check
(batchscale.analysis.least_squares)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from batchscale.cli import main as cli_main
from batchscale.analysis import headline, least_squares
from batchscale.report import summary


def _rows(strategy, sizes, k, regimes, eps=0.1, metric="train_loss"):
    k = np.asarray(k, dtype=float)
    speedup = np.where(np.isfinite(k), k[0] / k, np.nan)  # the analysis leaves it empty when never reached
    return pd.DataFrame({"strategy": strategy, "batch_size": sizes, "metric": metric, "threshold": eps,
                         "k_mean": k, "speedup": speedup, "regime": regimes})


@pytest.fixture
def tables():
    sizes = [4, 8, 16, 32, 64]
    common = pd.concat([
        # blr: 100 -> 52 (linear, e = 0.96), 40 (diminishing), 38, 37.5 (stagnation)
        _rows("blr", sizes, [100, 52, 40, 38, 37.5], ["base", "linear", "diminishing", "stagnation", "stagnation"]),
        # lsr: halves up to 16, then k rises at 32 and never reaches eps at 64
        _rows("lsr", sizes, [100, 50, 25, 30, math.inf], ["base", "linear", "linear", "diminishing", "not_reached"]),
    ], ignore_index=True)
    entry_blr = {"B_crit": {"estimate": 10.0, "low": 8.0, "high": 13.0, "interval_kind": "percentile_bootstrap",
                            "bound": None, "report": 10.0},
                 "interval_kind": "percentile_bootstrap", "fit_meaningful": True,
                 "overhead_critical_batch": {"direct": {"estimate": 8.0, "low": 8.0, "high": 16.0,
                                                        "interval_kind": "percentile_bootstrap", "bound": None,
                                                        "report": 8.0}},
                 "largest_linear_batch_size": 8, "first_stagnation_batch_size": 32}
    entry_lsr = {"B_crit": {"estimate": None, "low": None, "high": None, "interval_kind": "percentile_bootstrap",
                            "bound": "above_range", "report": "> 32"},
                 "interval_kind": "percentile_bootstrap", "fit_meaningful": False,
                 "overhead_critical_batch": {"direct": {"estimate": None, "bound": "above_range", "report": "> 16"}},
                 "largest_linear_batch_size": 16, "first_stagnation_batch_size": None}
    critical = {"strategies": {"blr": {"train_loss": {**entry_blr, "threshold": 0.2, "threshold_batch_size": 64}},
                               "lsr": {"train_loss": {**entry_lsr, "threshold": 0.1, "threshold_batch_size": 32}}},
                "common": {"train_loss": {"threshold": 0.1, "strategies": {"blr": entry_blr, "lsr": entry_lsr}}}}
    study = {"description": "hand-made", "strategies": ["blr", "lsr"], "base_batch": 4}
    return study, critical, common


def test_measured_breakdown_is_the_first_size_where_k_stops_falling(tables):
    _, _, common = tables
    assert least_squares.measured_breakdown(common[common.strategy == "lsr"], 4) == 32
    # blr: k falls at every size (however little): no breakdown
    assert least_squares.measured_breakdown(common[common.strategy == "blr"], 4) is None
    # a size never reached ends it too, even when k fell before it
    rows = _rows("lsr", [4, 8, 16], [100, 50, math.inf], ["base", "linear", "not_reached"])
    assert least_squares.measured_breakdown(rows, 4) == 16
    # m0 never reached eps: no breakdown can be read
    rows = _rows("lsr", [4, 8, 16], [math.inf, math.inf, 30], ["not_reached", "not_reached", "linear"])
    assert least_squares.measured_breakdown(rows, 4) is None


def test_breakdown_agrees_at_the_predicted_batch_or_one_doubling_earlier():
    assert least_squares.breakdown_agrees(128, 128) is True
    assert least_squares.breakdown_agrees(128, 64) is True
    assert least_squares.breakdown_agrees(128, 32) is False
    assert least_squares.breakdown_agrees(128, 256) is False
    assert least_squares.breakdown_agrees(128, None) is False
    assert least_squares.breakdown_agrees(None, None) is None


def test_headline_reads_thresholds_bounds_and_regimes(tables):
    study, critical, common = tables
    h = headline.study_headline("toy", study, critical, common, common)
    assert h["common_threshold"] == 0.1
    blr, lsr = h["strategies"]["blr"], h["strategies"]["lsr"]
    assert blr["own_threshold"] == 0.2 and blr["own_source_batch"] == 64
    assert (blr["critical"]["estimate"], blr["critical"]["low"], blr["critical"]["high"]) == (10.0, 8.0, 13.0)
    assert summary.critical_text(blr["critical"]) == "10 [8, 13] (percentile_bootstrap)"
    assert lsr["critical"]["bound"] == "above_range"
    assert summary.critical_text(lsr["critical"]) == "> 32 (percentile_bootstrap)"
    assert summary.overhead_text(blr["overhead_critical"]) == "8 [8, 16] (percentile_bootstrap)"
    assert summary.overhead_text(lsr["overhead_critical"]) == "> 16"
    assert blr["largest_linear"] == 8 and blr["first_stagnation"] == 32
    # speedups 100/52 = 1.92, 100/40 = 2.5, 100/37.5 = 2.67
    assert blr["regimes"][1] == {"batch_size": 8, "regime": "linear", "speedup": pytest.approx(100 / 52)}
    assert summary.regimes_text(blr["regimes"]) == (
        "4 base, 8 linear ×1.9, 16 diminishing ×2.5, 32 stagnation ×2.6, 64 stagnation ×2.7")
    assert summary.regimes_text(lsr["regimes"]).endswith("64 not reached")
    # fastest per batch: equal at 4 (first in table order), blr at 8 (52 < 50? no: lsr 50), lsr at 16, blr beyond
    assert h["fastest"] == {4: "blr", 8: "lsr", 16: "lsr", 32: "lsr", 64: "blr"}
    assert "theory" not in h and h["tuned_present"] is False
    assert headline.common_rule({**study, "common_threshold": "largest"}) == "largest"
    assert summary.COMMON_RULE_TEXT["largest"] == "the loosest of the strategies' own ε"
    assert headline.common_rule({**study, "threshold": {"fixed": 0.1}}) == "fixed"
    assert summary.COMMON_RULE_TEXT["fixed"].startswith("a fixed ε")


def test_headline_with_theory_compares_prediction_and_measurement(tables):
    study, critical, common = tables
    theory_doc = {"lambda_max": 1.0, "beta": 19.0, "stability_limit": 2.0, "mbb_critical_batch": 20.0,
                  "predicted_lsr_breakdown": 64}
    h = headline.study_headline("toy", study, critical, common, common, theory_doc)
    assert h["theory"]["measured_lsr_breakdown"] == 32
    assert h["theory"]["agrees"] is True
    text = summary.render_headline(h)
    assert "predicted at m = 64, measured at m = 32: agrees" in text
    assert "| lsr | 0.1 (32) | > 16 | > 32 (percentile_bootstrap) | 16 | — |" in text


def test_least_squares_theory_on_a_hand_computed_design():
    # rows (2, 0) and (0, 1), no bias: H = X^T X / n = diag(2, 0.5), lambda_1 = 2, beta = max |x|^2 = 4
    X = np.array([[2.0, 0.0], [0.0, 1.0]])
    doc = least_squares.least_squares_theory(X, eta0=0.25, base_batch=1, batch_sizes=[1, 2, 4, 8])
    assert doc["lambda_max"] == pytest.approx(2.0)
    assert doc["beta"] == pytest.approx(4.0)
    assert doc["stability_limit"] == pytest.approx(1.0)
    # eta0 m / m0 = 0.25, 0.5, 1.0, 2.0: the first above 2/lambda_1 = 1 is m = 8 (1.0 is not above)
    assert doc["predicted_lsr_breakdown"] == 8
    assert doc["mbb_critical_batch"] == pytest.approx(3.0)  # beta / lambda + 1
    # heavy-ball momentum 0.5 moves the limit to 2 (1 + 0.5) / 2 = 1.5: still first exceeded at m = 8
    assert least_squares.least_squares_theory(X, 0.25, 1, [1, 2, 4, 8], momentum=0.5)["stability_limit"] == 1.5


def test_design_matrix_appends_the_bias_column():
    X = least_squares.design_matrix(np.array([[[1.0, 2.0]], [[3.0, 4.0]]]))
    assert X.tolist() == [[1.0, 2.0, 1.0], [3.0, 4.0, 1.0]]


def test_summary_file_from_written_tables(tmp_path, tables):
    study, critical, common = tables
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "critical_batch.json").write_text(json.dumps(critical))
    common.to_csv(folder / "speedup.csv", index=False)
    common.to_csv(folder / "speedup_common.csv", index=False)
    study = {**study, "dataset": {"name": "digits"}, "model": {"name": "mlp"}}
    out = tmp_path / "summary.md"
    assert cli_main(["summary", "--studies-json", json.dumps({"toy": study}), "--results", str(tmp_path),
                     "--out", str(out), "--json", str(tmp_path / "summary.json")]) == 0
    text = out.read_text()
    assert "## toy: hand-made" in text
    assert "common ε = 0.1 (the strictest of the strategies' own ε)" in text
    assert "tuned: not in this study" in text
    # the page is written from summary.json's numbers alone
    numbers = json.loads((tmp_path / "summary.json").read_text())
    assert [h["study"] for h in numbers["studies"]] == ["toy"] and numbers["comparisons"] == []
    assert numbers["studies"][0]["strategies"]["lsr"]["critical"]["report"] == "> 32"
    assert numbers["studies"][0]["fastest"]["8"] == "lsr"
    assert summary.render_summary(numbers) == text


def test_tuned_text_names_rates_edges_and_b_noise():
    entry = {"threshold": 0.0237, "eta_star": {"4": 0.0198, "128": 0.1696}, "lr_edge": {"128": "high"},
             "B_noise": {"estimate": 54.74, "low": 11.72, "high": 222.3, "interval_kind": "bootstrap_seeds_trials"},
             "eta_fit_max_abs_log_residual": 0.378}
    assert summary.tuned_text(headline.tuned_numbers(entry)) == (
        "tuned η*(m) at its own ε = 0.0237: 4: 0.0198, 128: 0.17; η*(m) interior at m = 4; high edge at m = 128 "
        "(at an edge the optimum may lie outside the range tried: those k are upper bounds); B_noise = 54.7 "
        "[11.7, 222] (bootstrap_seeds_trials, fit max |log residual| 0.38)")
    assert headline.tuned_numbers({}) is None and summary.tuned_text(None) is None


def test_eta0_is_checked_against_the_tuned_rate_at_the_base_batch():
    # 0.02 / 0.0198 = 1.01: within x1.5; 0.01 / 0.0198 = 0.505 < 1/1.5: not
    check = headline.eta0_against_tuned(0.02, 4, {"4": 0.0198, "8": 0.0395})
    assert check["ratio"] == pytest.approx(0.02 / 0.0198) and check["within"] is True
    assert summary.eta0_text(check) == (
        "fixed rules' η0 = 0.02 against tuned η*(m0 = 4) = 0.0198 (ratio 1.01): within ×1.5 of it")
    assert "ratio 0.51): NOT within ×1.5" in summary.eta0_text(headline.eta0_against_tuned(0.01, 4, {"4": 0.0198}))
    assert headline.eta0_against_tuned(0.01, 4, {"8": 0.0395}) is None  # no tuned rate at m0


def _noise_rows(strategy, b_crit, low, high, report, kind, at, at_min, at_max):
    """noise_scale.csv rows (analysis.noise.VERSUS_CRITICAL_COLUMNS, the ones the summary reads)."""
    sizes = [4, 8, 16][:len(at)]
    return pd.DataFrame({"strategy": strategy, "metric": "train_loss", "batch_size": sizes,
                         "b_simple_at_eps": at, "b_simple_at_eps_min": at_min, "b_simple_at_eps_max": at_max,
                         "n_at_eps": 3, "B_crit": b_crit, "B_crit_low": low, "B_crit_high": high,
                         "B_crit_interval_kind": kind, "B_crit_report": report})


def test_summary_states_b_simple_b_crit_and_their_ratio(tmp_path, tables):
    """From a hand-made noise_scale.csv and critical_batch.json: the median B_simple at eps over batch sizes,
    the per-seed range, B_crit with its interval, and B_crit / median with the interval's range; a bound
    where B_crit is a bound, "not estimable" where it is."""
    study, critical, common = tables
    critical = json.loads(json.dumps(critical))
    critical["strategies"]["srsr"] = {"train_loss": {"threshold": 0.3}}
    noise = pd.concat([
        # blr: median of 100, 400, 200 is 200; 50 / 200 = 0.25, 30 / 200 = 0.15, 80 / 200 = 0.4
        _noise_rows("blr", 50.0, 30.0, 80.0, "50", "student_t", [100.0, 400.0, 200.0],
                    [80.0, 300.0, 150.0], [120.0, 500.0, 260.0]),
        # lsr: B_crit above the range; median of 20 and 40 is 30: ratio > 64 / 30 = 2.13
        _noise_rows("lsr", np.nan, np.nan, np.nan, "> 64", "student_t", [20.0, 40.0], [10.0, 35.0], [25.0, 45.0]),
        # srsr: no B_crit at all
        _noise_rows("srsr", np.nan, np.nan, np.nan, "", "none", [5.0], [4.0], [6.0]),
    ], ignore_index=True)
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "critical_batch.json").write_text(json.dumps(critical))
    common.to_csv(folder / "speedup.csv", index=False)
    common.to_csv(folder / "speedup_common.csv", index=False)
    noise.to_csv(folder / "noise_scale.csv", index=False)
    study = {**study, "dataset": {"name": "digits"}, "model": {"name": "mlp"}, "noise_scale": {"enabled": True}}
    out = tmp_path / "summary.md"
    assert cli_main(["summary", "--studies-json", json.dumps({"toy": study}), "--results", str(tmp_path),
                     "--out", str(out), "--json", str(tmp_path / "summary.json")]) == 0
    text = out.read_text()
    assert ("- noise scale (blr, two-batch, at its own ε = 0.2): B_simple at ε = 200 (median over 3 batch sizes, "
            "9 runs; per-seed range 80–500); measured B_crit = 50 [30, 80] (student_t); "
            "B_crit/B_simple = 0.25 [0.15, 0.4] (from B_crit's interval)") in text
    assert ("- noise scale (lsr, two-batch, at its own ε = 0.1): B_simple at ε = 30 (median over 2 batch sizes, "
            "6 runs; per-seed range 10–45); measured B_crit > 64; B_crit/B_simple > 2.13 (B_crit is a bound)") in text
    assert "measured B_crit not estimable; B_crit/B_simple not estimable" in text
    # a study that does not trace the noise scale gets no such line (and needs no noise_scale.csv)
    (folder / "noise_scale.csv").unlink()
    study["noise_scale"] = {"enabled": False}
    assert cli_main(["summary", "--studies-json", json.dumps({"toy": study}), "--results", str(tmp_path),
                     "--out", str(out), "--json", str(tmp_path / "summary.json")]) == 0
    assert "- noise scale" not in out.read_text()


def test_noise_ratio_is_nan_where_no_run_reached_eps():
    rows = _noise_rows("blr", 50.0, 30.0, 80.0, "50", "student_t", [np.nan], [np.nan], [np.nan])
    assert headline.noise_ratio(rows) is None


def test_comparison_section_gives_the_common_eps_and_each_b_crit():
    """A hand-made comparison table (two studies, own and common rows): the section quotes the common eps,
    each study's B_crit report with its fit and interval, and the speedup at the largest batch."""
    def rows(study, label, scope, eps, speedups, b_crit, low, high, report):
        return pd.DataFrame({"study": study, "label": label, "strategy": "tuned", "metric": "train_loss",
                             "threshold": eps, "threshold_scope": scope, "batch_size": [4, 8, 16],
                             "speedup": speedups, "ideal_speedup": [1.0, 2.0, 4.0], "b_crit": b_crit,
                             "b_crit_low": low, "b_crit_high": high,
                             "b_crit_interval_kind": "bootstrap_seeds_trials", "b_crit_report": report})
    table = pd.concat([rows("a", "SGD", "study", 0.5, [1, 2, 3], 9.0, 1.0, 2.0, "9"),
                       rows("a", "SGD", "common", 0.2, [1.0, 1.5, 2.5], 12.0, 8.0, 15.0, "12"),
                       rows("b", "AdamW", "common", 0.2, [1.0, 2.0, 3.5], 40.0, 20.0, float("nan"), "> 16")])
    h = headline.comparison_headline("g", {"title": "SGD vs AdamW", "common_threshold": "smallest"}, table)
    assert h["common_threshold"] == 0.2 and [c["label"] for c in h["curves"]] == ["SGD", "AdamW"]
    text = summary.render_comparison(h)
    assert "## Comparison g: SGD vs AdamW" in text
    assert "common ε = 0.2 (the smallest of the studies' own ε)" in text
    assert "- SGD (a): B_crit 12 (fit 12, interval [8, 15] (bootstrap_seeds_trials)); speedup at m = 16: 2.5 (ideal 4)" in text
    assert "- AdamW (b): B_crit > 16 (fit 40, interval [20, n/a] (bootstrap_seeds_trials)); speedup at m = 16: 3.5" in text


def test_the_theory_line_states_the_recursions_agreement():
    from batchscale.report.summary import theory_line

    t = {"lambda_max": 1.012, "beta": 19.1, "stability_limit": 1.976, "mbb_critical_batch": 19.9,
         "predicted_lsr_breakdown": 80, "measured_lsr_breakdown": 76, "agrees": True,
         "recursion_agreement": {"blr": {"max_deviation": 0.0204, "up_to": 64},
                                 "lsr": {"max_deviation": 0.026, "up_to": 64}}}
    line = theory_line(t)
    assert line.endswith("Recursion's k(m) against the measured k(m): blr within 2.0% up to m = 64; "
                         "lsr within 2.6% up to m = 64.")
    assert "Recursion" not in theory_line({**t, "recursion_agreement": {}})


def test_an_own_eps_without_a_source_batch_says_why():
    from batchscale.report.summary import _source_text

    assert _source_text({"own_source_batch": 128}, {"threshold_rule": "lower_quartile_of_largest"}) == "128"
    assert _source_text({"own_source_batch": None}, {"threshold_rule": "fixed:0.016"}) == "fixed"
    assert _source_text({"own_source_batch": None}, {"threshold_rule": "lower_quartile_of_largest"}) == \
        "no batch size trained"
