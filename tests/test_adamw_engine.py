"""AdamW through the packed engine: a packed run equals the run alone, each step is torch.optim.AdamW's,
a killed pack resumes bit for bit, and the trace records each run's own learning rate, betas and eps."""

from __future__ import annotations

import json

import pytest
import torch

import batchscale.engine.parts as parts
from batchscale.spec.runs import run_config, RunKey
from batchscale.validate import load_config
from batchscale.engine.pack import train_pack
from batchscale.store.traces import read_trace, write_trace
from conftest import tiny_config
from test_packing import LOSSES, assert_pack_resumes_bit_for_bit, float64, max_relative_difference  # noqa: F401 (fixture)

# m0 = 8, eta0 = 1e-3: at m = 32 kappa = 4, so adam_srsr gives lr 2e-3, beta1 0.6, beta2 0.996, eps 5e-9,
# lsr gives lr 4e-3 (warmed up from 1e-3 over one epoch) with the configured betas and eps.
ADAMW = {"name": "adamw", "betas": [0.9, 0.999], "eps": 1.0e-8, "weight_decay": 0.01}


def adamw_config(**overrides) -> dict:
    study = dict(model={"name": "mlp", "options": {"hidden": [16]}}, optimizer=ADAMW, eta0=1e-3, base_batch=8,
                 batch_sizes=[8, 32], strategies=["lsr", "srsr", "adam_srsr"], warmup_epochs=1, epochs=1)
    study.update(overrides)
    return load_config(tiny_config(**study))


def adamw_runs(config, pairs, batch_size=32) -> list[dict]:
    return [run_config(config, RunKey("tiny", strategy, batch_size, seed)) for strategy, seed in pairs]


def test_run_config_carries_each_runs_scaled_adamw_hyperparameters():
    config = adamw_config()
    srsr, lsr = adamw_runs(config, [("adam_srsr", 0), ("lsr", 0)])
    assert srsr["optimizer"] == {"name": "adamw", "beta1": pytest.approx(0.6, rel=1e-15),
                                 "beta2": pytest.approx(0.996, rel=1e-15), "eps": pytest.approx(5e-9, rel=1e-15),
                                 "weight_decay": 0.01, "grad_clip": None}
    assert srsr["lr_peak"] == pytest.approx(2e-3, rel=1e-15) and srsr["warmup_epochs"] == 0
    assert lsr["optimizer"]["beta1"] == 0.9 and lsr["optimizer"]["eps"] == 1e-8
    assert lsr["lr_peak"] == pytest.approx(4e-3, rel=1e-15) and lsr["warmup_epochs"] == 1


def test_packed_adamw_runs_equal_runs_alone_in_float64(float64):
    runs = adamw_runs(adamw_config(), [("lsr", 0), ("adam_srsr", 0), ("adam_srsr", 1), ("srsr", 1)])
    packed = train_pack(runs, progress=False, vectorise=True)
    assert all(r.info["pack_vectorised"] for r in packed)
    for result, run in zip(packed, runs):
        alone = train_pack([run], progress=False)[0]
        assert result.status == alone.status == "completed"
        assert len(result.points["step"]) > 5
        assert max_relative_difference(result, alone, LOSSES + ("linear_approx_error",)) < 1e-9
    # the runs did train apart: different hyperparameters, different losses
    assert packed[1].points["train_loss"][-1] != packed[0].points["train_loss"][-1]


class RecordingOptimizer:
    """The pack's own optimizer, recording the weights it starts from and every step's inputs and results."""

    def __init__(self, inner):
        self.inner = inner
        self.initial = [p.detach().clone() for p in inner.params]
        self.steps = []

    def step(self, grads, lr, active):
        self.inner.step(grads, lr, active)
        self.steps.append(([g.detach().clone() for g in grads], lr.clone(), active.clone(),
                           [p.detach().clone() for p in self.inner.params]))

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def test_the_engines_adamw_steps_are_torch_optim_adamw_steps_over_100_updates(float64, monkeypatch):
    recorders, build = [], parts.build_optimizer

    def recording_build(runs, params):
        recorders.append(RecordingOptimizer(build(runs, params)))
        return recorders[-1]

    monkeypatch.setattr(parts, "build_optimizer", recording_build)
    # lsr warms up over the first epoch (44 steps at m = 32), so the learning rate changes step by step
    runs = adamw_runs(adamw_config(epochs=3, max_steps=100), [("adam_srsr", 0), ("lsr", 1)])
    results = train_pack(runs, progress=False, vectorise=True)
    assert [r.steps_total for r in results] == [100, 100]
    recorder = recorders[0]
    assert len(recorder.steps) == 100
    worst = 0.0
    for r, run in enumerate(runs):
        settings = run["optimizer"]
        weights = [torch.nn.Parameter(p[r].clone()) for p in recorder.initial]
        reference = torch.optim.AdamW(weights, lr=1.0, betas=(settings["beta1"], settings["beta2"]),
                                      eps=settings["eps"], weight_decay=settings["weight_decay"])
        for grads, lr, active, after in recorder.steps:
            assert bool(active[r])
            reference.param_groups[0]["lr"] = float(lr[r])
            for w, g in zip(weights, grads):
                w.grad = g[r].clone()
            reference.step()
            for w, p in zip(weights, after):
                # relative to the tensor's largest weight: a weight crossing zero has no relative error of its own
                worst = max(worst, float((w.detach() - p[r]).abs().max() / p[r].abs().max()))
    print(f"largest difference from torch.optim.AdamW over 100 steps: {worst:.2e}")
    assert worst < 1e-12, worst
    # the learning rates the engine passed are the strategy's, step by step (lsr: 1e-3 -> 4e-3 over 44 steps)
    rates = [float(step[1][1]) for step in recorder.steps]
    assert rates[0] == pytest.approx(1e-3, rel=1e-15) and rates[22] == pytest.approx(2.5e-3, rel=1e-15)
    assert rates[44] == rates[99] == pytest.approx(4e-3, rel=1e-15)


def test_the_trace_records_each_strategys_rate_betas_and_eps(tmp_path):
    # eta0 = 1e-3, m0 = 8, m = 32: lsr warms up over 1 epoch = 44 steps (1437 // 32) to 4e-3
    config = adamw_config(epochs=2)
    runs = adamw_runs(config, [("lsr", 0), ("srsr", 0), ("adam_srsr", 0)])
    expected = {"lsr": (lambda update: 1e-3 + 3e-3 * min(update, 44) / 44, 0.9, 0.999, 1e-8),
                "srsr": (lambda update: 2e-3, 0.9, 0.999, 1e-8),
                "adam_srsr": (lambda update: 2e-3, 0.6, 0.996, 5e-9)}
    for result in train_pack(runs, progress=False):
        write_trace(result, tmp_path / "trace.h5")
        trace = read_trace(tmp_path / "trace.h5")
        rate, beta1, beta2, eps = expected[trace["attrs"]["strategy"]]
        steps = trace["points"]["step"]
        assert steps[-1] == 88 and len(steps) > 5
        # the rate recorded at evaluation step s is that of the update that led there, s - 1
        assert trace["points"]["lr"] == pytest.approx([rate(max(s - 1, 0)) for s in steps], rel=1e-14)
        recorded = json.loads(trace["attrs"]["config_json"])["optimizer"]
        assert (recorded["beta1"], recorded["beta2"], recorded["eps"]) == pytest.approx((beta1, beta2, eps), rel=1e-15)


def test_an_adamw_pack_killed_with_sigkill_resumes_bit_for_bit(tmp_path):
    config = adamw_config(epochs=100, max_steps=1500, checkpoint_seconds=0.1, batch_sizes=[8, 16],
                          evaluation={"batch_size": 1024, "points_per_decade": 10, "train_subset": 256})
    runs = adamw_runs(config, [("adam_srsr", 0), ("adam_srsr", 1), ("lsr", 2)], batch_size=16)
    for run in runs:  # test_packing's resume model and augmentation: dropout and crops draw random numbers too
        run["model"] = {"name": "test_resume:dropout_mlp", "options": {}}
        run["dataset"] = {**run["dataset"], "augment": True}
    saved = assert_pack_resumes_bit_for_bit(runs, tmp_path)
    # the checkpoint holds AdamW's state, and loads with weights_only
    assert set(saved["optimizer"]) >= {"steps", "exp_avg", "exp_avg_sq", "beta1", "beta2", "eps"}
    assert saved["optimizer"]["beta1"].tolist() == pytest.approx([0.8, 0.8, 0.9], rel=1e-15)