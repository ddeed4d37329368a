"""The training engine: exact accumulation, bit-identical reruns, divergence, ghost batch norm."""

import os

import numpy as np
import pytest
import torch

from batchscale.data import load_dataset
from batchscale.engine.pack import train_run
from batchscale.engine.runtime import DeviceData, random_crop_flip
from batchscale.engine.step import module_gradient
from batchscale.models import build_model
from conftest import REPO, tiny_run


def _gradients(model, data, index, micro_batch):
    loss, grads = module_gradient(model, data, index, micro_batch)
    return float(loss), torch.cat([g.flatten().double() for g in grads])


def _relative_error(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dataset, model, batch, micro", [
    ({"name": "digits"}, {"name": "mlp"}, 256, 32),
    ({"name": "digits"}, {"name": "cnn"}, 96, 32),
    # a batch of 4096 in eight micro-batches of 512 (issue: large batches through accumulation)
    ({"name": "teacher", "options": {"n_train": 4096, "n_test": 64}}, {"name": "mlp"}, 4096, 512),
])
def test_micro_batch_accumulation_equals_full_batch_gradient(dataset, model, batch, micro):
    splits = load_dataset(dataset)
    data = DeviceData(splits, torch.device("cpu"), augment=False, seed=0)
    torch.manual_seed(0)
    net = build_model(model, splits.spec).double()
    data.x_train = data.x_train.double()
    index = torch.randperm(splits.num_train, generator=torch.Generator().manual_seed(1))[:batch]
    full_loss, full = _gradients(net, data, index, None)
    micro_loss, accumulated = _gradients(net, data, index, micro)
    assert _relative_error(accumulated, full) < 1e-6
    assert micro_loss == pytest.approx(full_loss, rel=1e-9)
    # independent check: the gradient of the mean cross-entropy written out directly
    net.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(data.x_train[index]), data.y_train[index]).backward()
    direct = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert _relative_error(accumulated, direct) < 1e-6


def test_micro_batches_normalise_per_micro_batch_ghost_batch_norm():
    """With BatchNorm, accumulation is *not* the full batch: statistics come from each micro-batch."""
    splits = load_dataset({"name": "digits"})
    data = DeviceData(splits, torch.device("cpu"), augment=False, seed=0)
    torch.manual_seed(0)
    net = build_model({"name": "cnn_bn"}, splits.spec).double()
    data.x_train = data.x_train.double()
    index = torch.arange(128)
    _, full = _gradients(net, data, index, None)
    _, ghost = _gradients(net, data, index, 32)
    assert _relative_error(ghost, full) > 1e-4
    result = train_run(tiny_run(model={"name": "cnn_bn"}, micro_batch=16, batch_size=64, epochs=1), progress=False)
    assert result.info["ghost_batch_size"] == 16


def _comparable(result):
    points = {k: np.asarray(v) for k, v in result.points.items() if k != "wall_time"}
    return points, result.scalars, result.status, result.steps_total


def test_same_seed_gives_bit_identical_traces():
    first = _comparable(train_run(tiny_run(model={"name": "mlp"}), progress=False))
    second = _comparable(train_run(tiny_run(model={"name": "mlp"}), progress=False))
    assert first[2:] == second[2:]
    np.testing.assert_equal(first[1], second[1])  # scalars, NaN (no warm-up) equal to NaN
    for name in first[0]:
        assert np.array_equal(first[0][name], second[0][name]), name
    other = _comparable(train_run(tiny_run(model={"name": "mlp"}, seed=1), progress=False))
    assert not np.array_equal(first[0]["train_loss"], other[0]["train_loss"])


def test_trace_has_grid_points_and_final_step():
    run = tiny_run(epochs=3)  # 1437 // 32 = 44 steps per epoch -> 132 steps
    result = train_run(run, progress=False)
    assert result.steps_total == 132
    assert result.points["step"] == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100, 132]
    assert result.points["examples_seen"][-1] == 132 * 32
    assert result.points["epoch"][-1] == pytest.approx(3.0)
    assert result.points["train_loss"][-1] < result.points["train_loss"][0]


def test_forced_divergence_stops_with_status_diverged_and_keeps_the_trace(tmp_path):
    from batchscale.store.traces import read_trace, write_trace

    run = tiny_run(lr_peak=500.0, eta0=500.0, epochs=5)
    result = train_run(run, progress=False)
    assert result.status == "diverged"
    assert result.points["step"][-1] < result.steps_total  # stopped early
    last = result.points["train_loss"][-1]
    assert not np.isfinite(last) or last > 10 * result.points["train_loss"][0]
    path = tmp_path / "trace.h5"
    write_trace(result, path)
    trace = read_trace(path)
    assert trace["attrs"]["status"] == "diverged"
    assert list(trace["points"]["step"]) == result.points["step"]


def test_random_crop_flip_moves_pixels_but_keeps_shape_and_values():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == images.shape
    # every output pixel is either padding (0) or one of the input's pixels of the same image and channel
    for b in range(2):
        for c in range(3):
            values = set(out[b, c].flatten().tolist()) - {0.0}
            assert values <= set(images[b, c].flatten().tolist())


def test_grad_clip_bounds_every_update(monkeypatch):
    """With the global gradient norm clipped to 1e-3, the momentum buffer's norm stays below
    1e-3 / (1 - 0.9), so in S steps at lr 0.05 no weight moves more than S * 0.05 * 1e-2."""
    import batchscale.engine.parts as parts

    run = tiny_run(epochs=1, lr_peak=0.05, eta0=0.05,
                   optimizer={"momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "grad_clip": 1e-3})
    torch.manual_seed(run["seed"])
    splits = load_dataset(run["dataset"])
    initial = [p.detach().clone() for p in build_model(run["model"], splits.spec).parameters()]
    trained = {}
    real_build = parts.build_packed_model

    def keep(*args, **kwargs):
        trained["model"] = real_build(*args, **kwargs)
        return trained["model"]

    monkeypatch.setattr(parts, "build_packed_model", keep)
    clipped = train_run(run, progress=False)
    moved = max(float((p[0] - q).abs().max()) for p, q in zip(trained["model"].params, initial))
    bound = clipped.steps_total * 0.05 * 1e-3 / (1 - 0.9)
    assert 0 < moved < bound
    free = train_run(dict(run, optimizer=dict(run["optimizer"], grad_clip=None)), progress=False)
    assert clipped.points["train_loss"][-1] > free.points["train_loss"][-1] + 0.1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_device_cuda_without_cuda_is_a_one_line_config_error(tmp_path):
    """`device: cuda` where torch sees no GPU: the engine names the key and its other values, and the command
    line prints it as one error line (no traceback)."""
    import json
    import subprocess
    import sys

    from batchscale.errors import ConfigError

    run = tiny_run(device="cuda")
    with pytest.raises(ConfigError) as raised:
        train_run(run, progress=False)
    message = str(raised.value)
    assert "studies.tiny.device" in message and "auto" in message and "cpu" in message and "\n" not in message
    done = subprocess.run([sys.executable, "-m", "batchscale", "train", "--run-json", json.dumps(run), "--output",
                           str(tmp_path / "seed0.h5"), "--quiet"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("batchscale: error: config key studies.tiny.device")


def test_a_new_traced_metric_is_one_recorder_entry(monkeypatch):
    from batchscale.engine import evaluate

    class TrainLossTwice(evaluate.Entry):
        def measure(self, parts, point):
            return {"train_loss_twice": [2 * loss for loss in point.columns["train_loss"]]}

    monkeypatch.setattr(evaluate, "ENTRIES", evaluate.ENTRIES + (TrainLossTwice(),))
    result = train_run(tiny_run(epochs=1), progress=False)
    assert result.points["train_loss_twice"] == [2 * loss for loss in result.points["train_loss"]]
    assert list(result.points)[-1] == "train_loss_twice"
