"""Shared fixtures: tiny configs and a helper that runs the workflow in a temporary directory."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

TINY_STUDY = {
    "dataset": {"name": "digits"},
    "model": {"name": "linear"},
    "eta0": 0.05,
    "base_batch": 32,
    "optimizer": {"momentum": 0.9},
    "strategies": ["blr"],
    "epochs": 2,
    "batch_sizes": [32, 64],
    "seeds": [0],
    "evaluation": {"points_per_decade": 4, "train_subset": 256},
    "device": "cpu",
}


def tiny_tuned_config(study: str, batch_sizes, seeds, trials: int, **study_overrides) -> dict:
    """A small digits MLP study running lsr and `tuned` (Sobol learning rates in [0.01, 1]) through the
    workflow in well under a minute; `study_overrides` replace or add study keys."""
    return {"train_threads": {"max": 1}, "studies": {study: {
        "dataset": {"name": "digits", "max_examples": 512, "max_test_examples": 128},
        "model": {"name": "mlp", "options": {"hidden": [16]}},
        "eta0": 0.05, "base_batch": 16, "optimizer": {"momentum": 0.9},
        "strategies": ["lsr", "tuned"],
        "tuning": {"trials": trials, "seed": 0, "lr": {"min": 0.01, "max": 1.0}},
        "epochs": 3, "batch_sizes": list(batch_sizes), "seeds": list(seeds),
        "evaluation": {"points_per_decade": 8, "train_subset": 256, "linear_approx": False},
        "metrics": ["train_loss"], "bootstrap": {"samples": 50}, "device": "cpu",
        **study_overrides,
    }}}


def tiny_config(**study_overrides) -> dict:
    study = copy.deepcopy(TINY_STUDY)
    study.update(study_overrides)
    return {"studies": {"tiny": study}}


def tiny_run(**overrides) -> dict:
    """A resolved run config of the tiny study (blr, batch 32, seed 0), with overrides."""
    from batchscale.spec.runs import run_config, RunKey
    from batchscale.validate import load_config

    config = load_config(tiny_config())
    run = run_config(config, RunKey("tiny", "blr", 32, 0))
    run.update(overrides)
    return run


def workflow_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # rules call `python -m batchscale`
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def copy_workflow(target: Path) -> Path:
    """A runnable copy of the workflow (Snakefile, rules, schema, report captions) in `target`."""
    shutil.copy(REPO / "Snakefile", target / "Snakefile")
    shutil.copytree(REPO / "workflow", target / "workflow")
    shutil.copytree(REPO / "profiles", target / "profiles")
    shutil.copytree(REPO / "envs", target / "envs")  # every rule names its conda env; Snakemake reads it
    return target


def copy_repository(target: Path) -> Path:
    """A fresh copy of the repository as a user clones it: every file git tracks (plus new ones not ignored),
    config.yaml included, and nothing git ignores (no results/, .snakemake/, .venv/)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a file deleted but not yet committed is listed and absent
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    return target


def snakemake(workdir: Path, *args: str, configfile: str | None = "config.yaml", check: bool = True,
              timeout: int = 900) -> subprocess.CompletedProcess:
    """`snakemake --configfile CONFIGFILE ARGS` in `workdir` (no --configfile when it is None)."""
    command = [str(VENV_BIN / "snakemake"), *(["--configfile", configfile] if configfile else []), *args]
    result = subprocess.run(command, cwd=workdir, env=workflow_env(), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def workflow_dir(tmp_path) -> Path:
    return copy_workflow(tmp_path)
