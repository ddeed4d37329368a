"""The refinement round of the `tuned` search wired end to end: a tiny tuned study (digits, 2 batch sizes,
3 first-round trials, 4 round-2 trials, 2 seeds) through `snakemake`; round 1's best trials are checked
against a computation from the traces by hand, round 2's rates against them, and the plan's counts."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from batchscale.spec import search
from batchscale.analysis.steps import k_for_run
from batchscale.spec.manifest import ROUND1_PATH
from batchscale.spec.runs import iter_runs, resolve_refinement, run_config
from batchscale.validate import load_config
from batchscale.jobs.plan import format_plan, make_plan
from batchscale.store.traces import read_trace
from conftest import copy_workflow, snakemake, tiny_tuned_config, write_config

STUDY = "tiny_refine"
SIZES = (16, 64)
SEEDS = (0, 1)
TRIALS = 3
FACTOR = 2.0
REFINE_POINTS = 4  # an even grid of 4 exponents -1, -1/3, 1/3, 1 (no centre): 4 round-2 trials
EPS = 1.5  # a fixed target, so the steps to result can be recomputed from the traces by hand
CONFIG = tiny_tuned_config(STUDY, SIZES, SEEDS, TRIALS, threshold={"fixed": EPS},
                           tuning={"trials": TRIALS, "seed": 0, "lr": {"min": 0.01, "max": 1.0},
                                   "refine": {"factor": FACTOR, "trials": REFINE_POINTS}})
ROUND2 = list(range(TRIALS, TRIALS + REFINE_POINTS))


# ------------------------------------------------------------------ config and plan (no training)


def test_round_two_trials_are_runs_that_read_their_rate_from_round_one():
    config = load_config(CONFIG)
    tuned = [key for key in iter_runs(config) if key.strategy == "tuned"]
    assert {(k.batch_size, k.seed, k.trial) for k in tuned} == {
        (m, s, t) for m in SIZES for s in SEEDS for t in range(TRIALS + REFINE_POINTS)}
    key = next(k for k in tuned if k.trial == TRIALS + 1 and k.batch_size == 64)
    run = run_config(config, key)
    # no rate before round 1 has trained: the config names the file and the trial's place in the range
    assert run["eta0"] is None and run["lr_peak"] is None and "trial_hyper" not in run
    lrs = [t["lr"] for t in search.first_round(CONFIG["studies"][STUDY]["tuning"])]
    assert run["refine"] == {"round1": ROUND1_PATH.format(study=STUDY), "factor": FACTOR,
                             "exponent": pytest.approx(-1.0 / 3.0), "edge_exponent": pytest.approx(2 * 2 / 4),
                             "first_round_range": [min(lrs), max(lrs)]}
    resolved = resolve_refinement(run, {"best": {"64": {"trial": 2, "lr": 0.3, "momentum": 0.8, "k": 9.0}}})
    expected = 0.3 * FACTOR ** (-1.0 / 3.0)
    assert resolved["eta0"] == resolved["lr_peak"] == pytest.approx(expected)
    assert resolved["trial_hyper"] == {"lr": pytest.approx(expected), "momentum": 0.8}
    assert resolved["optimizer"]["momentum"] == 0.8 and "refine" not in resolved


def test_round_two_extends_past_the_edge_where_round_ones_best_is_there():
    """Best at round 1's highest rate: the 4 round-2 trials at best x 2^(2j/4), j = 1..4 (up to factor^2 past
    the edge); at its lowest rate, the same below; inside the range, the even grid around it."""
    config = load_config(CONFIG)
    lrs = [t["lr"] for t in search.first_round(CONFIG["studies"][STUDY]["tuning"])]
    tuned = [k for k in iter_runs(config) if k.strategy == "tuned" and k.trial >= TRIALS and k.batch_size == 64
             and k.seed == 0]
    runs = [run_config(config, key) for key in sorted(tuned, key=lambda k: k.trial)]
    for best, placement, expected in [
            (max(lrs), "extend_high", [max(lrs) * 2 ** (2 * j / 4) for j in (1, 2, 3, 4)]),
            (min(lrs), "extend_low", [min(lrs) / 2 ** (2 * j / 4) for j in (1, 2, 3, 4)]),
            (sorted(lrs)[1], "interior", [sorted(lrs)[1] * 2 ** e for e in (-1, -1 / 3, 1 / 3, 1)])]:
        round1 = {"best": {"64": {"trial": 0, "lr": best, "k": 9.0}}}
        resolved = [resolve_refinement(run, round1) for run in runs]
        assert [r["lr_peak"] for r in resolved] == pytest.approx(expected, rel=1e-12)
        assert {r["refine_center"]["placement"] for r in resolved} == {placement}


def test_refine_grid_spacing_of_1_2_is_reachable():
    # factor 2 and max_spacing 1.2: ceil(2 ln 2 / ln 1.2) + 1 = 9 grid points, neighbours 2^(2/8) = 1.19x apart
    exponents = search.refinement_exponents({"factor": 2.0, "trials": 2, "max_spacing": 1.2})
    grid = sorted(exponents + [0.0])
    assert len(grid) == 9 and max(np.diff(grid)) * math.log(2.0) <= math.log(1.2)


def test_plan_counts_round_two_trials_and_their_packs(tmp_path):
    plan = make_plan(write_config(tmp_path / "c.yaml", CONFIG))
    study = plan.studies[0]
    runs = len(SIZES) * len(SEEDS) * (1 + TRIALS + REFINE_POINTS)
    trials = len(SIZES) * len(SEEDS) * (TRIALS + REFINE_POINTS)
    assert study.n_runs == runs == 32 and study.trials == trials == 28
    # lsr, round 1 and round 2 packed apart at each batch size
    assert study.jobs == 3 * len(SIZES)
    assert f"{runs} training runs ({trials} of them trials of the tuned search) in 6 pack jobs" in format_plan(plan)


# ------------------------------------------------------------------ through the workflow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("refine"))
    write_config(workdir / "config.yaml", CONFIG)
    snakemake(workdir, "--cores", "2")
    return workdir


def trace_lr(path) -> float:
    return json.loads(read_trace(path)["attrs"]["config_json"])["trial_hyper"]["lr"]


def best_by_hand(workdir) -> dict:
    """Each batch size's best first-round trial from its traces: k of every seed (first step at or below
    EPS, by the divergence rule), a trial's k the mean over seeds (inf if a seed misses), fewest k wins,
    ties to the lower trial."""
    best = {}
    for size in SIZES:
        means = {}
        for trial in range(TRIALS):
            ks = []
            for seed in SEEDS:
                trace = read_trace(workdir / f"results/{STUDY}/traces/tuned/bs{size}/seed{seed}_trial{trial}.h5")
                ks.append(k_for_run(trace["points"]["step"], trace["points"]["train_loss"], EPS,
                                    trace["attrs"]["status"]))
            means[trial] = math.inf if any(np.isinf(ks)) else float(np.mean(ks))
        trial = min(means, key=lambda t: (means[t], t))
        best[size] = (trial, means[trial], trace_lr(workdir / f"results/{STUDY}/traces/tuned/bs{size}/seed0_trial{trial}.h5"))
    return best


@pytest.mark.slow
def test_round_one_file_is_the_best_trial_by_hand(finished):
    document = json.loads((finished / ROUND1_PATH.format(study=STUDY)).read_text())
    assert document["threshold"] == EPS and document["metric"] == "train_loss"
    for size, (trial, k, lr) in best_by_hand(finished).items():
        entry = document["best"][str(size)]
        assert math.isfinite(k), f"no first-round trial reached eps {EPS} at batch size {size}: test too short"
        assert (entry["trial"], entry["source"]) == (trial, "steps_to_result")
        assert entry["k"] == pytest.approx(k) and entry["lr"] == pytest.approx(lr)


@pytest.mark.slow
def test_round_two_traces_use_rates_inside_the_refined_range(finished):
    document = json.loads((finished / ROUND1_PATH.format(study=STUDY)).read_text())
    exponents = search.refinement_exponents(CONFIG["studies"][STUDY]["tuning"]["refine"])
    lrs = [t["lr"] for t in search.first_round(CONFIG["studies"][STUDY]["tuning"])]
    for size in SIZES:
        center = document["best"][str(size)]["lr"]
        for j, trial in enumerate(ROUND2):
            # around round 1's best, or past the edge of round 1's range when the best is there
            exponent = (2 * (j + 1) / len(ROUND2) if center == max(lrs) else -2 * (j + 1) / len(ROUND2)
                        if center == min(lrs) else exponents[j])
            for seed in SEEDS:
                path = finished / f"results/{STUDY}/traces/tuned/bs{size}/seed{seed}_trial{trial}.h5"
                trace = read_trace(path)
                lr = trace_lr(path)
                assert lr == pytest.approx(center * FACTOR ** exponent)
                assert trace["attrs"]["lr"] == pytest.approx(lr)  # the rate the engine actually trained with


@pytest.mark.slow
def test_analysis_takes_both_rounds_together(finished):
    results = finished / "results" / STUDY
    with xr.open_dataset(results / "cube.nc", engine="h5netcdf") as cube:
        assert list(cube["trial"].values) == list(range(TRIALS + REFINE_POINTS))
    trials = pd.read_csv(results / "tuned_trials.csv")
    own = trials[trials["threshold_scope"] == "strategy"]
    assert own.groupby("batch_size")["trial"].nunique().to_dict() == {m: TRIALS + REFINE_POINTS for m in SIZES}
    tuned = pd.read_csv(results / "tuned.csv", keep_default_na=False, na_values=[""])
    for size, row in tuned[tuned["threshold_scope"] == "strategy"].set_index("batch_size").iterrows():
        mine = own[own["batch_size"] == size]
        assert row["k"] == pytest.approx(mine["k"].min()) and row["n_trials"] == TRIALS + REFINE_POINTS


@pytest.mark.slow
def test_nothing_reruns_and_a_changed_round_one_retrains_round_two(finished, tmp_path):
    again = snakemake(finished, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    # round 1's result rewritten (another best rate at one batch size): every round-2 pack takes it as input
    workflow = shutil.copytree(finished, tmp_path / "rewritten", symlinks=True)
    path = workflow / ROUND1_PATH.format(study=STUDY)
    document = json.loads(path.read_text())
    document["best"]["16"]["lr"] *= 1.5
    path.write_text(json.dumps(document))
    dry = snakemake(workflow, "-n").stdout
    trained = set(re.findall(r"rule (train_\w+):", dry))
    assert trained == {f"train_{STUDY}_bs{m}_tuned_s0_t0_r2" for m in SIZES}, dry[-2000:]
    # a first-round trace deleted: its pack, round 1's file again, then all of round 2
    workflow = shutil.copytree(finished, tmp_path / "workflow", symlinks=True)
    (workflow / f"results/{STUDY}/traces/tuned/bs64/seed1_trial0.h5").unlink()
    dry = snakemake(workflow, "-n").stdout
    trained = set(re.findall(r"rule (train_\w+):", dry))
    assert trained == {f"train_{STUDY}_bs64_tuned_s0_t0"} | {f"train_{STUDY}_bs{m}_tuned_s0_t0_r2" for m in SIZES}
    assert "rule tuning_refine_ranges:" in dry
