"""Packed training: runs trained together by one vectorised step give the traces they give trained alone.

Each comparison trains a pack and then each of its runs alone (a pack of one) and compares every traced
loss. The fallback path (run by run, no vmap) is the independent implementation the vectorised one is
also held against.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from batchscale.engine.pack import train_pack
from conftest import tiny_run

LOSSES = ("train_loss", "test_loss")


def max_relative_difference(a, b, names=LOSSES, upto: int | None = None) -> float:
    """Largest |a - b| / |b| over the traced losses (of points up to step `upto`)."""
    worst = 0.0
    keep = len(b.points["step"]) if upto is None else sum(1 for s in b.points["step"] if s <= upto)
    assert a.points["step"][:keep] == b.points["step"][:keep]
    for name in names:
        x, y = np.asarray(a.points[name][:keep]), np.asarray(b.points[name][:keep])
        worst = max(worst, float(np.max(np.abs(x - y) / np.abs(y))))
    return worst


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def mixed_runs(model: dict, **overrides) -> list[dict]:
    """Seeds 0-1 x strategies blr and lsr (lsr with 1 epoch of warm-up), at batch 32."""
    runs = []
    for seed in (0, 1):
        runs.append(tiny_run(model=model, seed=seed, **overrides))
        runs.append(tiny_run(model=model, seed=seed, strategy="lsr", lr_peak=0.1, warmup_epochs=1, **overrides))
    return runs


@pytest.mark.parametrize("model", [{"name": "mlp"}, {"name": "cnn_bn", "options": {"channels": [4, 8]}}])
def test_packed_runs_equal_runs_alone_in_float64(float64, model):
    runs = mixed_runs(model, epochs=1)
    packed = train_pack(runs, progress=False)  # four runs: vectorised by default
    assert all(r.info["pack_vectorised"] for r in packed)
    for result, run in zip(packed, runs):
        alone = train_pack([run], progress=False)[0]
        assert result.status == alone.status == "completed"
        assert max_relative_difference(result, alone, LOSSES + ("linear_approx_error",)) < 1e-9
    # the run-by-run path, with no vmap at all, agrees too
    sequential = train_pack(runs, progress=False, vectorise=False)
    assert not sequential[0].info["pack_vectorised"]
    for a, b in zip(packed, sequential):
        assert max_relative_difference(a, b) < 1e-9


def test_batch_norm_running_statistics_are_per_run(float64, monkeypatch):
    """Each run's BatchNorm buffers are those of the same run alone, not shared or averaged."""
    import batchscale.engine.parts as parts

    built = []
    real = parts.build_packed_model
    monkeypatch.setattr(parts, "build_packed_model", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    runs = mixed_runs({"name": "cnn_bn", "options": {"channels": [4]}}, epochs=1)[:2]
    train_pack(runs, progress=False, vectorise=True)
    together = built[-1]
    means = [b for name, b in zip(together.buffer_names, together.buffers) if name.endswith("running_mean")][0]
    assert not torch.equal(means[0], means[1])
    for r, run in enumerate(runs):
        train_pack([run], progress=False)
        alone = built[-1]
        for name, stacked, single in zip(together.buffer_names, together.buffers, alone.buffers):
            assert torch.allclose(stacked[r], single[0], rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("model", [{"name": "mlp"}, {"name": "cnn", "options": {"channels": [8, 16]}}])
def test_packed_runs_equal_runs_alone_in_float32_over_100_steps(model):
    runs = mixed_runs(model, epochs=3, max_steps=100)
    packed = train_pack(runs, progress=False)
    for result, run in zip(packed, runs):
        alone = train_pack([run], progress=False)[0]
        assert max_relative_difference(result, alone, upto=100) < 1e-5


def test_packed_lstm_language_models_equal_runs_alone(float64):
    lstm = {"name": "lstm", "options": {"layers": 1, "hidden": 16, "embedding_dim": 16, "dropout": 0.0}}
    dataset = {"name": "text_corpus", "options": {"vocab_size": 200, "bptt": 12}}
    runs = [tiny_run(model=lstm, dataset=dataset, seed=seed, max_steps=20, epochs=1,
                     optimizer={"momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "grad_clip": 0.25},
                     evaluation={"points_per_decade": 4, "train_subset": 128, "batch_size": 256})
            for seed in (0, 1)]
    packed = train_pack(runs, progress=False, vectorise=True)
    assert packed[0].info["pack_vectorised"] and "test_perplexity" in packed[0].points
    for result, run in zip(packed, runs):
        alone = train_pack([run], progress=False)[0]
        assert max_relative_difference(result, alone) < 1e-9


def test_a_diverging_run_stops_while_the_others_complete_unchanged():
    runs = [tiny_run(model={"name": "mlp"}, seed=0, epochs=2),
            tiny_run(model={"name": "mlp"}, seed=1, epochs=2, eta0=500.0, lr_peak=500.0),
            tiny_run(model={"name": "mlp"}, seed=2, epochs=2)]
    packed = train_pack(runs, progress=False, vectorise=True)
    assert [r.status for r in packed] == ["completed", "diverged", "completed"]
    assert packed[1].points["step"][-1] < packed[1].steps_total
    assert packed[0].points["step"][-1] == packed[0].steps_total
    for r in (0, 2):  # a packed run equals the run alone up to float rounding (vmap's kernels round differently)
        assert max_relative_difference(packed[r], train_pack([runs[r]], progress=False)[0]) < 1e-5
    # the diverged run's final linear-approximation error is measured at its last finite weights
    assert np.isfinite(packed[1].scalars["final_linear_approx_error"])


def test_a_diverging_run_of_a_pack_trained_run_by_run_leaves_the_others_as_vectorised(float64):
    """Three runs train run by run on the CPU: once one diverges, the other two are evaluated as a part of
    the stack (and the diverged one's final linear-approximation error at its own BatchNorm statistics)."""
    model = {"name": "cnn_bn", "options": {"channels": [4]}}
    runs = [tiny_run(model=model, seed=0, epochs=1), tiny_run(model=model, seed=1, epochs=1, eta0=500.0, lr_peak=500.0),
            tiny_run(model=model, seed=2, epochs=1)]
    sequential = train_pack(runs, progress=False)
    assert not sequential[0].info["pack_vectorised"]
    vectorised = train_pack(runs, progress=False, vectorise=True)
    assert [r.status for r in sequential] == [r.status for r in vectorised] == ["completed", "diverged", "completed"]
    for a, b in zip(sequential, vectorised):
        assert max_relative_difference(a, b, LOSSES + ("linear_approx_error",)) < 1e-9
        for name in ("final_linear_approx_error", "final_linear_approx_error_rel"):
            assert a.scalars[name] == pytest.approx(b.scalars[name], rel=1e-9, nan_ok=True), name


def test_runs_of_different_lengths_share_a_pack():
    """`longer` trains more epochs: the shorter runs finish, the longer one goes on alone."""
    runs = [tiny_run(model={"name": "mlp"}, epochs=1), tiny_run(model={"name": "mlp"}, strategy="longer", epochs=2)]
    packed = train_pack(runs, progress=False, vectorise=True)
    assert [r.points["step"][-1] for r in packed] == [44, 88]
    for result, run in zip(packed, runs):
        assert max_relative_difference(result, train_pack([run], progress=False)[0]) < 1e-5  # float rounding


class ItemMLP(torch.nn.Module):
    """Data-dependent Python control flow (`.item()`): vmap cannot trace it."""

    def __init__(self, spec):
        super().__init__()
        self.layer = torch.nn.Linear(64, spec.num_classes)

    def forward(self, x):
        x = x.flatten(1)
        if x.abs().max().item() > 1e6:
            x = x / 1e6
        return self.layer(x)


def item_mlp(spec) -> torch.nn.Module:
    return ItemMLP(spec)


def test_a_model_vmap_cannot_handle_trains_run_by_run_and_says_so(capfd):
    """Four runs: a pack that size is vectorised when it can be; this one cannot, and says so."""
    model = {"name": "test_packing:item_mlp", "options": {}}
    runs = [tiny_run(model=model, seed=seed) for seed in range(4)]
    packed = train_pack(runs, progress=False)
    log = capfd.readouterr().err
    assert "cannot vectorise this model" in log and "one after another" in log
    assert not any(r.info["pack_vectorised"] for r in packed)
    for result, run in zip(packed, runs):
        assert max_relative_difference(result, train_pack([run], progress=False)[0]) < 1e-5  # float rounding


def test_linear_approximation_error_equals_a_hand_computation(monkeypatch):
    """At the final weights w*: |L(w) - L(w*) - <g, w - w*>| with w = w* - eta0 (m/m0) g, recomputed here
    with a plain module from the same fresh batch and training subset."""
    import batchscale.engine.parts as parts
    from batchscale.data import load_dataset
    from batchscale.engine.state import APPROX_SEED_OFFSET
    from batchscale.models import build_model

    built = []
    real = parts.build_packed_model
    monkeypatch.setattr(parts, "build_packed_model", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    run = tiny_run(model={"name": "mlp"}, seed=3, epochs=1, warmup_epochs=0.5, strategy="lsr", lr_peak=0.1)
    result = train_pack([run], progress=False)[0]
    splits = load_dataset(run["dataset"])
    net = build_model(run["model"], splits.spec).double()
    with torch.no_grad():
        for p, stacked in zip(net.parameters(), built[-1].params):
            p.copy_(stacked[0])
    n, m = splits.num_train, run["batch_size"]
    subset = torch.randperm(n, generator=torch.Generator().manual_seed(104729))[:run["evaluation"]["train_subset"]]
    x, y = splits.train_x.double(), splits.train_y
    generator = torch.Generator().manual_seed(run["seed"] + APPROX_SEED_OFFSET)
    for _ in range(len(result.points["step"]) + 1):  # one fresh batch per evaluation point and one at warm-up end
        batch = torch.randperm(n, generator=generator)[:m]
    loss = lambda: float(torch.nn.functional.cross_entropy(net(x[subset]), y[subset]))  # noqa: E731
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
    step = run["eta0"] * m / run["base_batch"]
    with torch.no_grad():
        loss_star = loss()
        inner = -step * sum(float((p.grad ** 2).sum()) for p in net.parameters())
        for p in net.parameters():
            p -= step * p.grad
        expected = abs(loss() - loss_star - inner)
    assert result.scalars["final_linear_approx_error"] == pytest.approx(expected, rel=1e-4)
    assert result.points["linear_approx_error"][-1] == result.scalars["final_linear_approx_error"]
    assert len(result.points["linear_approx_error_rel"]) == len(result.points["step"])
    assert np.isfinite(result.scalars["linear_approx_error_warmup_end"])  # warm-up: 22 steps
    off = train_pack([dict(run, evaluation=dict(run["evaluation"], linear_approx=False))], progress=False)[0]
    assert "linear_approx_error" not in off.points and "final_linear_approx_error" not in off.scalars
    assert off.points["train_loss"] == result.points["train_loss"]


# ---- the command line: a pack killed and resumed, a planted checkpoint, a blocked output folder ----

def env() -> dict:
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def pack_command(runs, outputs, checkpoint) -> list[str]:
    return [sys.executable, "-m", "batchscale", "train", "--runs-json", json.dumps(runs), "--outputs",
            *map(str, outputs), "--threads", "1", "--checkpoint", str(checkpoint), "--quiet"]


def resume_runs() -> list[dict]:
    model = {"name": "test_resume:dropout_mlp", "options": {}}
    runs = [tiny_run(model=model, seed=s, batch_size=16, epochs=100, max_steps=1500, checkpoint_seconds=0.1,
                     evaluation={"batch_size": 1024, "points_per_decade": 10, "train_subset": 256})
            for s in (0, 1)]
    runs.append(dict(runs[0], seed=2, strategy="lsr", lr_peak=0.04, warmup_epochs=1))
    for run in runs:
        run["dataset"] = {**run["dataset"], "augment": True}
    return runs


def assert_pack_resumes_bit_for_bit(runs: list[dict], tmp_path: Path) -> dict:
    """Train `runs` as one pack uninterrupted, then again killed with SIGKILL a third of the way in and rerun:
    the resumed traces equal the uninterrupted ones bit for bit. Returns the checkpoint read before the kill."""
    from test_resume import assert_bit_identical

    reference = [tmp_path / f"ref{i}.h5" for i in range(len(runs))]
    done = subprocess.run(pack_command(runs, reference, tmp_path / "ref.pt"), env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs, checkpoint = [tmp_path / f"run{i}.h5" for i in range(len(runs))], tmp_path / "pack.pt"
    process = subprocess.Popen(pack_command(runs, outputs, checkpoint), env=env(), stderr=subprocess.DEVNULL)
    began = time.perf_counter()
    saved, step = None, 0
    while step < 500:  # a third of the way in, then somewhere between two checkpoints
        assert process.poll() is None and time.perf_counter() - began < 200
        try:
            saved = torch.load(checkpoint, weights_only=True)
            step = saved["progress"]["step"]
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.01)
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not any(path.exists() for path in outputs)
    done = subprocess.run(pack_command(runs, outputs, checkpoint), env=env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "resumed from" in done.stderr, done.stderr[-2000:]
    for path, want in zip(outputs, reference):
        assert_bit_identical(path, want)
    assert not checkpoint.exists()
    return saved


def test_a_pack_killed_with_sigkill_resumes_bit_for_bit(tmp_path):
    assert_pack_resumes_bit_for_bit(resume_runs(), tmp_path)


class Planted:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_checkpoint_runs_no_code_and_is_ignored_in_one_line(tmp_path):
    import pickle

    marker, checkpoint = tmp_path / "pwned", tmp_path / "pack.pt"
    with open(checkpoint, "wb") as handle:
        pickle.dump({"format": 3, "evil": Planted(marker)}, handle)
    pickle.loads(checkpoint.read_bytes()) and marker.unlink()  # the plant works when unpickled freely
    runs = [tiny_run(seed=0)]
    done = subprocess.run(pack_command(runs, [tmp_path / "t.h5"], checkpoint), env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists()
    lines = [line for line in done.stderr.splitlines() if "ignoring checkpoint" in line]
    assert len(lines) == 1 and str(checkpoint) in lines[0] and "training from the start" in lines[0]
    assert (tmp_path / "t.h5").exists()


@pytest.mark.parametrize("blocked", ["output", "checkpoint"])
def test_a_blocked_output_folder_is_reported_in_one_line_before_training(tmp_path, blocked):
    """A file where the trace's (or the checkpoint's) folder should be: one line, exit 2, no training."""
    results, checkpoints = tmp_path / "results", tmp_path / "checkpoints"
    (results if blocked == "output" else checkpoints).write_text("not a folder")
    done = subprocess.run(pack_command([tiny_run()], [results / "traces" / "t.h5"], checkpoints / "p.pt"),
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchscale: error: cannot write to"), lines
    assert str(results if blocked == "output" else checkpoints) in lines[0]


def test_small_packs_on_the_cpu_train_run_by_run_and_insisting_on_vmap_still_checks():
    runs = [tiny_run(model={"name": "mlp"}, seed=seed, max_steps=5) for seed in range(3)]
    assert not train_pack(runs, progress=False)[0].info["pack_vectorised"]
    assert train_pack(runs + [tiny_run(model={"name": "mlp"}, seed=3, max_steps=5)],
                      progress=False)[0].info["pack_vectorised"]
    item = {"name": "test_packing:item_mlp", "options": {}}
    with pytest.raises(ValueError, match="vectorising was asked for but fails"):
        train_pack([tiny_run(model=item, seed=seed, max_steps=5) for seed in range(2)], progress=False,
                   vectorise=True)


def test_a_packs_job_asks_for_memory_and_time_in_proportion_to_its_runs():
    from batchscale.validate import load_config
    from batchscale.jobs.packs import all_packs, pack_mem_mb, pack_runtime_min
    from conftest import tiny_config

    config = load_config(tiny_config(seeds=[0, 1, 2], pack={"seeds_per_pack": 2, "runtime_min_base": 7,
                                                             "runtime_min_per_run": 3, "mem_mb_base": 500,
                                                             "mem_mb_per_run": 40}))
    packs = all_packs(config)
    # seeds 0 and 1 (block 0) and seed 2 (block 1), at each of the two batch sizes
    assert sorted((pack.batch_size, [k.seed for k in pack.keys]) for pack in packs) == [
        (32, [0, 1]), (32, [2]), (64, [0, 1]), (64, [2])]
    for pack in packs:
        assert pack_runtime_min(config, pack) == 7 + 3 * len(pack.keys)
        assert pack_mem_mb(config, pack) == 500 + 40 * len(pack.keys)


def test_strategies_together_share_a_pack_and_tuned_stays_apart():
    from batchscale.jobs.packs import all_packs
    from batchscale.validate import load_config
    from conftest import tiny_tuned_config

    config = tiny_tuned_config("t", [16, 32], [0, 1], trials=2, strategies=["blr", "lsr", "tuned"],
                               pack={"strategies": "together"})
    packs = all_packs(load_config(config))
    assert sorted((p.batch_size, p.strategy, len(p.keys)) for p in packs) == [
        (16, "blr_lsr", 4), (16, "tuned", 4), (32, "blr_lsr", 4), (32, "tuned", 4)]
    together = next(p for p in packs if p.strategy == "blr_lsr")
    # runs in the order seed, then the study's strategy order
    assert [(k.seed, k.strategy) for k in together.keys] == [(0, "blr"), (0, "lsr"), (1, "blr"), (1, "lsr")]
    assert together.name == "train_t_bs16_blr_lsr_s0"
