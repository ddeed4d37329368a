"""Files a stage reads are checked against what they claim to be: a trace edited in place or stored in the
wrong float type, a cube of another study, a cube edited or truncated. Each refused in one line naming the file
and how to rebuild it."""

from __future__ import annotations

import copy
import shutil
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from batchscale.errors import StageInputError, TraceError
from batchscale.store.cube import build_cube, open_cube, write_cube
from batchscale.store.traces import read_trace, write_trace
from conftest import tiny_run

STEPS = np.array([0, 1, 2, 4, 8, 16], dtype=np.int64)


def fake_result(seed: int, loss_scale: float = 1.0) -> SimpleNamespace:
    """What the engine hands write_trace, with made-up values (no training needed to test the store)."""
    run = tiny_run(seed=seed)
    losses = loss_scale * 2.3 / (1.0 + STEPS)
    points = {"step": STEPS, "epoch": STEPS / 44.0, "examples_seen": STEPS * 32, "lr": np.full(6, 0.05),
              "train_loss": losses, "train_acc": 1 - losses / 3, "test_loss": losses * 1.1,
              "test_acc": 1 - losses / 2.5, "wall_time": STEPS * 0.01}
    return SimpleNamespace(run=run, status="completed", steps_total=16, points=points, scalars={"final_x": 0.5},
                           device="cpu", threads=1, wall_seconds=0.2, eval_seconds=0.1, info={"task": "classification"})


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "results/tiny/traces/blr/bs32/seed0.h5"
    write_trace(fake_result(0), path)
    return path


def test_a_trace_read_back_is_what_was_written(trace):
    assert read_trace(trace)["points"]["train_loss"][3] == pytest.approx(2.3 / 5)


def test_a_loss_edited_in_place_is_refused(trace):
    with h5py.File(trace, "r+") as handle:
        handle["train_loss"][3] = 0.001  # a plausible value: only the content hash can tell
    with pytest.raises(TraceError, match=r"trace .*seed0\.h5: its datasets differ from what was written"):
        read_trace(trace)


def test_losses_stored_as_float16_are_refused(trace):
    with h5py.File(trace, "r+") as handle:
        values = handle["train_loss"][()]
        del handle["train_loss"]
        handle.create_dataset("train_loss", data=values.astype(np.float16))
    with pytest.raises(TraceError, match="dataset train_loss is float16, not float64"):
        read_trace(trace)


def test_the_content_hash_leaves_out_only_the_wall_clock(tmp_path):
    first, second = fake_result(0), fake_result(0)
    second.points["wall_time"] = second.points["wall_time"] * 3
    write_trace(first, tmp_path / "a.h5")
    write_trace(second, tmp_path / "b.h5")
    hashes = [read_trace(tmp_path / name)["attrs"]["content_sha256"] for name in ("a.h5", "b.h5")]
    assert hashes[0] == hashes[1]
    write_trace(fake_result(0, loss_scale=1.0000001), tmp_path / "c.h5")
    assert read_trace(tmp_path / "c.h5")["attrs"]["content_sha256"] != hashes[0]


@pytest.fixture
def cube_path(tmp_path):
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"results/tiny/traces/blr/bs32/seed{seed}.h5"
        write_trace(fake_result(seed), path)
        paths.append(path)
    study = {"strategies": ["blr"], "base_batch": 32, "eta0": 0.05}
    out = tmp_path / "results/tiny/cube.nc"
    write_cube(build_cube(paths, "tiny", study), out)
    return out, study


def test_a_cube_opens_for_its_own_study_and_config(cube_path):
    path, study = cube_path
    assert open_cube(path, "tiny", study).attrs["study"] == "tiny"


def test_another_studys_cube_is_refused(cube_path):
    path, study = cube_path
    with pytest.raises(StageInputError, match=r"cube .*cube\.nc: records study 'tiny', not 'other'"):
        open_cube(path, "other", study)
    changed = copy.deepcopy(study)
    changed["eta0"] = 0.1
    with pytest.raises(StageInputError, match="was built for another config of study 'tiny'"):
        open_cube(path, "tiny", changed)


def test_an_edited_or_truncated_cube_is_refused_naming_the_file(cube_path, tmp_path):
    path, study = cube_path
    edited = tmp_path / "edited.nc"
    shutil.copy(path, edited)
    with h5py.File(edited, "r+") as handle:
        handle["train_loss"][0, 0, 0, 0] = 99.0
    with pytest.raises(StageInputError, match=r"cube .*edited\.nc: its contents differ from what was written"):
        open_cube(edited)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(StageInputError, match=r"cube .*truncated\.nc: cannot be read .*delete it and rerun"):
        open_cube(truncated)
