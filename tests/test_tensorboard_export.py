"""`batchscale export-tensorboard`: event files written without TensorBoard, read back with TensorBoard's own
reader (the `test` extra installs it) and compared with the traces they came from."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_masked_crc32c

from batchscale.engine.pack import train_run
from batchscale.report.tensorboard import EVENT_FILE, crc32c, masked_crc32c, run_folder
from batchscale.store.traces import read_trace, write_trace
from conftest import tiny_run

AXES = {"step", "epoch", "examples_seen", "wall_time"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder with two traces of the tiny study: batch 32 seed 0, and batch 64 seed 1 diverged
    (a learning rate of 1e38: its loss is NaN at step 1)."""
    folder = tmp_path_factory.mktemp("results")
    for batch, seed, extra in [(32, 0, {}), (64, 1, {"lr_peak": 1e38, "eta0": 1e38})]:
        path = folder / "tiny" / "traces" / "blr" / f"bs{batch}" / f"seed{seed}.h5"
        write_trace(train_run(tiny_run(batch_size=batch, seed=seed, **extra), progress=False), path)
    return folder


def _export(results, out):
    return subprocess.run([sys.executable, "-m", "batchscale", "export-tensorboard", str(results), "--out", str(out)],
                          capture_output=True, text=True)


def test_crc32c_matches_the_standard_check_value_and_tensorboards_mask():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, iSCSI)
    assert crc32c(b"") == 0
    data = np.random.default_rng(0).bytes(1000)
    assert masked_crc32c(data) == tensorboard_masked_crc32c(data)


@pytest.mark.parametrize("batch, seed", [(32, 0), (64, 1)])
def test_every_curve_reads_back_at_the_trace_steps(results, tmp_path, batch, seed):
    out = tmp_path / "board"
    done = _export(results, out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 2 run(s) to {out}; view them with: tensorboard --logdir {out}"
    trace = read_trace(results / "tiny" / "traces" / "blr" / f"bs{batch}" / f"seed{seed}.h5")
    points = trace["points"]
    folder = out / "tiny" / "blr" / f"bs{batch}" / f"seed{seed}"
    assert [p.name for p in folder.iterdir()] == [EVENT_FILE]

    board = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    board.Reload()
    curves = set(points) - AXES
    assert {"train_loss", "test_loss", "train_acc", "test_acc", "lr", "linear_approx_error"} <= curves
    finite = {name: np.isfinite(points[name].astype(np.float32)) for name in curves}
    # every curve with a value to draw (the diverged run's linear_approx_error is NaN throughout)
    assert set(board.Tags()["scalars"]) == {name for name in curves if finite[name].any()}
    for tag in board.Tags()["scalars"]:
        read, kept = board.Scalars(tag), finite[tag]
        assert [e.step for e in read] == points["step"][kept].tolist(), tag
        assert [e.wall_time for e in read] == points["wall_time"][kept].tolist(), tag
        assert [e.value for e in read] == points[tag][kept].astype(np.float32).tolist(), tag


def test_a_diverged_run_leaves_out_its_non_finite_points(results, tmp_path):
    trace = read_trace(results / "tiny" / "traces" / "blr" / "bs64" / "seed1.h5")
    assert trace["attrs"]["status"] == "diverged"
    lost = ~np.isfinite(trace["points"]["train_loss"])
    assert lost.any()  # the case this test is about
    assert _export(results, tmp_path / "board").returncode == 0
    path = tmp_path / "board" / "tiny" / "blr" / "bs64" / "seed1" / EVENT_FILE
    events = list(EventFileLoader(str(path)).Load())
    assert events[0].file_version == "brain.Event:2"
    steps = [e.step for e in events[1:]]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one event per evaluation point
    train_loss_steps = [e.step for e in events[1:] for v in e.summary.value if v.tag == "train_loss"]
    assert train_loss_steps == trace["points"]["step"][~lost].tolist()


def test_the_export_is_deterministic_and_a_rerun_replaces_it(results, tmp_path):
    assert _export(results, tmp_path / "a").returncode == 0
    assert _export(results, tmp_path / "b").returncode == 0
    assert _export(results, tmp_path / "b").returncode == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2  # one event file per run, none left by the rerun
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_default_out_folder_and_one_line_errors(results, tmp_path):
    done = subprocess.run([sys.executable, "-m", "batchscale", "export-tensorboard", str(results)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and (results / "tensorboard" / "tiny" / "blr" / "bs32" / "seed0" / EVENT_FILE).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    for target, fragment in [(empty, "no traces (*.h5)"), (tmp_path / "nowhere", "not a folder")]:
        failed = _export(target, tmp_path / "out")
        assert failed.returncode == 2 and "Traceback" not in failed.stderr
        assert failed.stderr.startswith(f"batchscale: error: {target}: ") and fragment in failed.stderr
        assert failed.stderr.count("\n") == 1


def test_run_folder_names_a_trial_as_the_trace_does():
    attrs = {"study": "s", "strategy": "tuned", "batch_size": 64, "seed": 2, "config_json": json.dumps({"trial": 17})}
    assert run_folder({"attrs": attrs}).as_posix() == "s/tuned/bs64/seed2_trial17"
    attrs = {**attrs, "strategy": "blr", "config_json": json.dumps({"trial": None})}
    assert run_folder({"attrs": attrs}).as_posix() == "s/blr/bs64/seed2"
