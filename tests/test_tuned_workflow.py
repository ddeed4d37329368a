"""The `tuned` strategy wired end to end: a tiny tuned study (digits, 3 batch sizes, 3 trials, 2 seeds)
through `snakemake`, the trial path template, the plan's counts and the config errors of a tuning block."""

from __future__ import annotations

import copy
import json
import math
import shutil

import h5py
import pandas as pd
import pytest
import xarray as xr

from batchscale.spec import search
from batchscale.errors import ConfigError
from batchscale.spec.runs import iter_runs, run_config, RunKey
from batchscale.validate import load_config
from batchscale.jobs.plan import format_plan, make_plan
from batchscale.errors import TraceError
from batchscale.store.traces import read_trace
from conftest import copy_workflow, snakemake, tiny_tuned_config, write_config

STUDY = "tiny_tuned"
SIZES = (16, 32, 64)
SEEDS = (0, 1)
TRIALS = 3
CONFIG = tiny_tuned_config(STUDY, SIZES, SEEDS, TRIALS)
TUNED_FIGURES = ("tuned_steps_to_result", "tuned_eta_star", "tuned_trials")


def with_tuning(**tuning) -> dict:
    config = copy.deepcopy(CONFIG)
    config["studies"][STUDY]["tuning"].update(tuning)
    return config


# ------------------------------------------------------------------ config, paths, plan (no training)


def test_trial_paths_round_trip_and_fixed_paths_keep_their_form():
    trial = RunKey(STUDY, "tuned", 64, 2, 17)
    assert trial.trace_path == f"results/{STUDY}/traces/tuned/bs64/seed2_trial17.h5"
    fixed = RunKey(STUDY, "lsr", 64, 2)
    assert fixed.trace_path == f"results/{STUDY}/traces/lsr/bs64/seed2.h5"
    for key in (trial, fixed):
        assert RunKey.from_trace_path("/some/dir/" + key.trace_path) == key
    assert RunKey.from_trace_path(f"results/{STUDY}/traces/tuned/bs64/seed2_trialX.h5") is None


def test_every_trial_seed_and_batch_size_is_a_run_with_the_trial_rate():
    config = load_config(CONFIG)
    runs = list(iter_runs(config))
    tuned = [key for key in runs if key.strategy == "tuned"]
    assert len(runs) == len(SIZES) * len(SEEDS) * (1 + TRIALS)
    assert {(k.batch_size, k.seed, k.trial) for k in tuned} == {
        (m, s, t) for m in SIZES for s in SEEDS for t in range(TRIALS)}
    assert all(key.trial is None for key in runs if key.strategy == "lsr")
    lrs = [t["lr"] for t in search.first_round(CONFIG["studies"][STUDY]["tuning"])]
    for key in tuned:
        run = run_config(config, key)
        # the trial's rate at every batch size: no scaling rule, no warm-up (tuned is not in warmup_strategies)
        assert run["lr_peak"] == run["eta0"] == lrs[key.trial] and run["warmup_epochs"] == 0
        assert run["trial"] == key.trial and run["trial_hyper"] == {"lr": lrs[key.trial]}


def test_searched_momentum_and_schedule_reach_the_run_config():
    config = load_config(with_tuning(one_minus_momentum={"min": 0.01, "max": 0.5},
                                     schedules=["constant", "cosine"]))
    trials = search.first_round(config["studies"][STUDY]["tuning"])
    for key in (k for k in iter_runs(config) if k.trial is not None):
        run = run_config(config, key)
        assert run["optimizer"]["momentum"] == pytest.approx(trials[key.trial]["momentum"])
        assert run["schedule"]["name"] == trials[key.trial]["schedule"]


def test_plan_counts_runs_trials_and_pack_jobs(tmp_path):
    plan = make_plan(write_config(tmp_path / "c.yaml", CONFIG))
    study = plan.studies[0]
    # lsr and tuned packed apart at each batch size (8 seeds and 8 trials per pack by default)
    assert study.n_runs == 24 and study.trials == 18 and study.jobs == 3 * 2
    small = copy.deepcopy(CONFIG)
    small["studies"][STUDY]["pack"] = {"trials_per_pack": 2}
    assert make_plan(small).studies[0].jobs == 3 * (1 + 2)  # trials 0-1 and 2 in two packs
    assert "24 training runs (18 of them trials of the tuned search) in 6 pack jobs" in format_plan(plan)


@pytest.mark.parametrize("change, message", [
    ({"lr": {"min": 1.0, "max": 0.1}}, "studies.tiny_tuned.tuning.lr: min (1) is larger than max (0.1)"),
    ({"trials": 0}, "studies.tiny_tuned.tuning.trials: must be >= 1"),
    ({"refine": {"factor": 1.0}}, "studies.tiny_tuned.tuning.refine.factor: must be > 1, got 1.0"),
    ({"refine": {"trials": 1}}, "studies.tiny_tuned.tuning.refine.trials: must be >= 2, got 1"),
    ({"schedules": ["linear"]}, "studies.tiny_tuned.tuning.schedules.0: 'linear' is not allowed; allowed values: "
                                "constant, step, cosine"),
    ({"one_minus_momentum": {"min": 0.1, "max": 1.0}},
     "studies.tiny_tuned.tuning.one_minus_momentum.max: must be < 1"),
    ({"lrs": {"min": 0.1, "max": 1.0}}, "studies.tiny_tuned.tuning: unknown key 'lrs'"),
])
def test_a_bad_tuning_block_is_one_line_naming_the_key(change, message):
    with pytest.raises(ConfigError) as error:
        load_config(with_tuning(**change))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tuned_is_an_allowed_strategy_and_a_typo_is_not():
    bad = copy.deepcopy(CONFIG)
    bad["studies"][STUDY]["strategies"] = ["lsr", "tunned"]
    with pytest.raises(ConfigError, match="allowed values: blr, lsr, srsr, longer, tuned"):
        load_config(bad)


def test_tuned_alone_is_refused_and_beta2_only_for_adamw():
    alone = copy.deepcopy(CONFIG)
    alone["studies"][STUDY]["strategies"] = ["tuned"]
    with pytest.raises(ConfigError, match=r"strategies: \['tuned'\] alone is not supported; add at least one fixed"):
        load_config(alone)
    with pytest.raises(ConfigError, match="tuning.one_minus_beta2: searched only with optimizer adamw"):
        load_config(with_tuning(one_minus_beta2={"min": 0.001, "max": 0.1}))


# ------------------------------------------------------------------ through the workflow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("tuned"))
    write_config(workdir / "config.yaml", CONFIG)
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.mark.slow
def test_each_trial_has_its_trace_checked_against_its_path(finished, tmp_path):
    traces = finished / "results" / STUDY / "traces" / "tuned"
    assert len(list(traces.glob("bs*/seed*_trial*.h5"))) == len(SIZES) * len(SEEDS) * TRIALS
    path = traces / "bs32" / "seed1_trial2.h5"
    assert json.loads(read_trace(path)["attrs"]["config_json"])["trial"] == 2
    # a trial's trace copied under another trial's name is refused: the check compares the trial too
    copied = tmp_path / "results" / STUDY / "traces" / "tuned" / "bs32" / "seed1_trial0.h5"
    copied.parent.mkdir(parents=True)
    shutil.copy(path, copied)
    with pytest.raises(TraceError, match="records trial 2 but the path is for trial 0"):
        read_trace(copied)


@pytest.mark.slow
def test_cube_holds_the_trials_beside_the_fixed_strategies(finished):
    with xr.open_dataset(finished / "results" / STUDY / "cube.nc", engine="h5netcdf") as cube:
        assert list(cube["strategy"].values) == ["lsr"]
        assert cube["tuned_train_loss"].dims == ("batch_size", "trial", "seed", "step")
        assert list(cube["trial"].values) == list(range(TRIALS))
        lrs = [t["lr"] for t in search.first_round(CONFIG["studies"][STUDY]["tuning"])]
        for size in SIZES:
            assert list(cube["tuned_lr"].sel(batch_size=size).values) == pytest.approx(lrs)
            assert list(cube["tuned_lr_peak"].sel(batch_size=size, seed=0).values) == pytest.approx(lrs)


@pytest.mark.slow
def test_tuned_table_is_the_best_trial_of_the_trial_table(finished):
    results = finished / "results" / STUDY
    tuned = pd.read_csv(results / "tuned.csv", keep_default_na=False, na_values=[""])
    trials = pd.read_csv(results / "tuned_trials.csv")
    assert set(tuned["threshold_scope"]) == {"strategy", "common"}
    assert len(tuned) == 2 * len(SIZES) and len(trials) == 2 * len(SIZES) * TRIALS
    for (scope, size), row in tuned.set_index(["threshold_scope", "batch_size"]).iterrows():
        mine = trials[(trials["threshold_scope"] == scope) & (trials["batch_size"] == size)]
        assert row["k"] == pytest.approx(mine["k"].min())  # steps to result: the fewest steps of any trial
        best = mine.loc[mine["k"].idxmin()]
        assert row["best_trial"] == best["trial"] and row["lr"] == pytest.approx(best["lr"])
        edge = "low" if best["lr"] == mine["lr"].min() else "high" if best["lr"] == mine["lr"].max() else ""
        assert (row["lr_edge"] if isinstance(row["lr_edge"], str) else "") == edge
        assert row["interval_kind"] == "bootstrap_seeds_trials"
    # one common eps: the tuned rows at scope common use the same eps as the fixed rules' common table
    common = pd.read_csv(results / "speedup_common.csv")
    assert set(tuned.loc[tuned["threshold_scope"] == "common", "threshold"]) == set(common["threshold"])


@pytest.mark.slow
def test_critical_batch_json_has_tuned_beside_the_fixed_rules(finished):
    document = json.loads((finished / "results" / STUDY / "critical_batch.json").read_text())
    thresholds = document["thresholds"]["train_loss"]
    own = {name: entry["threshold"] for name, entry in thresholds["strategies"].items()}
    assert set(own) == {"lsr", "tuned"} and thresholds["common"] == min(own.values())  # common: smallest
    assert thresholds["strategies"]["tuned"]["source_batch_size"] == max(SIZES)
    entry = document["strategies"]["tuned"]["train_loss"]
    assert entry["B_crit"]["interval_kind"] == "bootstrap_seeds_trials"
    assert {"B_noise", "eta_max", "eta_star", "log_rmse", "overhead_critical_batch"} <= set(entry)
    tuned = pd.read_csv(finished / "results" / STUDY / "tuned.csv")
    at_own = tuned[tuned["threshold_scope"] == "strategy"]
    assert entry["eta_star"] == {str(m): pytest.approx(lr) for m, lr in zip(at_own["batch_size"], at_own["lr"])}
    eta_max, b_noise = entry["eta_max"], entry["B_noise"]["estimate"]
    if eta_max is not None and b_noise is not None and math.isfinite(eta_max):
        assert eta_max > 0 and b_noise >= 0
    assert "tuned" in document["common"]["train_loss"]["strategies"]


@pytest.mark.slow
def test_tuned_figures_are_drawn_and_nothing_reruns(finished):
    for name in TUNED_FIGURES:
        for ext in ("png", "svg"):
            assert (finished / "results" / STUDY / "figures" / f"{name}.{ext}").stat().st_size > 1000
    again = snakemake(finished, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
