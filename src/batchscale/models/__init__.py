"""Models: a registry of named model builders.

A builder is `builder(spec: DataSpec, **options) -> torch.nn.Module`. The module maps a batch of
inputs to logits: (B, classes) for classification, (B, 1) for regression, (B, T, vocab) for language
modelling, (B, classes, H, W) for segmentation. Register with `@register_model("name")`, or name
`package.module:callable` in a study's `model.name`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

import torch

from batchscale.config import ConfigError

MODELS: dict[str, Callable[..., torch.nn.Module]] = {}


def register_model(name: str):
    def decorator(builder):
        MODELS[name] = builder
        return builder

    return decorator


# Built-in models and the module defining each; a module is imported only when one of its models is
# used (torchvision alone takes seconds to import, which every small train job would pay).
BUILTIN_MODELS = {
    "linear": "small", "mlp": "small", "cnn": "small", "cnn_bn": "small",
    "resnet18": "vision", "resnet34": "vision", "vgg16_bn": "vision", "alexnet": "vision",
    "mobilenetv2": "vision", "lstm": "language", "drn_d_22": "segmentation",
}


def resolve_model(name: str, key: str = "model.name") -> Callable[..., torch.nn.Module]:
    if name in BUILTIN_MODELS and name not in MODELS:
        importlib.import_module(f"batchscale.models.{BUILTIN_MODELS[name]}")
    if name in MODELS:
        return MODELS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"config key {key}: cannot import {name!r} ({err})") from None
    raise ConfigError(
        f"config key {key}: unknown model {name!r}; allowed values: {', '.join(sorted(set(BUILTIN_MODELS) | set(MODELS)))} "
        f"or package.module:callable")


def check_model(model: dict, key: str) -> None:
    """Fail early on an unknown model name or an option the builder does not take."""
    builder = resolve_model(model["name"], f"{key}.name")
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    allowed = [n for n in parameters if n != "spec"]
    for option in model.get("options", {}):
        if option not in allowed:
            raise ConfigError(
                f"config key {key}.options.{option}: unknown option for model {model['name']!r}; "
                f"allowed options: {', '.join(allowed) or '(none)'}")


def build_model(model: dict, spec) -> torch.nn.Module:
    return resolve_model(model["name"])(spec, **model.get("options", {}))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
