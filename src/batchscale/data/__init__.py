"""Datasets: a registry of named datasets, each returning `Splits` of CPU tensors.

A dataset factory is `factory(*, seed, data_root, download, **options) -> Splits`. Register one with
`@register_dataset("name", options={...ranges...})` in any module of this package (every module is imported
when a name is first looked up, so a new dataset is its module and its test), or name
`package.module:callable` in a study's `dataset.name`. Real datasets also register a `check` that verifies
their files exist before any job starts, and a `shape` giving their split sizes from the published numbers,
so validation never reads their files.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from batchscale.spec.registry import check_options, lookup

TASKS = ("classification", "regression", "language_model", "segmentation")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data to build its input and output layers."""

    task: str  # one of TASKS
    input_shape: tuple  # shape of one example, e.g. (64,), (3, 32, 32), (bptt,)
    num_classes: int  # classes, vocabulary size (language_model) or 1 (regression)
    ignore_index: int | None = None  # label ignored by the loss (segmentation)


@dataclass
class Splits:
    """Train and test tensors on the CPU; the engine moves them to the device once."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    spec: DataSpec
    # Optional per-channel normalisation applied on the device (lets images travel as uint8).
    mean: tuple | None = None
    std: tuple | None = None
    info: dict = field(default_factory=dict)  # provenance, recorded in the trace

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])


@dataclass(frozen=True)
class DatasetEntry:
    factory: Callable[..., Splits]
    check: Callable[[str, dict], None] | None = None  # check(data_root, options) raises ConfigError
    real: bool = False
    # shape(options) -> (DataSpec, n_train, n_test) before fraction and caps, from the published sizes
    shape: Callable[[dict], tuple] | None = None
    options: dict | None = None  # option -> JSON schema of its range (types come from the annotations)


DATASETS: dict[str, DatasetEntry] = {}
DOWNLOADABLE = ("cifar10", "cifar100", "mnist", "svhn")


def register_dataset(name: str, check: Callable | None = None, real: bool = False, shape: Callable | None = None,
                     options: dict | None = None):
    def decorator(factory):
        DATASETS[name] = DatasetEntry(factory, check, real, shape, options)
        return factory

    return decorator


def _import_builtins(name: str) -> None:
    """Import every dataset module of this package (each registers its datasets)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def resolve_dataset(name: str, key: str = "dataset.name") -> DatasetEntry:
    found = lookup(name, DATASETS, _import_builtins, "dataset", key)
    return found if isinstance(found, DatasetEntry) else DatasetEntry(found)


def check_dataset(dataset: dict, data_root: str, download: bool, key: str) -> None:
    """Fail early on an unknown name or option, or (for real data) missing files."""
    entry = resolve_dataset(dataset["name"], f"{key}.name")
    check_options(entry.factory, dataset.get("options", {}), ("seed", "data_root", "download"), "dataset",
                  dataset["name"], key, entry.options)
    # torchvision can fetch these when `download: true`; WikiText-2 and Cityscapes never download
    if entry.check is not None and not (download and dataset["name"] in DOWNLOADABLE):
        entry.check(data_root, dataset.get("options", {}))


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a seeded subset keeping `fraction` of each class (at least one per class)."""
    generator = torch.Generator().manual_seed(seed)
    keep = []
    flat = labels if labels.dim() == 1 else None
    if flat is None:  # no class labels per example (LM, segmentation): plain seeded subset
        count = max(1, int(round(fraction * labels.shape[0])))
        return torch.randperm(labels.shape[0], generator=generator)[:count].sort().values
    for cls in torch.unique(flat):
        members = torch.nonzero(flat == cls).flatten()
        count = max(1, int(round(fraction * members.numel())))
        keep.append(members[torch.randperm(members.numel(), generator=generator)[:count]])
    return torch.cat(keep).sort().values


def load_dataset(dataset: dict, data_root: str = "data", download: bool = False) -> Splits:
    """Build a study's splits: factory, then `fraction`, then the example caps."""
    entry = resolve_dataset(dataset["name"])
    splits = entry.factory(seed=dataset.get("split_seed", 0), data_root=data_root, download=download,
                           **dataset.get("options", {}))
    fraction = dataset.get("fraction", 1.0)
    if fraction < 1.0:
        index = stratified_subset(splits.train_y, fraction, dataset.get("split_seed", 0) + 1)
        splits = replace(splits, train_x=splits.train_x[index], train_y=splits.train_y[index])
    cap = dataset.get("max_examples")
    if cap is not None and cap < splits.num_train:
        splits = replace(splits, train_x=splits.train_x[:cap], train_y=splits.train_y[:cap])
    test_cap = dataset.get("max_test_examples")
    if test_cap is not None and test_cap < splits.test_x.shape[0]:
        splits = replace(splits, test_x=splits.test_x[:test_cap], test_y=splits.test_y[:test_cap])
    return splits
