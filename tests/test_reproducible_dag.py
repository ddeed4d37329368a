"""Same config, same code, same machine: the same traces, however the grid was built up.

Packs are a pure function of the config (jobs.packs), every pack is a job of a static DAG, and a pack's
thread count comes from the config. A tiny study (digits MLP, blr and lsr, 5 seeds: packs of 5 runs, trained
by one vectorised step) is (a) run from scratch; (b) one trace deleted and rebuilt, with `--cores 1`; (c)
run with one seed fewer, then grown by that seed. Every trace of (b) and (c) equals (a) bit for bit (every
dataset and attribute but the wall-clock ones). Snakemake's own tools see the packs: --forceall,
--forcerun, --delete-all-output. An edit of a study's own model module retrains that study only.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import copy_workflow, snakemake, write_config

pytestmark = pytest.mark.slow

# wall-clock fields, and the software versions (a git commit differs between checkouts of the same code)
CLOCK = {"wall_time", "wall_seconds", "eval_seconds", "versions_json"}
STUDY = {
    "dataset": {"name": "digits", "max_examples": 512, "max_test_examples": 128},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "eta0": 0.05, "base_batch": 16, "optimizer": {"momentum": 0.9},
    "strategies": ["blr", "lsr"], "warmup_epochs": 1,
    "epochs": 2, "batch_sizes": [16, 64], "seeds": [0, 1, 2, 3, 4],
    "evaluation": {"points_per_decade": 6, "train_subset": 256},
    "metrics": ["train_loss"], "device": "cpu",
}
# the batch-64 packs train on two threads whatever --cores grants
CONFIG = {"train_threads": {"single_thread_below": 64, "max": 2}, "studies": {"grid": STUDY}}
TRACES = [f"results/grid/traces/{s}/bs{m}/seed{seed}.h5" for s in ("blr", "lsr") for m in (16, 64) for seed in range(5)]
# the traces are targets (as in rule all): a missing one retrains its pack
TARGET = ("results/grid/cube.nc", *TRACES)


def trace_contents(path: Path) -> dict:
    """Every attribute and dataset of a trace but the wall-clock ones, as comparable values."""
    with h5py.File(path, "r") as handle:
        contents = {f"attr:{k}": v for k, v in handle.attrs.items() if k not in CLOCK}
        for name, dataset in handle.items():
            if name not in CLOCK:
                contents[name] = np.asarray(dataset[()])
    return contents


def all_traces(workdir: Path) -> dict[str, dict]:
    return {str(p.relative_to(workdir)): trace_contents(p) for p in sorted((workdir / "results").rglob("*.h5"))}


def assert_same_bits(first: dict[str, dict], second: dict[str, dict]) -> None:
    assert sorted(first) == sorted(second)
    for path in first:
        a, b = first[path], second[path]
        assert sorted(a) == sorted(b), path
        for name in a:
            left, right = np.asarray(a[name]), np.asarray(b[name])
            assert left.dtype == right.dtype and left.shape == right.shape, (path, name)
            # bit for bit: the bytes, so NaN equals NaN and -0.0 differs from 0.0
            assert left.tobytes() == right.tobytes(), (path, name)


def scheduled(workdir: Path, *args: str) -> str:
    """What `snakemake -n` prints (job blocks go to stderr)."""
    done = snakemake(workdir, "-n", *args)
    return done.stdout + done.stderr


def workspace(root: Path, config: dict) -> Path:
    root.mkdir()
    copy_workflow(root)
    write_config(root / "config.yaml", config)
    return root


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, dict]:
    """(a): the study from scratch."""
    workdir = workspace(tmp_path_factory.mktemp("repro") / "a", CONFIG)
    snakemake(workdir, "--cores", "2", *TARGET)
    traces = all_traces(workdir)
    assert len(traces) == 2 * 2 * 5
    return workdir, traces


def test_a_deleted_trace_retrains_its_pack_and_gives_the_same_bits_with_fewer_cores(scratch, tmp_path):
    original, expected = scratch
    workdir = shutil.copytree(original, tmp_path / "b", symlinks=True)
    (workdir / "results/grid/traces/lsr/bs64/seed3.h5").unlink()
    dry = scheduled(workdir, *TARGET)
    assert set(re.findall(r"rule (train_\w+):", dry)) == {"train_grid_bs64_lsr_s0"}
    snakemake(workdir, "--cores", "1", *TARGET)
    assert_same_bits(all_traces(workdir), expected)


def test_a_grid_grown_by_a_seed_equals_the_grid_run_from_scratch(scratch, tmp_path):
    _, expected = scratch
    fewer = copy.deepcopy(CONFIG)
    fewer["studies"]["grid"]["seeds"] = [0, 1, 2, 3]
    workdir = workspace(tmp_path / "c", fewer)
    snakemake(workdir, "--cores", "2", *(t for t in TARGET if "seed4" not in t))
    write_config(workdir / "config.yaml", CONFIG)
    dry = scheduled(workdir, *TARGET)
    # seed 4 joins block 0 (seeds 0-7): its packs retrain whole, the other trace files are theirs
    assert set(re.findall(r"rule (train_\w+):", dry)) == {f"train_grid_bs{m}_{s}_s0" for m in (16, 64)
                                                           for s in ("blr", "lsr")}
    snakemake(workdir, "--cores", "2", *TARGET)
    assert_same_bits(all_traces(workdir), expected)


def test_snakemakes_own_tools_see_every_pack(scratch):
    workdir, _ = scratch
    packs = {f"train_grid_bs{m}_{s}_s0" for m in (16, 64) for s in ("blr", "lsr")}
    forced = scheduled(workdir, "--forceall", *TARGET)
    assert set(re.findall(r"rule (train_\w+):", forced)) == packs
    one = scheduled(workdir, *TARGET, "--forcerun", "train_grid_bs16_blr_s0")
    assert set(re.findall(r"rule (train_\w+):", one)) == {"train_grid_bs16_blr_s0"}
    assert "rule cube:" in one
    listed = snakemake(workdir, "--delete-all-output", "-n", *TARGET)
    text = listed.stdout + listed.stderr
    for strategy in ("blr", "lsr"):
        for m in (16, 64):
            for seed in range(5):
                assert f"results/grid/traces/{strategy}/bs{m}/seed{seed}.h5" in text
    assert (workdir / "results/grid/traces/blr/bs16/seed0.h5").exists(), "-n deletes nothing"


MODEL_SOURCE = '''import math

from torch import nn


def tiny_net(spec, hidden: int = 8):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(spec.input_shape), hidden), nn.Tanh(),
                         nn.Linear(hidden, spec.num_classes))
'''


def test_editing_a_studys_own_model_module_retrains_that_study_only(tmp_path):
    own = copy.deepcopy(STUDY)
    own.update(model={"name": "mylab.models:tiny_net"}, strategies=["blr"], seeds=[0], epochs=1)
    builtin = copy.deepcopy(own)
    builtin["model"] = {"name": "mlp", "options": {"hidden": [8]}}
    config = {"studies": {"mine": own, "theirs": builtin}}
    workdir = workspace(tmp_path / "w", config)
    (workdir / "mylab").mkdir()
    (workdir / "mylab" / "__init__.py").write_text("")
    (workdir / "mylab" / "models.py").write_text(MODEL_SOURCE)
    targets = ("results/mine/cube.nc", "results/theirs/cube.nc")  # the traces come with them
    snakemake(workdir, "--cores", "2", *targets)
    assert "Nothing to be done" in scheduled(workdir, *targets)
    (workdir / "mylab" / "models.py").write_text(MODEL_SOURCE.replace("nn.Tanh()", "nn.ReLU()"))
    dry = scheduled(workdir, *targets)
    assert set(re.findall(r"rule (train_\w+):", dry)) == {"train_mine_bs16_blr_s0", "train_mine_bs64_blr_s0"}
    assert "Params have changed" in dry
    assert set(re.findall(r"wildcards: study=(\w+)", dry)) == {"mine"}
