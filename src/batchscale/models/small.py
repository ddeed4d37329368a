"""Small models for embedded data: linear, MLP and a small CNN (with and without BatchNorm)."""

from __future__ import annotations

import math

from torch import nn

from batchscale.models import register_model
from batchscale.spec.options import LAYER_SIZES, POSITIVE


def _scaled(size: int, width: float) -> int:
    return max(1, int(round(size * width)))


def _in_features(spec) -> int:
    return math.prod(spec.input_shape)


@register_model("linear")
def linear(spec) -> nn.Module:
    """Multinomial logistic regression (or least squares for a regression task)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_in_features(spec), spec.num_classes))


@register_model("mlp", options={"hidden": LAYER_SIZES, "width": POSITIVE,
                                "activation": {"type": "string", "enum": ["relu", "tanh"]}})
def mlp(spec, hidden: list[int] = (128,), width: float = 1.0, activation: str = "relu") -> nn.Module:
    """Fully connected network with ReLU (or tanh) hidden layers."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    layers: list[nn.Module] = [nn.Flatten()]
    features = _in_features(spec)
    for size in hidden:
        layers += [nn.Linear(features, _scaled(size, width)), act()]
        features = _scaled(size, width)
    layers.append(nn.Linear(features, spec.num_classes))
    return nn.Sequential(*layers)


@register_model("cnn", options={"channels": {**LAYER_SIZES, "minItems": 1}, "width": POSITIVE})
def cnn(spec, channels: list[int] = (32, 64), width: float = 1.0, batch_norm: bool = False) -> nn.Module:
    """Conv(3x3)-[BN]-ReLU-MaxPool blocks, global average pooling, linear classifier."""
    in_channels = spec.input_shape[0]
    layers: list[nn.Module] = []
    for size in channels:
        out = _scaled(size, width)
        # BatchNorm makes the conv bias redundant
        layers.append(nn.Conv2d(in_channels, out, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        in_channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, spec.num_classes)]
    return nn.Sequential(*layers)


@register_model("cnn_bn", options={"channels": {**LAYER_SIZES, "minItems": 1}, "width": POSITIVE})
def cnn_bn(spec, channels: list[int] = (32, 64), width: float = 1.0) -> nn.Module:
    """The small CNN with BatchNorm after every convolution."""
    return cnn(spec, channels=channels, width=width, batch_norm=True)
