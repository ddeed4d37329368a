"""The tuned strategy: search points, steps to result, intervals, the threshold, and what a tuned search
must show on interpolating least squares, with the exact expected-loss recursion as trainer."""

import math
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from batchscale.analysis import theory as th
from batchscale.spec import search
from batchscale.analysis import tuned
from batchscale.analysis.critical import fit_critical_batch
import theory_reference as reference

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ search points

TUNING = {"trials": 16, "seed": 0, "lr": {"min": 0.001, "max": 1.0}}


def test_first_round_is_reproducible_from_the_seed_and_in_range():
    first = search.first_round(TUNING)
    assert first == search.first_round(dict(TUNING))
    assert [t["trial"] for t in first] == list(range(16))
    assert all(t["round"] == 1 and 0.001 <= t["lr"] <= 1.0 for t in first)
    other = search.first_round({**TUNING, "seed": 1})
    assert [t["lr"] for t in other] != [t["lr"] for t in first]
    # more trials keep the first ones (a Sobol prefix)
    assert search.first_round({**TUNING, "trials": 32})[:16] == first


def test_sixteen_sobol_points_fill_every_sixteenth_of_the_log_range():
    # the 1-D projection of 2^k scrambled Sobol points has one point in each interval of width 2^-k
    lrs = np.array([t["lr"] for t in search.first_round(TUNING)])
    position = np.log(lrs / 0.001) / np.log(1000.0)
    assert sorted(np.floor(position * 16).astype(int)) == list(range(16))


def test_momentum_beta2_and_schedule_dimensions():
    tuning = {**TUNING, "one_minus_momentum": {"min": 0.01, "max": 0.5},
              "one_minus_beta2": {"min": 0.001, "max": 0.1}, "schedules": ["constant", "cosine"]}
    trials = search.first_round(tuning)
    assert all(0.5 <= t["momentum"] <= 0.99 for t in trials)
    assert all(0.9 <= t["beta2"] <= 0.999 for t in trials)
    # two categories from 16 balanced points: 8 each
    assert sorted(t["schedule"] for t in trials) == ["constant"] * 8 + ["cosine"] * 8
    # 1 - momentum is spread on a log scale: one point in each sixteenth of it too
    position = np.log((1 - np.array([t["momentum"] for t in trials])) / 0.01) / np.log(50.0)
    assert sorted(np.floor(position * 16).astype(int)) == list(range(16))


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="tuning.lr"):
        search.first_round({"trials": 4})
    with pytest.raises(ValueError, match="min <= max"):
        search.first_round({"trials": 4, "lr": {"min": 1.0, "max": 0.1}})
    with pytest.raises(ValueError, match="one_minus_momentum: max must be < 1"):
        search.first_round({"trials": 4, "lr": {"min": 0.1, "max": 1.0},
                            "one_minus_momentum": {"min": 0.1, "max": 1.0}})


def test_refinement_round_spacing_numbering_and_kept_hyperparameters():
    settings = search.refine_settings({"factor": 2.0, "max_spacing": 1.2})
    # ceil(2 ln 2 / ln 1.2) + 1 = ceil(7.60) + 1 = 9 points
    assert settings["trials"] == 9
    tuning = {**TUNING, "refine": {"factor": 2.0, "max_spacing": 1.2}}
    rounds = search.refinement_round({8: {"trial": 3, "round": 1, "lr": 0.1, "momentum": 0.9},
                                      2: {"trial": 5, "round": 1, "lr": 0.02, "momentum": 0.95}}, tuning)
    assert list(rounds) == [2, 8]
    trials = rounds[8]
    # the centre 0.1 was run already and is left out: 8 new points numbered from K = 16
    assert [t["trial"] for t in trials] == list(range(16, 24))
    assert all(t["round"] == 2 and t["momentum"] == 0.9 for t in trials)
    lrs = np.sort([t["lr"] for t in trials] + [0.1])
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.2)
    ratios = lrs[1:] / lrs[:-1]
    assert ratios.max() <= 1.2 and ratios == pytest.approx(2.0 ** 0.25)
    assert [t["lr"] for t in rounds[2]] == pytest.approx([0.2 * lr for lr in lrs if lr != 0.1])
    assert search.refinement_round({8: {"lr": 0.1}}, TUNING) == {}
    assert search.refinement_round({8: {"lr": 0.1}}, tuning) == search.refinement_round({8: {"lr": 0.1}},
                                                                                         tuning)


def test_schema_fragment_accepts_good_blocks_refuses_bad_ones_and_matches_search_defaults():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())["$defs"]["study_partial"]["properties"]["tuning"]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {"trials": 8, "seed": 3, "lr": {"min": 0.01, "max": 2.0},
            "one_minus_momentum": {"min": 0.01, "max": 0.5}, "schedules": ["constant", "cosine"],
            "refine": {"factor": 2.0, "max_spacing": 1.2}}
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({})) == []
    for bad in ({"trials": 0}, {"lr": {"min": 0.1}}, {"refine": {"factor": 1.0}}, {"schedules": ["linear"]},
                {"one_minus_momentum": {"min": 0.1, "max": 1.0}}, {"trial": 8}):
        assert list(validator.iter_errors(bad)), bad
    properties = schema["properties"]
    assert properties["trials"]["default"] == search.DEFAULT_TRIALS
    assert properties["seed"]["default"] == search.DEFAULT_SEED
    refine = properties["refine"]["properties"]
    assert {name: refine[name]["default"] for name in refine} == search.DEFAULT_REFINE
    # the default lr range is a valid search space
    assert len(search.first_round({"lr": properties["lr"]["default"]})) == search.DEFAULT_TRIALS


def test_trial_trace_path():
    from batchscale.spec.runs import RunKey

    assert RunKey("s", "tuned", 64, 2, 17).trace_path == "results/s/traces/tuned/bs64/seed2_trial17.h5"


# ------------------------------------------------------------------ steps to result (hand tables)


def hand_table():
    # batch 4: trial 0 (lr 0.1) k = 100, 120 -> 110; trial 1 (lr 0.3) k = 80, inf -> inf;
    #          trial 2 (lr 1.0) k = 90, 70 -> 80  (best, at the high edge)
    # batch 8: trial 0: 60, 50 -> 55 (best); trial 1: 55, 55 -> 55 (tie: lower trial wins); trial 2: inf
    rows = [(4, 0, 0, 100), (4, 0, 1, 120), (4, 1, 0, 80), (4, 1, 1, math.inf), (4, 2, 0, 90), (4, 2, 1, 70),
            (8, 0, 0, 60), (8, 0, 1, 50), (8, 1, 0, 55), (8, 1, 1, 55), (8, 2, 0, math.inf),
            (8, 2, 1, math.inf)]
    lr = {0: 0.1, 1: 0.3, 2: 1.0}
    return pd.DataFrame([{"batch_size": m, "trial": t, "seed": s, "k": float(k), "lr": lr[t],
                          "momentum": 0.9} for m, t, s, k in rows])


def test_steps_to_result_by_hand():
    result = tuned.steps_to_result(hand_table()).set_index("batch_size")
    assert result.loc[4, "k"] == 80.0 and result.loc[4, "trial"] == 2 and result.loc[4, "lr"] == 1.0
    assert result.loc[8, "k"] == 55.0 and result.loc[8, "trial"] == 0 and result.loc[8, "lr"] == 0.1
    assert list(result["n_reached"]) == [2, 2] and list(result["n_trials"]) == [3, 3]
    assert list(result["momentum"]) == [0.9, 0.9]
    # the edge warning: η*(4) is the largest lr tried, η*(8) the smallest
    assert list(result["lr_edge"]) == ["high", "low"]


def test_edge_warning_only_at_the_edges_and_none_reached():
    assert tuned.lr_edge([0.1, 0.3, 1.0], 0.3) == ""
    assert tuned.lr_edge([0.1, 0.3, 1.0], 0.1) == "low"
    table = hand_table()
    table.loc[table["batch_size"] == 8, "k"] = math.inf
    row = tuned.steps_to_result(table).set_index("batch_size").loc[8]
    assert row["k"] == math.inf and row["trial"] == -1 and math.isnan(row["lr"]) and row["lr_edge"] == ""
    # with a strategy column the result is per strategy
    both = pd.concat([hand_table().assign(strategy="tuned"), hand_table().assign(strategy="tuned_b")])
    assert len(tuned.steps_to_result(both)) == 4


def test_fit_optimal_lr_recovers_the_law():
    m = np.array([1, 2, 4, 8, 16, 32, 64, 128])
    eta = 2.0 / (1.0 + 10.0 / m)
    fit = tuned.fit_optimal_lr(m, eta)
    assert fit["eta_max"] == pytest.approx(2.0) and fit["B_noise"] == pytest.approx(10.0)
    assert fit["max_abs_log_residual"] == pytest.approx(0.0, abs=1e-9)
    flat = tuned.fit_optimal_lr(m, np.full(m.size, 0.5))
    assert flat["eta_max"] == pytest.approx(0.5) and flat["B_noise"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(tuned.fit_optimal_lr([1, 2], [0.1, 0.2])["B_noise"])


def synthetic_search(seeds=6, trials=12, seed=0):
    """k = S_min (1 + 16/m) × a trial factor (how far its lr is from the best) × seed noise."""
    rng = np.random.default_rng(seed)
    rows = []
    trial_lrs = np.exp(rng.uniform(np.log(0.01), np.log(1.0), trials))
    for m in (1, 2, 4, 8, 16, 32, 64, 128):
        best_lr = 0.5 / (1 + 8 / m)
        for t, lr in enumerate(trial_lrs):
            factor = 1.0 + 2.0 * np.log(lr / best_lr) ** 2
            for s in range(seeds):
                rows.append({"batch_size": m, "trial": t, "seed": s, "lr": lr,
                             "k": 100.0 * (1 + 16.0 / m) * factor * np.exp(0.05 * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_intervals_widen_when_trials_are_resampled():
    table = synthetic_search()
    seeds_only = tuned.bootstrap_tuned(table, samples=300, resample_trials=False)
    both = tuned.bootstrap_tuned(table, samples=300, resample_trials=True)
    assert seeds_only["interval"] == "bootstrap over seeds, 90%"
    assert both["interval"] == "bootstrap over seeds and trials, 90%"
    width_seeds = (seeds_only["table"]["k_high"] - seeds_only["table"]["k_low"]).to_numpy()
    width_both = (both["table"]["k_high"] - both["table"]["k_low"]).to_numpy()
    assert np.all(width_both > 1.5 * width_seeds)
    assert (both["B_crit_high"] - both["B_crit_low"]) > (seeds_only["B_crit_high"] - seeds_only["B_crit_low"])
    # the point estimates are the envelope itself, whatever is resampled
    envelope = tuned.steps_to_result(table)
    np.testing.assert_allclose(both["table"]["k"], envelope["k"])
    np.testing.assert_allclose(both["table"]["lr"], envelope["lr"])
    assert both["table"]["k_low"].le(both["table"]["k"] * 1.0001).all()
    assert both["B_noise_low"] <= both["B_noise"] <= both["B_noise_high"]


def test_tuned_threshold_uses_the_best_trial_of_the_largest_batch():
    rows = []
    for trial, curve in ((0, [1.0, 0.6, 0.5]), (1, [1.0, 0.4, 0.2]), (2, [1.0, 0.1, np.nan])):
        for seed in (0, 1):
            for step, value in zip((0, 10, 100), curve):
                rows.append({"batch_size": 64, "trial": trial, "seed": seed, "step": step, "loss": value})
                rows.append({"batch_size": 8, "trial": trial, "seed": seed, "step": step, "loss": value / 10})
    traces = pd.DataFrame(rows)
    # trial 2 ends lowest (its last finite value, 0.1) at the largest batch; the rule is the fixed
    # strategies': each seed's finite curve (1 at step 0, 0.1 at step 10) resampled uniformly in steps is a
    # straight line from 1 to 0.1, whose 25% quantile is 0.1 + 0.25 * 0.9 = 0.325 (the pooled raw points,
    # [1, 0.1, 1, 0.1], would give 0.1)
    result = tuned.tuned_threshold(traces, "lower_quartile_of_largest")
    assert result["trial"] == 2 and result["batch_size"] == 64
    assert result["eps"] == pytest.approx(0.325)
    traces.loc[traces["trial"] == 2, "loss"] = np.nan  # trial 2 diverged at once: trial 1 is best
    # trial 1 resampled on steps 0..100: the median is the value at step 50, on the stretch from 0.4 (step
    # 10) to 0.2 (step 100): 0.4 - 0.2 * 40/90 (the pooled raw median would be 0.4)
    result = tuned.tuned_threshold(traces, {"quantile_of_largest": 0.5})
    assert result["trial"] == 1 and result["eps"] == pytest.approx(0.4 - 0.2 * 40 / 90, rel=1e-6)
    assert tuned.tuned_threshold(traces, {"fixed": 0.3})["eps"] == 0.3


def test_tuned_and_a_fixed_strategy_get_the_same_eps_from_the_same_curves():
    """One eps rule for every strategy: tuned's best trial and a fixed strategy's source batch, given the
    same per-seed curves, give the same eps (the largest per-seed lower quartile of the curve resampled
    uniformly in steps)."""
    import xarray as xr
    from batchscale.analysis.thresholds import study_thresholds

    steps = np.array([0, 1, 2, 3, 4])
    curves = {0: [4.0, 3.0, 2.0, 1.0, 0.0], 1: [8.0, 6.0, 4.0, 2.0, 0.0]}
    # seed 0 is a line from 4 to 0: lower quartile 1; seed 1 from 8 to 0: lower quartile 2; eps = max = 2
    # (the pooled raw points would give np.quantile([4, 3, 2, 1, 0, 8, 6, 4, 2, 0], 0.25) = 1.25)
    rows = [{"batch_size": 64, "trial": 0, "seed": seed, "step": int(step), "loss": value}
            for seed, curve in curves.items() for step, value in zip(steps, curve)]
    got = tuned.tuned_threshold(pd.DataFrame(rows), "lower_quartile_of_largest")
    assert got["eps"] == pytest.approx(2.0, rel=1e-9)
    values = np.array([[curves[0], curves[1]]])  # (batch_size, seed, step), the source batch 64
    cube = xr.Dataset({"train_loss": (("strategy", "batch_size", "seed", "step"), values[None]),
                       "status": (("strategy", "batch_size", "seed"), np.full((1, 1, 2), "completed"))},
                      coords={"strategy": ["blr"], "batch_size": [64], "seed": [0, 1], "step": steps})
    fixed = study_thresholds(cube, "train_loss", "lower_quartile_of_largest")["blr"]
    assert fixed == (pytest.approx(2.0, rel=1e-9), 64)
    assert fixed[0] == pytest.approx(got["eps"], rel=1e-12)


# ------------------------------------------------------------------ what it must show, on least squares

LS_TUNING = {"trials": 16, "seed": 0, "lr": {"min": 0.02, "max": 4.0},
             "refine": {"factor": 2.0, "trials": 2, "max_spacing": 1.2}}
LS_BATCHES = [2 ** i for i in range(13)]  # 1 .. 4096 = n (full batch)
EPS_FRACTION = 1e-3  # fixed target: ε = 1e-3 × the initial loss


def tuned_search(problem):
    """Both rounds of the search at every batch size, trained by the exact expected-loss recursion."""
    eps = EPS_FRACTION * problem.initial_loss

    def run(m, trial):
        k = th.expected_steps_to_loss(problem, trial["lr"], m, eps, max_steps=5000)["k"]
        return {"batch_size": m, "trial": trial["trial"], "seed": 0, "round": trial["round"],
                "k": k, "lr": trial["lr"]}

    first = search.first_round(LS_TUNING)
    rows = [run(m, trial) for m in LS_BATCHES for trial in first]
    best = tuned.steps_to_result(pd.DataFrame(rows))
    refinement = search.refinement_round({r.batch_size: {"lr": r.lr} for r in best.itertuples()}, LS_TUNING)
    rows += [run(m, trial) for m in LS_BATCHES for trial in refinement[m]]
    table = pd.DataFrame(rows)
    return table, tuned.steps_to_result(table)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    # the recursion diagonalises many 136×136 matrices: threads only contend on matrices that small
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module", params=[0, 1, 2], ids=lambda s: f"problem{s}")
def least_squares(request, one_blas_thread):
    problem = reference.interpolating_least_squares(n=4096, d=16, decay=1.0, seed=request.param)
    table, result = tuned_search(problem)
    fit = fit_critical_batch(result["batch_size"], result["k"])
    return problem, table, result.set_index("batch_size"), fit


def test_search_points_are_the_same_at_every_batch_size(least_squares):
    _, table, _, _ = least_squares
    first = table[table["round"] == 1].pivot(index="trial", columns="batch_size", values="lr")
    assert first.notna().all().all()
    assert (first.nunique(axis=1) == 1).all()
    # the refinement grid is per batch size, and with round 1 its neighbours are <= 1.2x apart near η*
    for m, group in table.groupby("batch_size"):
        lrs = np.sort(group["lr"].to_numpy())
        best = least_squares[2].loc[m, "lr"]
        near = lrs[(lrs >= best / 2 * 0.999) & (lrs <= best * 2 * 1.001)]
        assert np.max(near[1:] / near[:-1]) <= 1.2


def test_best_lr_is_stable_and_never_decreases(least_squares):
    problem, _, result, _ = least_squares
    eta = result["lr"].to_numpy()
    assert np.all(eta < 2.0 / problem.lambda_max)
    assert np.all(eta[1:] >= eta[:-1] / 1.2)  # one grid step of slack
    assert (result["lr_edge"] == "").all()


def test_full_batch_best_lr_times_lambda(least_squares):
    problem, _, result, _ = least_squares
    assert 1.2 <= result.loc[problem.n, "lr"] * problem.lambda_max <= 2.0


def test_best_lr_doubles_with_the_batch_at_small_batches(least_squares):
    _, _, result, fit = least_squares
    small = [m for m in LS_BATCHES if m <= fit["B_crit"] / 8 and 2 * m in result.index]
    assert small, "no batch size below B_crit/8: the property would be vacuous"
    for m in small:
        assert 1.5 <= result.loc[2 * m, "lr"] / result.loc[m, "lr"] <= 2.5


def test_best_lr_is_at_least_the_mbb_step(least_squares):
    problem, _, result, _ = least_squares
    bound = th.mbb_step(result.index.to_numpy(), problem.beta, problem.lambda_max)
    assert np.all(result["lr"].to_numpy() >= 0.8 * bound)


def test_critical_batch_fit_and_the_mbb_critical_batch(least_squares):
    problem, _, result, fit = least_squares
    assert tuned.critical_batch_fit_residual(result.index, result["k"], fit) <= 0.25
    predicted = problem.beta / problem.lambda_max - 1.0
    assert predicted / 3.0 <= fit["B_crit"] <= 3.0 * predicted


@pytest.mark.parametrize("base_batch", [1, 2, 4, 8, 16])
def test_linear_scaling_from_the_tuned_rate_breaks_down_where_predicted(least_squares, base_batch):
    problem, _, result, _ = least_squares
    eta0 = result.loc[base_batch, "lr"]
    breakdown = th.lsr_breakdown_batch(eta0, base_batch, problem.lambda_max, LS_BATCHES)
    assert breakdown is not None

    def diverges(m):
        # the expected loss grows without bound exactly when the recursion's spectral radius exceeds 1
        return th.expected_loss_curve(problem, eta0 * m / base_batch, m).spectral_radius > 1.0

    first_diverging = min(m for m in LS_BATCHES if diverges(m))
    assert first_diverging in (breakdown, breakdown // 2)
    assert all(diverges(m) for m in LS_BATCHES if m >= first_diverging)
    assert not any(diverges(m) for m in LS_BATCHES if m <= breakdown // 4)


def test_an_interval_over_resamples_that_miss_eps_ends_at_inf_not_nan():
    # 20 resamples: 15 finite (1..15) and 5 where no drawn trial reached eps (inf). The 95th percentile is
    # then one of the inf draws (order statistic), the 5th the 1st-2nd smallest value.
    samples = np.array([*range(1, 16), *[np.inf] * 5], dtype=float)[:, None]
    low, high = tuned.percentiles(samples, 0.9)
    assert high[0] == np.inf and low[0] == pytest.approx(1.0)
    # all finite: linear interpolation as numpy's percentile
    finite = np.arange(1.0, 21.0)[:, None]
    low, high = tuned.percentiles(finite, 0.9)
    assert low[0] == pytest.approx(np.percentile(finite, 5)) and high[0] == pytest.approx(np.percentile(finite, 95))


def test_lowest_final_trial_needs_a_final_value_for_every_seed():
    # finals (last finite value per seed): trial 0 -> 0.5, 0.7 (mean 0.6); trial 1 -> 0.4, 0.6 (0.5);
    # trial 2 -> 0.1 and a seed with no finite value (out)
    rows = []
    for trial, seeds in ((0, ([1.0, 0.5], [1.0, 0.7])), (1, ([1.0, 0.4], [0.9, np.nan, 0.6])),
                         (2, ([1.0, 0.1], [np.nan, np.nan]))):
        for seed, curve in enumerate(seeds):
            rows += [{"trial": trial, "seed": seed, "step": step, "loss": v} for step, v in enumerate(curve)]
    table = pd.DataFrame(rows)
    assert tuned.lowest_final_trial(table) == 1
    assert tuned.lowest_final_trial(table[table["trial"] == 2]) is None
