"""Models: a registry of named model builders.

A builder is `builder(spec: DataSpec, **options) -> torch.nn.Module`. The module maps a batch of
inputs to logits: (B, classes) for classification, (B, 1) for regression, (B, T, vocab) for language
modelling, (B, classes, H, W) for segmentation. Register with `@register_model("name")`, or name
`package.module:callable` in a study's `model.name`.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from batchscale.spec.registry import check_options, lookup

MODELS: dict[str, Callable[..., torch.nn.Module]] = {}
MODEL_OPTIONS: dict[str, dict] = {}  # a built-in's option ranges: option -> JSON schema


def register_model(name: str, options: dict | None = None):
    def decorator(builder):
        MODELS[name] = builder
        MODEL_OPTIONS[name] = options or {}
        return builder

    return decorator


# Built-in models and the module defining each; a module is imported only when one of its models is
# used (torchvision alone takes seconds to import, which every small train job would pay).
BUILTIN_MODELS = {
    "linear": "small", "mlp": "small", "cnn": "small", "cnn_bn": "small",
    "resnet18": "vision", "resnet34": "vision", "vgg16_bn": "vision", "alexnet": "vision",
    "mobilenetv2": "vision", "lstm": "language", "drn_d_22": "segmentation",
}


def _import_builtin(name: str) -> None:
    """Import the module of a built-in model (all of them for an unknown name, so the error lists every one)."""
    for module in [BUILTIN_MODELS[name]] if name in BUILTIN_MODELS else sorted(set(BUILTIN_MODELS.values())):
        importlib.import_module(f"{__name__}.{module}")


def resolve_model(name: str, key: str = "model.name") -> Callable[..., torch.nn.Module]:
    return lookup(name, MODELS, _import_builtin, "model", key)


def check_model(model: dict, key: str) -> None:
    """Fail early on an unknown model name or an option the builder does not take."""
    builder = resolve_model(model["name"], f"{key}.name")
    check_options(builder, model.get("options", {}), ("spec",), "model", model["name"], key,
                  MODEL_OPTIONS.get(model["name"]))


def build_model(model: dict, spec) -> torch.nn.Module:
    return resolve_model(model["name"])(spec, **model.get("options", {}))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
