"""noise_vs_tuned.csv (issue 22): B_simple at eps beside the tuned B_crit at the same eps, and the fixed-rule
relation for blr, by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from batchscale.analysis import noise_tuned as nt


def over_training():
    """blr at batch 4 (seeds 0, 1) and 16 (seed 0), lsr at 4 (seed 0): B_simple 10, 20, 40 at steps 1, 10, 100
    (seed 1 doubled); one invalid window of three on blr bs16."""
    rows = []
    for strategy, batch, seed, scale, invalid in (("blr", 4, 0, 1.0, False), ("blr", 4, 1, 2.0, False),
                                                  ("blr", 16, 0, 5.0, True), ("lsr", 4, 0, 3.0, False)):
        for i, step in enumerate((1, 10, 100)):
            rows.append({"strategy": strategy, "batch_size": batch, "seed": seed, "step": step,
                         "b_simple": scale * 10 * 2 ** i, "b_simple_exact": scale * 12 * 2 ** i,
                         "window_invalid": invalid and i == 2})
    return pd.DataFrame(rows)


def critical_document(with_tuned=True):
    tuned = {"threshold": 0.2, "eta_max": 0.5, "eta_star": {"4": 0.05, "16": 0.2},
             "B_crit": {"estimate": 60.0, "low": 30.0, "high": 90.0, "interval_kind": "percentile", "report": "60"}}
    common = {"threshold": 0.1, "strategies": {
        "blr": {"B_crit": {"estimate": 8.0, "low": 6.0, "high": 10.0, "report": "8"}},
        **({"tuned": {"B_crit": {"estimate": 120.0, "low": 80.0, "high": 200.0, "interval_kind": "percentile",
                                 "report": "120"}}} if with_tuned else {})}}
    return {"strategies": {"tuned": {"train_loss": tuned}} if with_tuned else {}, "common": {"train_loss": common}}


@pytest.fixture
def k_at_eps(monkeypatch):
    """k(eps) per run: step 10 at the common eps 0.1, step 100 at tuned's eps 0.2."""
    def fake(cube, thresholds, metric="train_loss"):
        rows = [{"strategy": s, "batch_size": b, "seed": seed, "k": 10.0 if eps == 0.1 else 100.0}
                for s, eps in thresholds.items() for b, seed in ((4, 0), (4, 1), (16, 0))
                if not (s == "lsr" and (b, seed) != (4, 0))]
        return pd.DataFrame(rows, columns=["strategy", "batch_size", "seed", "k"])
    monkeypatch.setattr(nt, "k_runs_from_cube", fake)


def test_b_simple_at_the_smallest_batch_beside_tuned_b_crit_at_the_same_eps(k_at_eps):
    table = nt.noise_vs_tuned(None, over_training(), critical_document(),
                              {"strategies": ["blr", "lsr", "tuned"], "eta0": 0.1})
    assert list(table.columns) == list(nt.NOISE_VS_TUNED_COLUMNS)
    blr = table[(table["strategy"] == "blr") & (table["eps_scope"] == "common")].iloc[0]
    # at step 10: seeds of batch 4 read 20 and 40; batch 16 reads 100 (context only)
    assert (blr["source_batch"], blr["n_runs"], blr["b_simple"]) == (4, 2, 30.0)
    assert (blr["b_simple_low"], blr["b_simple_high"], blr["b_simple_exact"]) == (20.0, 40.0, 36.0)
    assert blr["b_simple_median_all_batches"] == 40.0
    assert blr["invalid_fraction"] == pytest.approx(1 / 9)  # one window of nine points
    assert blr["comparison"] == "tuned" and blr["tuned_B_crit"] == 120.0
    assert (blr["ratio"], blr["ratio_low"], blr["ratio_high"]) == pytest.approx((4.0, 2.0, 10.0))
    assert blr["ratio_exact"] == pytest.approx(120 / 36)
    # fixed rule: x = 0.1 / 0.5 = 0.2, B_crit(eta) = 30 x 0.2 / 0.8 = 7.5 against blr's measured 8
    assert (blr["x"], blr["fixed_rule_B_crit_predicted"], blr["fixed_B_crit_measured"]) == pytest.approx(
        (0.2, 7.5, 8.0))
    assert blr["fixed_ratio_measured_over_predicted"] == pytest.approx(8 / 7.5)
    own = table[(table["strategy"] == "blr") & (table["eps_scope"] == "tuned_own")].iloc[0]
    assert (own["threshold"], own["b_simple"], own["tuned_B_crit"], own["ratio"]) == pytest.approx((0.2, 60.0, 60.0, 1.0))
    assert math.isnan(own["fixed_B_crit_measured"])  # blr's B_crit is not measured at tuned's own eps
    lsr = table[(table["strategy"] == "lsr") & (table["eps_scope"] == "common")].iloc[0]
    assert lsr["b_simple"] == 60.0 and math.isnan(lsr["fixed_rule_B_crit_predicted"])  # the check is blr's


def test_without_a_tuned_strategy_the_comparison_needs_one(k_at_eps):
    table = nt.noise_vs_tuned(None, over_training(), critical_document(with_tuned=False),
                              {"strategies": ["blr", "lsr"], "eta0": 0.1})
    assert set(table["eps_scope"]) == {"common"}
    assert set(table["comparison"]) == {"needs_tuned"}
    assert table["ratio"].isna().all() and table["tuned_B_crit"].isna().all()
    assert nt.study_noise_vs_tuned(None, pd.DataFrame(), {}, {}).columns.tolist() == list(nt.NOISE_VS_TUNED_COLUMNS)


def test_eta_max_from_the_fit_or_the_largest_batch():
    assert nt.eta_max_of({"eta_max": 0.4, "eta_star": {"4": 0.1}}) == 0.4
    assert nt.eta_max_of({"eta_max": None, "eta_star": {"4": 0.1, "128": 0.3}}) == 0.3
    assert math.isnan(nt.eta_max_of({}))
    assert np.isnan(nt.fixed_rule_check({"b_simple": 10.0}, 0.6, 0.5, 3.0)["fixed_rule_B_crit_predicted"])  # x >= 1


def test_summary_lines_read_the_table(k_at_eps):
    """The summary's noise lines quote noise_vs_tuned.csv: B_simple with its seed range and invalid fraction, the
    tuned B_crit with its interval and the ratio; blr's fixed-rule check as a second line; needs_tuned without
    a ratio."""
    from batchscale.report.noise_summary import noise_tuned_lines

    table = nt.noise_vs_tuned(None, over_training(), critical_document(),
                              {"strategies": ["blr", "lsr", "tuned"], "eta0": 0.1})
    lines = noise_tuned_lines(nt.noise_tuned_headlines(table[table["strategy"] == "blr"]))
    assert lines[0] == ("noise scale (blr runs at m = 4, two-batch, at the common ε = 0.1): B_simple = 30 [20, 40] "
                        "(seed range of 2 runs), exact 36; median over every batch size 40; 11% of windows invalid; "
                        "tuned B_crit = 120 [80, 200] (percentile); B_crit/B_simple = 4 [2, 10] (both intervals), "
                        "with the exact B_simple 3.33")
    assert lines[1].startswith("noise scale (blr runs at m = 4, two-batch, at tuned's own ε = 0.2): B_simple = 60")
    assert lines[2] == ("fixed-rule check (blr, a second line, not a verdict on the noise scale): x = η/η_max = "
                        "0.1/0.5 = 0.2, B_simple·x/(1 − x) = 7.5 against blr's measured B_crit 8 at the common ε "
                        "(measured/predicted 1.07)")
    none = nt.noise_vs_tuned(None, over_training(), critical_document(with_tuned=False),
                             {"strategies": ["blr"], "eta0": 0.1})
    line = noise_tuned_lines(nt.noise_tuned_headlines(none))[0]
    assert "needs a tuned strategy" in line and "B_crit/B_simple" not in line
    bound = critical_document()
    bound["common"]["train_loss"]["strategies"]["blr"]["B_crit"] = {"estimate": None, "report": "> 64"}
    table = nt.noise_vs_tuned(None, over_training(), bound, {"strategies": ["blr", "tuned"], "eta0": 0.1})
    assert "against blr's measured B_crit > 64 at the common ε" in noise_tuned_lines(nt.noise_tuned_headlines(table))[-1]


def test_tuned_trial_runs_trace_the_noise_scale_only_when_asked():
    """noise_scale.tuned_trials (default false) turns the noise scale off in tuned's trial runs only, and stays out
    of every run config (a fixed run's config, and so its hash, does not depend on it)."""
    from batchscale.spec.runs import RunKey, run_config
    from batchscale.validate import load_config
    from conftest import tiny_tuned_config

    def runs(**noise):
        config = load_config(tiny_tuned_config("t", (16, 32), (0,), 2, noise_scale={"enabled": True, **noise}))
        return run_config(config, RunKey("t", "lsr", 16, 0)), run_config(config, RunKey("t", "tuned", 16, 0, 1))

    fixed, trial = runs()
    assert fixed["noise_scale"]["enabled"] and not trial["noise_scale"]["enabled"]
    assert "tuned_trials" not in fixed["noise_scale"] and "window" not in fixed["noise_scale"]
    fixed_on, trial_on = runs(tuned_trials=True)
    assert trial_on["noise_scale"]["enabled"] and fixed_on == fixed


def test_rows_from_the_same_runs_at_m0_make_one_line():
    from batchscale.report.noise_summary import noise_tuned_lines

    base = {"eps_scope": "common", "source_batch": 4, "threshold": 0.1, "b_simple": 48.0, "b_simple_low": 13.0,
            "b_simple_high": 71.0, "n_runs": 5, "b_simple_exact": None, "invalid_fraction": 0.001,
            "comparison": "needs_tuned", "x": None}
    rows = [{**base, "strategy": "blr", "b_simple_median_all_batches": 122.0},
            {**base, "strategy": "lsr", "b_simple_median_all_batches": 76.1}]
    (line,) = noise_tuned_lines(rows)
    assert line.startswith("noise scale (blr, lsr runs at m = 4 (the same runs: the strategies coincide at m0)")
    assert "median over every batch size 122 (blr), 76.1 (lsr)" in line
