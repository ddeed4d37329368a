"""Resume after a kill: `python -m batchscale train` killed with SIGKILL at random points, then rerun,
writes the same trace, bit for bit on CPU, as a run that was never interrupted.

The kill points are drawn from a seeded generator and placed by watching the process (its progress bar)
and the checkpoint file (its saved step), so every trial lands where it is meant to whatever the machine's
speed: one during start-up, one in training before the first checkpoint, several spread over the run, one
late, and one trial killed twice (a resumed run that is killed again and resumed again).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import tiny_run

# Differ between two runs of the same config by construction: they measure time.
TIMING_ATTRS = {"wall_seconds", "eval_seconds"}
TIMING_DATASETS = {"wall_time"}

STEPS = 2500
CHECKPOINT_SECONDS = 0.1


def dropout_mlp(spec) -> torch.nn.Module:
    """An MLP with dropout, so that training draws from torch's global CPU generator too."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(64, spec.num_classes))


def resume_run() -> dict:
    """A dropout MLP on augmented digits, batch 16, 2500 steps (seconds on one thread), checkpoints every
    0.1 s. Every source of randomness the engine restores is in use: the batch permutation, the augmentation
    generator (random crops and flips) and the global CPU generator (dropout)."""
    run = tiny_run(model={"name": "test_resume:dropout_mlp", "options": {}}, batch_size=16, epochs=100,
                   max_steps=STEPS, checkpoint_seconds=CHECKPOINT_SECONDS,
                   evaluation={"batch_size": 1024, "points_per_decade": 10, "train_subset": 512})
    run["dataset"] = {**run["dataset"], "augment": True}
    return run


def train_command(run: dict, output: Path, checkpoint: Path) -> list[str]:
    # The command the train rule runs (workflow/rules/train.smk), with threads=1.
    return [sys.executable, "-m", "batchscale", "train", "--run-json", json.dumps(run, sort_keys=True),
            "--output", str(output), "--threads", "1", "--checkpoint", str(checkpoint)]


def env() -> dict:
    # the model is this module's dropout_mlp, named as package.module:callable
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step saved in the checkpoint, or None when there is none (it is replaced atomically)."""
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["progress"]["step"])
    except FileNotFoundError:
        return None


def start_and_kill(command: list[str], checkpoint: Path, rng: random.Random, *, after_seconds: float | None = None,
                   after_training_starts: float | None = None, after_step: int | None = None) -> dict:
    """Start the train command and SIGKILL it: `after_seconds` after start; `after_training_starts` seconds
    after its progress bar appears (the loop is about to take its first step); or a random fraction of a
    checkpoint interval after the checkpoint first holds a step >= `after_step`."""
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = bytearray()
    reader = threading.Thread(target=lambda: [stderr.extend(chunk) for chunk in iter(
        lambda: process.stderr.read1(4096), b"")], daemon=True)
    reader.start()
    try:
        if after_seconds is not None:
            time.sleep(after_seconds)
        elif after_training_starts is not None:
            while f" 0/{STEPS} ".encode() not in stderr:  # tqdm's first line: "  0%|   | 0/2500 [00:00<?, ?it/s]"
                assert process.poll() is None, bytes(stderr).decode()[-2000:]
                assert time.perf_counter() - began < 60, "training did not start within 60 s"
                time.sleep(0.002)
            time.sleep(after_training_starts)
        else:
            last_mtime = None
            while True:
                assert process.poll() is None, f"the run finished before step {after_step} was checkpointed"
                assert time.perf_counter() - began < 60, "no checkpoint reached the kill step within 60 s"
                try:
                    mtime = checkpoint.stat().st_mtime_ns
                except FileNotFoundError:
                    mtime = None
                if mtime is not None and mtime != last_mtime:
                    last_mtime = mtime
                    step = checkpoint_step(checkpoint)
                    if step is not None and step >= after_step:
                        break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, CHECKPOINT_SECONDS))  # land between two checkpoints, mid-step
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        killed_at = time.perf_counter() - began
        process.wait(timeout=30)
        reader.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    return {"killed_at_s": round(killed_at, 3), "checkpoint_step": checkpoint_step(checkpoint),
            "resumed": b"resumed from" in stderr}


def run_to_completion(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def read_h5(path: Path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as handle:
        attrs = {key: handle.attrs[key] for key in handle.attrs}
        datasets = {name: np.asarray(handle[name][()]) for name in handle}
    return attrs, datasets


def assert_bit_identical(path: Path, reference: Path) -> None:
    """Every attribute and dataset equal bit for bit, except those that measure time."""
    attrs, datasets = read_h5(path)
    ref_attrs, ref_datasets = read_h5(reference)
    assert sorted(attrs) == sorted(ref_attrs)
    for key in sorted(set(ref_attrs) - TIMING_ATTRS):
        assert np.asarray(attrs[key]).tobytes() == np.asarray(ref_attrs[key]).tobytes(), f"attribute {key} differs"
    assert sorted(datasets) == sorted(ref_datasets)
    for name in sorted(set(ref_datasets) - TIMING_DATASETS):
        got, want = datasets[name], ref_datasets[name]
        assert got.dtype == want.dtype and got.shape == want.shape, f"dataset {name}: {got.shape} vs {want.shape}"
        assert got.tobytes() == want.tobytes(), f"dataset {name} differs: {got} vs {want}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (through the same command, with a checkpoint path: checkpoints but no resume)."""
    directory = tmp_path_factory.mktemp("reference")
    output, checkpoint = directory / "trace.h5", directory / "run.pt"
    done = run_to_completion(train_command(resume_run(), output, checkpoint))
    assert "resumed from" not in done.stderr
    assert not checkpoint.exists(), "the checkpoint must be removed once the trace is written"
    with h5py.File(output, "r") as handle:
        assert handle.attrs["status"] == "completed" and int(handle["step"][-1]) == STEPS
    return output


def kill_plan() -> list[tuple[str, list[dict]]]:
    """(name, kills), a kill being the keyword arguments of start_and_kill. Seeded: the same points every run."""
    rng = random.Random(20180625)
    fractions = sorted(rng.uniform(0.05, 0.75) for _ in range(3))
    return [
        # still importing torch: no checkpoint can exist yet
        ("during start-up", [{"after_seconds": rng.uniform(0.1, 0.5)}]),
        # training, before its first checkpoint (due CHECKPOINT_SECONDS after the first step)
        ("before first checkpoint", [{"after_training_starts": rng.uniform(0.0, 0.4 * CHECKPOINT_SECONDS)}]),
        *[(f"at {f:.0%}", [{"after_step": int(f * STEPS)}]) for f in fractions],
        ("late", [{"after_step": int(rng.uniform(0.8, 0.85) * STEPS)}]),
        ("killed twice", [{"after_step": int(rng.uniform(0.1, 0.3) * STEPS)},
                          {"after_step": int(rng.uniform(0.55, 0.7) * STEPS)}]),
    ]


PLAN = kill_plan()


@pytest.mark.parametrize("name,kills", PLAN, ids=[name for name, _ in PLAN])
def test_sigkill_then_rerun_gives_the_uninterrupted_trace_bit_for_bit(tmp_path, reference, name, kills):
    rng = random.Random(name)
    output, checkpoint = tmp_path / "trace.h5", tmp_path / "run.pt"
    command = train_command(resume_run(), output, checkpoint)
    report = []
    for number, kill in enumerate(kills):
        outcome = start_and_kill(command, checkpoint, rng, **kill)
        report.append(outcome)
        assert not output.exists(), "a killed run must not leave a trace behind"
        if "after_seconds" in kill:
            assert outcome["checkpoint_step"] is None, "this kill was meant to land before the first checkpoint"
        elif "after_training_starts" in kill:
            # meant to land before the first checkpoint; a test process descheduled for longer than the
            # checkpoint interval could let one through, which this trial then resumes from: still a valid trial
            if outcome["checkpoint_step"] is not None:
                warnings.warn(f"{name}: the kill came after the first checkpoint ({outcome})")
        else:
            assert outcome["checkpoint_step"] >= kill["after_step"]
        if number > 0:  # a resumed run was killed again: its checkpoints went on from the earlier one
            assert outcome["resumed"] and outcome["checkpoint_step"] > report[number - 1]["checkpoint_step"]

    done = run_to_completion(command)
    resumed_step = report[-1]["checkpoint_step"]
    if resumed_step is None:
        assert "resumed from" not in done.stderr
    else:
        assert f"resumed from {checkpoint} at step {resumed_step}" in done.stderr
    assert not checkpoint.exists(), "the checkpoint must be removed once the trace is written"
    assert_bit_identical(output, reference)
    print(f"{name}: {report} -> identical")
    leftovers = sorted(path.name for path in tmp_path.iterdir() if ".tmp" in path.name)
    if leftovers:  # a kill inside torch.save or write_trace leaves its temporary file behind
        warnings.warn(f"{name}: temporary files left behind: {leftovers}")


def test_a_checkpoint_of_a_different_run_config_is_ignored(tmp_path, capfd):
    """A checkpoint of another pack (the study's config changed since) starts the run afresh."""
    from batchscale.engine.checkpoint import pack_hash
    from batchscale.engine.pack import train_run

    small = dict(max_steps=400, checkpoint_seconds=1e-3)
    old, new = resume_run() | small, resume_run() | small | {"eta0": 0.02, "lr_peak": 0.02}
    checkpoint = tmp_path / "run.pt"
    train_run(old, threads=1, checkpoint_path=checkpoint, progress=False)  # leaves a late checkpoint behind
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["pack_hash"] == pack_hash([old]) and saved["progress"]["step"] > 0
    capfd.readouterr()

    fresh = train_run(new, threads=1, checkpoint_path=checkpoint, progress=False)
    assert "resumed from" not in capfd.readouterr().err
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["pack_hash"] == pack_hash([new])
    uninterrupted = train_run(new, threads=1, progress=False)
    assert fresh.status == uninterrupted.status and fresh.steps_total == uninterrupted.steps_total
    for field in set(uninterrupted.points) - TIMING_DATASETS:
        assert np.asarray(fresh.points[field]).tobytes() == np.asarray(uninterrupted.points[field]).tobytes(), field
    assert fresh.points["step"][0] == 0 and fresh.points["step"][-1] == 400

    # checkpoint_seconds is not part of the hash: a checkpoint taken at another interval still resumes.
    train_run(new | {"checkpoint_seconds": 5.0}, threads=1, checkpoint_path=checkpoint, progress=False)
    assert "resumed from" in capfd.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_resumes_from_its_checkpoint(tmp_path, capfd):
    """On CUDA the checkpoint's RNG states must come back as CPU tensors (Generator.set_state takes no other)."""
    from batchscale.engine.pack import train_run

    run = resume_run() | {"device": "cuda", "max_steps": 300, "checkpoint_seconds": 1e-3}
    checkpoint = tmp_path / "run.pt"
    first = train_run(run, threads=1, checkpoint_path=checkpoint, progress=False)  # leaves its last checkpoint
    capfd.readouterr()
    again = train_run(run, threads=1, checkpoint_path=checkpoint, progress=False)
    assert "resumed from" in capfd.readouterr().err
    assert again.status == first.status and again.points["step"] == first.points["step"]


def test_sigterm_checkpoints_at_the_next_step_then_the_rerun_resumes_bit_for_bit(tmp_path, reference):
    """SLURM preemption and scancel send SIGTERM first: the job saves a checkpoint at the next step boundary
    and stops; the rerun resumes from exactly that step."""
    output, checkpoint = tmp_path / "trace.h5", tmp_path / "run.pt"
    command = train_command(resume_run(), output, checkpoint)
    process = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = bytearray()
    reader = threading.Thread(target=lambda: [stderr.extend(chunk) for chunk in iter(
        lambda: process.stderr.read1(4096), b"")], daemon=True)
    reader.start()
    began = time.perf_counter()
    while f" 0/{STEPS} ".encode() not in stderr:
        assert process.poll() is None and time.perf_counter() - began < 60, bytes(stderr).decode()[-2000:]
        time.sleep(0.002)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    reader.join(timeout=30)
    message = bytes(stderr).decode()
    assert process.returncode != 0 and not output.exists()
    assert "terminated at step" in message, message[-2000:]
    stopped_at = int(message.split("terminated at step ")[1].split(";")[0])
    assert 0 < stopped_at < STEPS and checkpoint_step(checkpoint) == stopped_at

    done = run_to_completion(command)
    assert f"resumed from {checkpoint} at step {stopped_at}" in done.stderr
    assert_bit_identical(output, reference)
