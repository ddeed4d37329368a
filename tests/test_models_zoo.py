"""The model zoo: vision (CIFAR variants), the LSTM language model, DRN-D-22 segmentation, the FLOP counter.

Kept fast (< 60 s on 2 cores): full-size models are only built to count parameters or FLOPs; forward and
training checks use width 0.25 and small inputs.
"""

from __future__ import annotations

import functools
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchscale.data import DataSpec
from batchscale.models import MODELS, count_parameters
from batchscale.models import language, segmentation, vision  # noqa: F401  (registers the builders)
from batchscale.models.flops import forward_flops_per_example, training_flops_per_example

CIFAR = DataSpec("classification", (3, 32, 32), 10)
VISION = ["resnet18", "resnet34", "vgg16_bn", "alexnet", "mobilenetv2"]
ALL = VISION + ["lstm", "drn_d_22"]

# Parameter counts at width 1, 10 classes: the figures quoted for the CIFAR variants
# (kuangliu/pytorch-cifar and papers using it), and what our builders give exactly.
PUBLISHED = {
    "resnet18": (11.17e6, 11_173_962),
    "resnet34": (21.28e6, 21_282_122),
    "vgg16_bn": (14.73e6, 14_728_266),  # single linear classifier 512 -> 10, conv biases kept
    "mobilenetv2": (2.24e6, 2_236_682),  # torchvision blocks (no projection shortcuts), CIFAR strides
    # No published CIFAR AlexNet to match: our variant (vision.AlexNet docstring), counted by hand:
    # convs 1,792 + 110,784 + 663,936 + 884,992 + 590,080 = 2,251,584;
    # classifier (1024*4096 + 4096) + (4096*4096 + 4096) + (4096*10 + 10) = 21,020,682.
    "alexnet": (23.27e6, 23_272_266),
}


@functools.lru_cache(maxsize=None)
def full_size(name: str) -> nn.Module:
    """Width-1 model for 10-class 3x32x32 inputs, built once per test session (read only)."""
    return MODELS[name](CIFAR)


def small_spec(name: str, hw=(16, 16)) -> DataSpec:
    if name == "lstm":
        return DataSpec("language_model", (12,), 37)
    if name == "drn_d_22":
        return DataSpec("segmentation", (3, *hw), 5, ignore_index=255)
    return DataSpec("classification", (3, *hw), 7)


def small_batch(spec: DataSpec, batch: int = 4):
    g = torch.Generator().manual_seed(0)
    if spec.task == "language_model":
        x = torch.randint(spec.num_classes, (batch, *spec.input_shape), generator=g)
        return x, torch.randint(spec.num_classes, x.shape, generator=g)
    x = torch.randn(batch, *spec.input_shape, generator=g)
    if spec.task == "segmentation":
        y = torch.randint(spec.num_classes, (batch, *spec.input_shape[1:]), generator=g)
        y[:, 0, :] = 255  # some ignored pixels, as in real label maps
        return x, y
    return x, torch.randint(spec.num_classes, (batch,), generator=g)


def loss_of(model: nn.Module, spec: DataSpec, x, y) -> torch.Tensor:
    logits = model(x)
    if spec.task == "classification":
        return F.cross_entropy(logits, y)
    if spec.task == "language_model":
        return F.cross_entropy(logits.reshape(-1, spec.num_classes), y.reshape(-1))
    return F.cross_entropy(logits, y, ignore_index=spec.ignore_index)


# ----------------------------------------------------------------------------- registry

def test_all_models_registered_and_take_width():
    for name in ALL:
        assert name in MODELS
        parameters = inspect.signature(MODELS[name]).parameters
        assert "width" in parameters and parameters["width"].default == 1.0


# ----------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize("name", VISION)
def test_vision_parameter_counts_match_published(name):
    published, exact = PUBLISHED[name]
    count = count_parameters(full_size(name))
    assert count == exact
    assert abs(count - published) / published < 0.01


def test_drn_d_22_backbone_matches_published():
    # Yu et al. 2017, Table 1: DRN-D-22 has 16.4M parameters as an ImageNet classifier, i.e. the backbone
    # plus the 1x1-conv fc 512 -> 1000 (512,000 weights + 1,000 biases) of the authors' code.
    model = MODELS["drn_d_22"](DataSpec("segmentation", (3, 64, 64), 19, 255))
    backbone = count_parameters(model.base)
    assert backbone == 15_880_752
    with_imagenet_fc = backbone + 512 * 1000 + 1000
    assert abs(with_imagenet_fc - 16.4e6) / 16.4e6 < 0.01
    # the segmentation head is a 1x1 conv 512 -> classes with bias
    assert count_parameters(model) - backbone == 512 * 19 + 19


def test_lstm_parameter_count_matches_word_language_model():
    # PyTorch word_language_model "medium" on a 10k vocabulary (Penn Treebank): 2 layers, 650 units.
    vocab, e, h = 10_000, 650, 650
    lstm_layers = 4 * h * (e + h) + 8 * h + 4 * h * (h + h) + 8 * h  # nn.LSTM keeps two bias vectors
    untied = vocab * e + lstm_layers + h * vocab + vocab
    spec = DataSpec("language_model", (35,), vocab)
    assert untied == 19_780_400
    assert count_parameters(MODELS["lstm"](spec)) == untied
    assert count_parameters(MODELS["lstm"](spec, tie_weights=True)) == untied - h * vocab


# ----------------------------------------------------------------------------- width multiplier

@pytest.mark.parametrize("name", VISION)
def test_width_shrinks_vision_models_quadratically(name):
    full = count_parameters(full_size(name))
    half = count_parameters(MODELS[name](CIFAR, width=0.5))
    quarter = count_parameters(MODELS[name](CIFAR, width=0.25))
    assert quarter < half < full
    # conv/linear weights scale with width^2; biases, BN and the 10-way classifier make it a bit more
    assert 0.24 < half / full < 0.30


def test_width_shrinks_lstm_and_drn():
    lm = DataSpec("language_model", (35,), 1000)
    counts = [count_parameters(MODELS["lstm"](lm, width=w)) for w in (0.25, 0.5, 1.0)]
    assert counts[0] < counts[1] < counts[2]
    h = 325  # 650 x 0.5 for both hidden and embedding
    assert counts[1] == 1000 * h + 2 * (4 * h * 2 * h + 8 * h) + h * 1000 + 1000
    seg = DataSpec("segmentation", (3, 32, 32), 5, 255)
    full = count_parameters(MODELS["drn_d_22"](seg).base)
    half = count_parameters(MODELS["drn_d_22"](seg, width=0.5).base)
    assert 0.24 < half / full < 0.26


# ----------------------------------------------------------------------------- output shapes

@pytest.mark.parametrize("name", VISION)
@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 20, 28), (3, 32, 32)])
def test_vision_output_shape_any_input_size(name, shape):
    spec = DataSpec("classification", shape, 7)
    model = MODELS[name](spec, width=0.25).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_vision_rejects_non_image_inputs():
    with pytest.raises(ValueError, match="input_shape"):
        MODELS["resnet18"](DataSpec("classification", (64,), 10))


@pytest.mark.parametrize("hw", [(8, 8), (20, 28), (33, 17)])
def test_drn_output_is_full_resolution(hw):
    spec = DataSpec("segmentation", (3, *hw), 5, 255)
    model = MODELS["drn_d_22"](spec, width=0.25).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        features = model.base(x)
        out = model(x)
    # output stride 8: the backbone map is ceil(H/8) x ceil(W/8), with 512 (x width) channels
    assert features.shape == (2, 128, math.ceil(hw[0] / 8), math.ceil(hw[1] / 8))
    assert out.shape == (2, 5, *hw)


def test_lstm_output_shape_and_fresh_state_per_window():
    spec = DataSpec("language_model", (12,), 37)
    model = MODELS["lstm"](spec, width=0.05).eval()  # 32 hidden units
    assert model.rnn.hidden_size == 32 and model.encoder.embedding_dim == 32
    x = torch.randint(37, (3, 12))
    with torch.no_grad():
        out = model(x)
        alone = model(x[1:2])
        x_other = x.clone()
        x_other[:, 1:] = (x[:, 1:] + 1) % 37
        other = model(x_other)
    assert out.shape == (3, 12, 37) and out.dtype == torch.float32
    # the hidden state starts at zero in every window: a window's logits do not depend on its batch ...
    torch.testing.assert_close(out[1:2], alone, rtol=1e-5, atol=1e-5)
    # ... and the first prediction depends only on the first token
    torch.testing.assert_close(out[:, 0], other[:, 0])
    assert not torch.allclose(out[:, 1], other[:, 1])


def test_lstm_rejects_other_tasks():
    with pytest.raises(ValueError, match="language model"):
        MODELS["lstm"](CIFAR)


# ----------------------------------------------------------------------------- tied weights

def test_lstm_tied_weights_share_one_tensor():
    spec = DataSpec("language_model", (6,), 50)
    model = MODELS["lstm"](spec, hidden=16, embedding_dim=16, tie_weights=True, dropout=0.0)
    assert model.decoder.weight is model.encoder.weight
    assert model.decoder.weight.data_ptr() == model.encoder.weight.data_ptr()
    # one update moves both the input embedding and the output projection
    x, y = small_batch(spec, 2)
    loss_of(model, spec, x, y).backward()
    before = model.encoder.weight.detach().clone()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert not torch.equal(before, model.encoder.weight)
    assert torch.equal(model.encoder.weight, model.decoder.weight)
    with pytest.raises(ValueError, match="embedding_dim == hidden"):
        MODELS["lstm"](spec, hidden=16, embedding_dim=8, tie_weights=True)


# ----------------------------------------------------------------------------- FLOPs

def test_flops_exact_on_hand_computed_model():
    spec = DataSpec("classification", (3, 8, 8), 5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    # conv: 4 x 8 x 8 outputs, each 3 x 3 x 3 MACs = 6,912; linear: 256 x 5 = 1,280; FLOPs = 2 x MACs
    assert forward_flops_per_example(model, spec) == 2 * (4 * 8 * 8 * 27 + 256 * 5) == 16_384
    assert training_flops_per_example(model, spec) == 3 * 16_384


def test_flops_strided_grouped_conv():
    spec = DataSpec("classification", (4, 9, 9), 2)
    # depthwise 3x3 stride 2 pad 1: 5x5 outputs per channel, 9 MACs each; then pointwise 4 -> 6
    model = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), nn.Conv2d(4, 6, 1))
    assert forward_flops_per_example(model, spec) == 2 * (4 * 25 * 9 + 6 * 25 * 4)


def test_flops_lstm_hand_computed():
    spec = DataSpec("language_model", (5,), 50)
    model = MODELS["lstm"](spec, layers=2, hidden=8, embedding_dim=6)
    # per token: layer 1 gates 4*8*(6+8) = 448, layer 2 4*8*(8+8) = 512, decoder 8*50 = 400, embedding 0
    assert forward_flops_per_example(model, spec) == 2 * 5 * (448 + 512 + 400) == 13_600


def test_flops_leave_model_untouched():
    model = MODELS["resnet18"](CIFAR, width=0.25).train()
    stats = model.stem[1].running_mean.clone()
    forward_flops_per_example(model, CIFAR)
    assert model.training
    assert torch.equal(stats, model.stem[1].running_mean)  # ran in eval mode: no BN statistics update
    assert all(not m._forward_hooks for m in model.modules())


def test_flops_of_cifar_resnets_match_published_macs():
    # kuangliu/pytorch-cifar (thop): ResNet-18 0.56 GMACs, ResNet-34 1.16 GMACs per 32x32 image.
    # Counted by hand for ResNet-18 (conv MACs): stem 1.77M + stage1 4x37.75M + stage2 (18.87+3x37.75+2.10)M
    # + stage3 and stage4 likewise + fc 5,120 = 555,422,720; FLOPs are twice the MACs.
    assert forward_flops_per_example(full_size("resnet18"), CIFAR) == 2 * 555_422_720
    assert abs(forward_flops_per_example(full_size("resnet34"), CIFAR) / 2 - 1.16e9) / 1.16e9 < 0.01
    # VGG-16 on CIFAR: 0.313 GMACs
    assert abs(forward_flops_per_example(full_size("vgg16_bn"), CIFAR) / 2 - 0.313e9) / 0.313e9 < 0.01


@pytest.mark.parametrize("name", ALL)
def test_flops_positive_and_grow_with_width(name):
    spec = small_spec(name)
    small = forward_flops_per_example(MODELS[name](spec, width=0.25), spec)
    larger = forward_flops_per_example(MODELS[name](spec, width=0.5), spec)
    assert 0 < small < larger


# ----------------------------------------------------------------------------- one training step

@pytest.mark.parametrize("name", ALL)
def test_one_sgd_step_reduces_loss_on_its_batch(name):
    torch.manual_seed(0)
    spec = small_spec(name)
    options = {"dropout": 0.0} if name in ("alexnet", "lstm") else {}  # deterministic loss to compare
    model = MODELS[name](spec, width=0.25, **options).train()
    x, y = small_batch(spec)
    # a step small enough to be a descent step: batch-norm nets at init have large gradients, while
    # the LSTM (word_language_model trains it at lr 20) and the BN-free AlexNet need larger steps
    optimizer = torch.optim.SGD(model.parameters(), lr={"lstm": 1.0, "alexnet": 0.1}.get(name, 1e-3))
    loss = loss_of(model, spec, x, y)
    assert torch.isfinite(loss)
    # at initialisation the loss is near log(classes) (uniform-ish predictions)
    assert 0.5 * math.log(spec.num_classes) < loss.item() < 3 * math.log(spec.num_classes)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    with torch.no_grad():
        after = loss_of(model, spec, x, y)
    assert torch.isfinite(after)
    assert after.item() < loss.item()
