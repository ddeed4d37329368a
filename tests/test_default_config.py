"""The default config.yaml (issue 12): comparisons change one thing at a time, and the real-data studies
train their largest batch on at least 8 steps per epoch with no example dropped."""

from pathlib import Path

import pytest

from batchscale.spec.predict import predict_noise
from batchscale.spec.reading import read_yaml
from batchscale.validate import load_config

ROOT = Path(__file__).resolve().parents[1]
# What may differ between the studies of a comparison: the thing compared, and the description.
SHARED_KEYS = ("batch_sizes", "threshold", "base_batch", "eta0", "epochs", "seeds", "common_threshold", "regimes")
# ... and what a comparison lets differ by design: real_data sets each problem at its own eta*(m0) and budget
# (MNIST reaches eps within 6 epochs); dataset_size gives every size the same steps, so epochs x n is shared;
# the CNN's lsr needs a longer warm-up than the MLP's (20 steps against 5; blr does not warm up); AdamW runs 3
# seeds against SGD's 5 (the time budget: its intervals are wider, its measurement the same).
DIFFERING_BY_DESIGN = {"real_data": {"eta0", "epochs", "seeds", "evaluation", "warmup_steps"},
                       "dataset_size": {"epochs"}, "architectures_blr": {"warmup_steps"},
                       "architectures_lsr": {"warmup_steps"}, "sgd_vs_adamw": {"seeds"}}


@pytest.fixture(scope="module")
def config():
    return load_config(read_yaml(ROOT / "config.yaml"))


def test_every_comparison_shares_batch_sizes_and_threshold_rule(config):
    assert config["comparisons"], "the default config has comparisons"
    for name, comparison in config["comparisons"].items():
        studies = [config["studies"][s] for s in comparison["studies"]]
        for key in SHARED_KEYS:
            # eta0 is the base rate of the fixed rules; `tuned` searches the learning rate and never reads it,
            # and SGD's and AdamW's base rates legitimately differ.
            if key == "eta0" and comparison["strategy"] == "tuned" or key in DIFFERING_BY_DESIGN.get(name, ()):
                continue
            values = [study[key] for study in studies]
            assert all(v == values[0] for v in values), f"{name}: studies differ in {key}: {values}"
        for study in studies:
            assert comparison["strategy"] in study["strategies"], name


def test_comparisons_change_one_thing(config):
    """Besides the shared keys, the studies of a comparison differ in exactly one of model or dataset, or,
    comparing tuned envelopes, the optimizer (SGD vs AdamW)."""
    for name, comparison in config["comparisons"].items():
        studies = [config["studies"][s] for s in comparison["studies"]]
        differing = {key for key in ("model", "dataset", "optimizer", "warmup_epochs", "warmup_steps", "evaluation")
                     if any(s[key] != studies[0][key] for s in studies)} - DIFFERING_BY_DESIGN.get(name, set())
        allowed = {"model", "dataset", "optimizer"} if comparison["strategy"] == "tuned" else {"model", "dataset"}
        assert len(differing) == 1 and differing <= allowed, (name, differing)


def test_largest_batch_gets_eight_steps_per_epoch_and_drops_nothing(config):
    from batchscale.data import load_dataset

    sizes_seen = {}
    for name, study in config["studies"].items():
        key = repr(sorted(study["dataset"].items()))
        if key not in sizes_seen:
            sizes_seen[key] = load_dataset(study["dataset"]).num_train
        n = sizes_seen[key]
        assert max(study["batch_sizes"]) * 8 <= n, (name, n)
        # least squares adds sizes around its stability edge (72..96), which drop a few examples per epoch
        sizes = [m for m in study["batch_sizes"] if name != "least_squares" or m & (m - 1) == 0]
        assert all(n % m == 0 for m in sizes), (name, n)


def test_the_dataset_size_studies_train_the_same_steps_at_every_batch_size(config):
    studies = [config["studies"][name] for name in config["comparisons"]["dataset_size"]["studies"]]
    steps = {study["data_sizes"]["train"] * study["epochs"] for study in studies}
    assert len(steps) == 1, steps


def test_real_data_studies_have_five_seeds_and_the_three_rules(config):
    for name in ("digits_mlp", "digits_cnn"):
        study = config["studies"][name]
        assert len(study["seeds"]) >= 5
        assert {"blr", "lsr"} <= set(study["strategies"])
    assert {"blr", "lsr", "srsr"} <= set(config["studies"]["digits_mlp"]["strategies"])


def test_a_study_with_a_measured_critical_batch_traces_the_noise_scale(config):
    """Issue 14: the default run sets B_simple beside a measured B_crit; teacher_2048's B_crit lies inside its
    batch sizes (12.5 in 4..64), so its two-batch noise scale is on (and digits_mlp's, cheap enough), with
    nested batches the evaluation subset can hold."""
    for name in ("teacher_2048", "digits_mlp"):
        noise = config["studies"][name]["noise_scale"]
        assert noise["enabled"] is True, name
        subset = config["studies"][name]["evaluation"]["train_subset"]
        assert 0 < noise["batch_small"] < subset, name
        # issue 22: the estimator that knows its limits; exact per-example values in the prediction runs, where
        # the prediction is read (on every grid run they would cost about 400 CPU s: the time budget)
        assert noise["batch_big"] == "auto" and noise["draws"] == "auto", name
        assert config["studies"][name]["predict"]["enabled"], name
        exact = predict_noise(config["studies"][name])["exact_max_params_times_examples"]
        assert exact >= 9610 * subset, name  # the MLP's parameters x subset
