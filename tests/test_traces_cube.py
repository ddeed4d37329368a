"""Trace files against their contract, and the cube built from them."""

import json

import h5py
import numpy as np
import pytest
import xarray as xr

from batchscale.store.cube import build_cube, open_cube, write_cube
from batchscale.engine.pack import train_run
from batchscale.errors import TraceError
from batchscale.store.traces import read_trace, write_trace
from conftest import tiny_run

TRACE_ATTRS = {
    "schema_version": np.integer, "study": str, "dataset": str, "model": str, "strategy": str,
    "batch_size": np.integer, "seed": np.integer, "lr": np.floating, "epochs": np.integer,
    "steps_total": np.integer, "status": str, "config_json": str, "config_hash": str, "versions_json": str,
    "device": str, "wall_seconds": np.floating,
}
TRACE_DATASETS = {
    "step": np.int64, "epoch": np.float64, "examples_seen": np.int64, "lr": np.float64,
    "train_loss": np.float64, "train_acc": np.float64, "test_loss": np.float64, "test_acc": np.float64,
    "wall_time": np.float64,
}


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Three runs: batch 32 (2 epochs), batch 64 (2 epochs), batch 64 seed 1 (diverged)."""
    folder = tmp_path_factory.mktemp("traces")
    paths = []
    for batch, seed, extra in [(32, 0, {}), (64, 0, {}), (64, 1, {"lr_peak": 500.0, "eta0": 500.0})]:
        run = tiny_run(batch_size=batch, seed=seed, **extra)
        path = folder / f"bs{batch}_seed{seed}.h5"
        write_trace(train_run(run, progress=False), path)
        paths.append(path)
    return paths


def test_every_trace_attribute_and_dataset_with_its_dtype(traces):
    with h5py.File(traces[0], "r") as handle:
        for name, kind in TRACE_ATTRS.items():
            value = handle.attrs[name]
            assert isinstance(value, kind), (name, type(value))
        for name, dtype in TRACE_DATASETS.items():
            assert handle[name].dtype == dtype, name
            assert handle[name].shape == handle["step"].shape
        assert handle["linear_approx_error"].shape == handle["step"].shape  # at every evaluation point
        assert np.isfinite(handle["final_linear_approx_error"][()])
        config = json.loads(handle.attrs["config_json"])
        assert config["batch_size"] == 32 and handle.attrs["batch_size"] == 32
        assert handle.attrs["steps_total"] == (1437 // 32) * 2 == handle["step"][-1]
        assert handle.attrs["status"] == "completed"
        assert "torch" in json.loads(handle.attrs["versions_json"])


def test_no_temporary_file_left_behind(traces):
    assert not [p for p in traces[0].parent.iterdir() if ".tmp" in p.name]


def test_cube_dimensions_and_nan_padding(traces, tmp_path):
    cube = build_cube(traces, "tiny", {"strategies": ["blr"], "base_batch": 32, "eta0": 0.05})
    path = tmp_path / "cube.nc"
    write_cube(cube, path)
    cube = open_cube(path)
    assert cube.train_loss.dims == ("strategy", "batch_size", "seed", "step")
    assert list(cube.batch_size.values) == [32, 64] and list(cube.seed.values) == [0, 1]
    assert cube.status.dims == ("strategy", "batch_size", "seed")
    status = cube.status.sel(strategy="blr")
    assert status.sel(batch_size=32, seed=0) == "completed"
    assert status.sel(batch_size=64, seed=1) == "diverged"
    assert status.sel(batch_size=32, seed=1) == "missing"  # never run: all NaN
    assert np.isnan(cube.train_loss.sel(strategy="blr", batch_size=32, seed=1)).all()
    # batch 32 runs 88 steps, batch 64 runs 44: the cube's steps are the union, NaN past each run's end
    run32 = cube.train_loss.sel(strategy="blr", batch_size=32, seed=0)
    run64 = cube.train_loss.sel(strategy="blr", batch_size=64, seed=0)
    assert cube.step.values[-1] == 88
    assert np.isfinite(run32.sel(step=88)) and np.isnan(run64.sel(step=88))
    assert np.isfinite(run64.sel(step=44)) and np.isnan(run32.sel(step=44))  # 44 is on 64's grid only
    # values equal the trace's, point for point
    trace = read_trace(traces[1])
    assert np.array_equal(run64.sel(step=trace["points"]["step"]).values, trace["points"]["train_loss"])
    assert cube.steps_total.sel(strategy="blr", batch_size=64, seed=0) == 44
    provenance = json.loads(cube.attrs["provenance_json"])
    assert len(provenance) == 3 and all(len(p["sha256"]) == 64 for p in provenance)
    with xr.open_dataset(path, engine="h5netcdf") as reopened:
        assert set(reopened.sizes) == {"strategy", "batch_size", "seed", "step"}


def test_truncated_trace_fails_with_a_message_naming_the_file(traces, tmp_path):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(traces[0].read_bytes()[:2000])
    with pytest.raises(TraceError, match="broken.h5"):
        build_cube([traces[0], broken], "tiny", {})


# --------------------------------------------------------------------------------------------------
# A trace broken after it was written is named in one line, with how to retrain it; nothing is dropped.


def _damaged(tmp_path, source, relative, damage):
    """A copy of `source` at `relative` (under tmp_path) with `damage(handle)` applied."""
    import shutil

    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        damage(handle)
    return target


def _shorten(name):
    def damage(handle):
        values = handle[name][()]
        del handle[name]
        handle.create_dataset(name, data=values[:-2])
    return damage


def _fill_nan(name):
    def damage(handle):
        handle[name][...] = np.nan
    return damage


@pytest.mark.parametrize("relative, damage, fragments", [
    ("results/tiny/traces/blr/bs64/seed0.h5", lambda h: None,  # the batch-32 trace copied over batch 64
     ["attribute batch_size is 32 but the path is for batch_size 64", "copied"]),
    ("results/tiny/traces/lsr/bs32/seed0.h5", lambda h: None, ["attribute strategy is 'blr'", "strategy 'lsr'"]),
    ("results/tiny/traces/blr/bs32/seed3.h5", lambda h: None, ["attribute seed is 0", "seed 3"]),
    ("results/other/traces/blr/bs32/seed0.h5", lambda h: None, ["attribute study is 'tiny'", "study 'other'"]),
    ("broken/a.h5", lambda h: h.__delitem__("train_loss"), ["missing dataset train_loss"]),
    ("broken/b.h5", lambda h: h.attrs.__delitem__("seed"), ["missing attribute seed"]),
    ("broken/c.h5", _shorten("test_loss"), ["dataset test_loss has shape", "like step"]),
    ("broken/d.h5", _fill_nan("train_loss"), ["status completed but train_loss is not finite"]),
], ids=["copied over another batch size", "copied over another strategy", "copied over another seed",
        "copied into another study", "deleted dataset", "deleted attribute", "shortened array",
        "completed but NaN"])
def test_a_damaged_trace_is_named_in_one_line_with_how_to_retrain(traces, tmp_path, relative, damage, fragments):
    path = _damaged(tmp_path, traces[0], relative, damage)
    with pytest.raises(TraceError) as caught:
        build_cube([path], "tiny", {"strategies": ["blr"], "base_batch": 32})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"trace {path}: ") and message.endswith("delete it and rerun snakemake to retrain that run")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_the_same_run_twice_in_a_cube_names_both_files(traces, tmp_path):
    import shutil

    copy = tmp_path / "copy.h5"
    shutil.copy(traces[1], copy)
    with pytest.raises(TraceError, match=rf"trace {copy}: records strategy blr, batch size 64, seed 0, like {traces[1]}"):
        build_cube([traces[0], traces[1], copy], "tiny", {"strategies": ["blr"], "base_batch": 32})


def test_a_diverged_trace_may_hold_nan_and_a_trace_at_its_own_path_is_accepted(traces, tmp_path):
    diverged = read_trace(traces[2])
    assert diverged["attrs"]["status"] == "diverged"
    own = _damaged(tmp_path, traces[0], "results/tiny/traces/blr/bs32/seed0.h5", lambda h: None)
    assert read_trace(own)["attrs"]["batch_size"] == 32
