"""Large batches: batch 32768 on CIFAR-shaped (ResNet-34-shaped, 3x32x32) inputs through micro-batch
accumulation, with the ghost batch-norm size recorded; an out-of-memory micro-batch names the setting to
lower; accumulated gradients equal the full batch's for a convolutional model without batch norm.

CPU cost: a batch of 32768 32x32 images is expensive on 2 cores whatever the model. The full-run test
therefore uses the small `cnn_bn` network (one 4-channel conv-BN layer, the cheapest model with batch norm
on these inputs); the ResNet-34 (width 1/64) test makes one accumulated step through the engine's
`module_gradient` (the packed step for one model), not a whole run (a run also measures the linear-approximation error, a second
gradient at 32768), and is marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from batchscale.spec.runs import run_config, RunKey
from batchscale.validate import load_config
from batchscale.data import load_dataset
from batchscale.engine import evaluate as evaluation
from batchscale.engine.pack import train_run
from batchscale.engine.step import module_gradient
from batchscale.engine.runtime import DeviceData
from batchscale.errors import MicroBatchTooLarge
from batchscale.models import build_model
from batchscale.store.traces import read_trace, write_trace
from conftest import REPO, tiny_run

BATCH, MICRO = 32768, 4096
IMAGES = {"name": "synthetic_images", "options": {"n_train": BATCH, "n_test": 256}}


@pytest.fixture(scope="module")
def big_images():
    return load_dataset(IMAGES)  # 32768 train images, 3x32x32


def test_batch_32768_trains_in_micro_batches_and_records_the_ghost_batch_size(big_images, tmp_path):
    config = load_config({"studies": {"big": {
        "dataset": IMAGES, "model": {"name": "cnn_bn", "options": {"channels": [4]}},
        "eta0": 0.1, "base_batch": 1024, "epochs": 1, "batch_sizes": [1024, BATCH], "micro_batch": MICRO,
        "evaluation": {"points_per_decade": 1, "train_subset": 256, "batch_size": MICRO}, "device": "cpu"}}})
    run = run_config(config, RunKey("big", "blr", BATCH, 0))
    assert big_images.spec.input_shape == (3, 32, 32)
    result = train_run(run, threads=2, splits=big_images, progress=False)
    path = tmp_path / "seed0.h5"
    write_trace(result, path)
    trace = read_trace(path)
    attrs, points = trace["attrs"], trace["points"]
    assert attrs["status"] == "completed"
    assert attrs["batch_size"] == BATCH and attrs["steps_total"] == 1  # floor(32768 / 32768) x 1 epoch
    assert attrs["micro_batch"] == MICRO and attrs["ghost_batch_size"] == MICRO
    assert list(points["step"]) == [0, 1] and list(points["examples_seen"]) == [0, BATCH]
    assert torch.isfinite(torch.tensor(points["train_loss"])).all()
    assert torch.isfinite(torch.tensor(trace["scalars"]["final_linear_approx_error"]))


@pytest.mark.slow
def test_resnet34_accumulates_a_batch_of_32768_in_ghost_batches(big_images):
    data = DeviceData(big_images, torch.device("cpu"), augment=False, seed=0)
    torch.manual_seed(0)
    net = build_model({"name": "resnet34", "options": {"width": 1 / 64}}, big_images.spec)
    net.train()
    index = torch.randperm(BATCH, generator=torch.Generator().manual_seed(0))
    loss, grads = module_gradient(net, data, index, MICRO)
    assert torch.isfinite(loss) and 1.0 < float(loss) < 10.0
    norms = [module for module in net.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert len(norms) == 36  # stem + 2 in each of the 16 blocks + 3 projection shortcuts
    # ghost batch norm: every BN saw 32768 / 4096 = 8 micro-batches, never the whole batch at once
    assert all(int(bn.num_batches_tracked) == BATCH // MICRO for bn in norms)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_out_of_memory_in_a_micro_batch_names_the_setting_to_lower(monkeypatch):
    from batchscale.engine import packed_model

    real_build = packed_model.build_model

    def build_that_runs_out_of_memory(model, spec):
        net = real_build(model, spec)
        forward = net.forward

        def guarded(x):
            if net.training:  # evaluation (eval mode) fits; the training micro-batch does not
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return forward(x)

        net.forward = guarded
        return net

    monkeypatch.setattr(packed_model, "build_model", build_that_runs_out_of_memory)
    run = tiny_run(model={"name": "cnn_bn"}, batch_size=64, micro_batch=16)
    with pytest.raises(MicroBatchTooLarge) as raised:
        train_run(run, progress=False)
    message = str(raised.value)
    assert "`micro_batch`" in message and "lower" in message
    assert "16 examples" in message and "'tiny'" in message
    assert "\n" not in message


def test_accumulated_gradient_at_4096_equals_the_full_batch_for_a_cnn_without_batch_norm():
    """AlexNet has no batch norm; with dropout off, 8 micro-batches of 512 give the gradient of 4096."""
    splits = load_dataset({"name": "synthetic_images", "options": {"n_train": 4096, "n_test": 16}})
    data = DeviceData(splits, torch.device("cpu"), augment=False, seed=0)
    data.x_train = data.x_train.double()
    torch.manual_seed(0)
    net = build_model({"name": "alexnet", "options": {"width": 1 / 32, "dropout": 0.0}}, splits.spec).double()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    index = torch.randperm(4096, generator=torch.Generator().manual_seed(1))

    def gradient(micro):
        loss, grads = module_gradient(net, data, index, micro)
        return float(loss), torch.cat([g.flatten() for g in grads])

    full_loss, full = gradient(None)
    micro_loss, accumulated = gradient(512)
    assert float((accumulated - full).norm() / full.norm()) < 1e-6
    assert micro_loss == pytest.approx(full_loss, rel=1e-9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_benchmark_exits_cleanly_without_a_gpu():
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU" in result.stdout


def test_out_of_memory_in_evaluation_names_evaluation_batch_size(monkeypatch):
    def evaluate_that_runs_out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(evaluation, "evaluate", evaluate_that_runs_out_of_memory)
    run = tiny_run(evaluation={"batch_size": 4096, "points_per_decade": 4, "train_subset": 256})
    with pytest.raises(MicroBatchTooLarge) as raised:
        train_run(run, progress=False)
    message = str(raised.value)
    assert "`evaluation.batch_size`" in message and "4096 examples" in message and "\n" not in message
