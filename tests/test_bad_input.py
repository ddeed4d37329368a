"""Configs too big or inconsistent to run, and configs that would run code: each refused in one line naming
the key, before any run is listed or any job starts."""

from __future__ import annotations

import copy
import time

import pytest
import yaml

from batchscale.errors import ConfigError
from batchscale.spec.reading import read_yaml
from batchscale.validate import load_config
from conftest import copy_workflow, snakemake, write_config

BASE = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [16]}}, "eta0": 0.05,
        "base_batch": 16, "strategies": ["blr", "lsr"], "epochs": 2, "batch_sizes": [16, 64], "seeds": [0, 1],
        "device": "cpu"}
TUNING = {"trials": 4, "lr": {"min": 0.01, "max": 1.0}}


def study(**changes) -> dict:
    changed = copy.deepcopy(BASE)
    changed.update(changes)
    return changed


def one(**changes) -> dict:
    return {"studies": {"s": study(**changes)}}


CASES = {
    # sizes: refused from counts, before anything is enumerated or built
    "refinement spacing": (one(strategies=["blr", "tuned"], tuning={**TUNING, "refine": {"factor": 2, "max_spacing": 1.0000005}}),
                           "config key limits.max_runs: the config asks for 11,090,380 training runs"),
    "100,000 trials": (one(strategies=["blr", "tuned"], tuning={**TUNING, "trials": 100_000}),
                       "config key limits.max_runs: the config asks for 400,004 training runs"),
    "100,000 checkpoints": (one(branching={"enabled": True, "checkpoints": 100_000, "strategy": "blr"}),
                            "config key limits.max_branch_jobs: branching asks for 100,000 checkpoint jobs"),
    "epochs 1e9": (one(epochs=1_000_000_000), "config key studies.s.epochs: a blr run at batch size 16 would take "
                                              "89,000,000,000 steps, more than limits.max_steps_per_run"),
    "10^7 hidden units": (one(model={"name": "mlp", "options": {"hidden": [10_000_000]}}),
                          "config key studies.s.model: 750,000,010 parameters x 2 runs per pack need about 28,610 MB"),
    "1e8 bootstrap samples": (one(bootstrap={"samples": 100_000_000}),
                              "config key studies.s.bootstrap.samples: 100,000,000 resamples make 1,200,000,000 refits"),
    # what the workflow could not run
    "study named summary.md": ({"studies": {"summary.md": study()}}, "config key studies.summary.md: the name is taken"),
    "study named comparisons": ({"studies": {"comparisons": study()}}, "config key studies.comparisons: the name is taken"),
    "300-character name": ({"studies": {"a" * 300: study()}}, "has 300 characters; allowed: at most 64"),
    "names giving one job name": ({"studies": {"a-b": study(), "a_b": study()}},
                                  "config key studies.a_b: gives the same job names as study 'a-b'"),
    "branch batch past the data": (one(branching={"enabled": True, "k": [1, 2, 1000], "strategy": "blr"}),
                                   "config key studies.s.branching.k: the largest branch batch 1000 x 16 = 16000 is "
                                   "larger than the 1438 training examples"),
    "branching from tuned": (one(strategies=["blr", "tuned"], tuning=TUNING, branching={"enabled": True, "strategy": "tuned"}),
                             "config key studies.s.branching.strategy: 'tuned' has no single learning rate"),
    "branching from a strategy not run": (one(branching={"enabled": True, "strategy": "srsr"}),
                                          "config key studies.s.branching.strategy: 'srsr' is not run by the study"),
    "warm-up longer than a run": (one(warmup_steps=500), "config key studies.s.warmup_steps: 500 is longer than the "
                                                          "178 steps of a lsr run at batch size 16"),
    "comparison across tasks": ({"studies": {"a": study(), "b": study(dataset={"name": "least_squares"},
                                                                      model={"name": "linear"})},
                                 "comparisons": {"c": {"studies": ["a", "b"]}}},
                                "config key comparisons.c.studies: the studies solve different tasks (a (classification), "
                                "b (regression))"),
    "tuning without tuned": (one(tuning=TUNING), "config key studies.s.tuning: set, but the study does not run the tuned"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_config_that_cannot_run_is_refused_in_one_line(name):
    config, message = CASES[name]
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    text = str(refused.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize("text, message", [
    ("studies:\n  1: {}\n", "config key studies: key 1 is a int, not a string"),
    ("studies:\n  true: {}\n", "config key studies: key True is a bool, not a string"),
    ("studies:\n  null: {}\n", "config key studies: key None is a NoneType, not a string"),
])
def test_keys_that_are_not_strings_are_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_limit_can_be_raised_deliberately():
    config = one(strategies=["blr", "tuned"], tuning={**TUNING, "trials": 30_000})  # 120,004 runs
    with pytest.raises(ConfigError, match="limits.max_runs"):
        load_config(config)
    config["limits"] = {"max_runs": 200_000}
    assert len(load_config(config)["studies"]["s"]["tuning"]["trial_points"]) == 30_000


YTE = "__use_yte__: true\nstudies:\n  s:\n    description: ?open('{marker}', 'w').write('ran')\n"


def test_a_yte_config_is_refused_and_never_evaluated_through_the_safe_path(tmp_path):
    workdir = copy_workflow(tmp_path)
    marker = tmp_path / "ran.txt"
    (workdir / "yte.yaml").write_text(YTE.format(marker=marker))
    with pytest.raises(ConfigError, match="`__use_yte__` makes Snakemake evaluate the file"):
        read_yaml(workdir / "yte.yaml")
    # --config file=PATH: only batchscale's safe loader opens the file, so nothing in it runs
    done = snakemake(workdir, "-n", "--config", f"file={workdir / 'yte.yaml'}", configfile=None, check=False)
    assert done.returncode != 0 and "__use_yte__" in done.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_snakemake_refuses_a_huge_config_within_seconds(tmp_path):
    workdir = copy_workflow(tmp_path)
    write_config(workdir / "config.yaml", CASES["refinement spacing"][0])
    began = time.perf_counter()
    done = snakemake(workdir, "-n", check=False)
    took = time.perf_counter() - began
    assert done.returncode != 0 and "limits.max_runs" in done.stderr
    assert took < 120, f"{took:.0f} s"  # seconds on a quiet machine; generous for a loaded CI runner
    assert yaml.safe_load((workdir / "config.yaml").read_text())  # the config itself is untouched
