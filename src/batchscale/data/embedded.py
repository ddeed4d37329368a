"""Embedded datasets: no download, deterministic, small enough for tests and laptops.

- digits: sklearn's 8x8 handwritten digits (1797 images, 10 classes), seeded stratified split.
- teacher: inputs N(0, I), labels from a random teacher network (classification).
- least_squares: linear regression with a chosen covariance spectrum (eigenvalues i^-decay).
- synthetic_images: CIFAR-shaped (3x32x32, 10 classes) images around smooth class prototypes,
  with a `difficulty` knob scaling the noise.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from batchscale.data import DataSpec, Splits, register_dataset
from batchscale.spec.options import CLASSES, NON_NEGATIVE, OPEN_FRACTION, POSITIVE_INT, UNIT_INTERVAL


def stratified_split(labels: torch.Tensor, test_fraction: float, generator: torch.Generator):
    train, test = [], []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        n_test = int(round(test_fraction * members.numel()))
        test.append(members[:n_test])
        train.append(members[n_test:])
    # Shuffle so that a prefix (max_examples) is not one class.
    train, test = torch.cat(train), torch.cat(test)
    return (train[torch.randperm(train.numel(), generator=generator)],
            test[torch.randperm(test.numel(), generator=generator)])


def _digits_table() -> np.ndarray:
    """sklearn's digits.csv.gz (64 pixels + label per row), read without importing sklearn.datasets.

    Importing sklearn.datasets costs about a second, paid by every train job; the file is the same one
    `sklearn.datasets.load_digits` reads.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the digits dataset needs scikit-learn installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    return np.loadtxt(path, delimiter=",")


@register_dataset("digits", options={"test_fraction": OPEN_FRACTION})
def digits(*, seed: int = 0, data_root=None, download=False, test_fraction: float = 0.2) -> Splits:
    """sklearn's digits as (1, 8, 8) images, standardised with the training split's mean and std."""
    table = _digits_table()
    images = torch.tensor(table[:, :64], dtype=torch.float32).reshape(-1, 1, 8, 8)  # (1797, 1, 8, 8), 0..16
    labels = torch.tensor(table[:, 64], dtype=torch.int64)
    train, test = stratified_split(labels, test_fraction, torch.Generator().manual_seed(seed))
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return Splits(images[train], labels[train], images[test], labels[test],
                  DataSpec("classification", (1, 8, 8), 10), info={"source": "sklearn.datasets.load_digits"})


@register_dataset("teacher", options={"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "dim": POSITIVE_INT,
                                      "classes": CLASSES, "hidden": POSITIVE_INT, "label_noise": UNIT_INTERVAL})
def teacher(*, seed: int = 0, data_root=None, download=False, n_train: int = 8192, n_test: int = 2048,
            dim: int = 32, classes: int = 10, hidden: int = 64, label_noise: float = 0.0) -> Splits:
    """Gaussian inputs labelled by the argmax of a random two-layer tanh teacher network."""
    generator = torch.Generator().manual_seed(seed)
    w1 = torch.randn(dim, hidden, generator=generator) / dim**0.5
    w2 = torch.randn(hidden, classes, generator=generator) / hidden**0.5
    x = torch.randn(n_train + n_test, dim, generator=generator)
    y = (torch.tanh(x @ w1) @ w2).argmax(dim=1)
    if label_noise > 0:
        flip = torch.rand(y.shape, generator=generator) < label_noise
        y = torch.where(flip, torch.randint(0, classes, y.shape, generator=generator), y)
    return Splits(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                  DataSpec("classification", (dim,), classes), info={"teacher_hidden": hidden})


@register_dataset("least_squares", options={"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "dim": POSITIVE_INT,
                                            "decay": NON_NEGATIVE, "noise": NON_NEGATIVE})
def least_squares(*, seed: int = 0, data_root=None, download=False, n_train: int = 4096, n_test: int = 1024,
                  dim: int = 64, decay: float = 1.0, noise: float = 0.1) -> Splits:
    """y = <w*, x> + noise with x ~ N(0, diag(i^-decay)): the spectrum sets the critical batch size."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.arange(1, dim + 1, dtype=torch.float32) ** (-decay / 2)
    x = torch.randn(n_train + n_test, dim, generator=generator) * scales
    w_star = torch.randn(dim, generator=generator)
    y = (x @ w_star + noise * torch.randn(n_train + n_test, generator=generator)).unsqueeze(1)
    return Splits(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                  DataSpec("regression", (dim,), 1), info={"spectrum_decay": decay})


@register_dataset("synthetic_images", options={"n_train": POSITIVE_INT, "n_test": POSITIVE_INT, "classes": CLASSES,
                                               "size": {"type": "integer", "minimum": 4}, "difficulty": NON_NEGATIVE})
def synthetic_images(*, seed: int = 0, data_root=None, download=False, n_train: int = 5000, n_test: int = 1000,
                     classes: int = 10, size: int = 32, difficulty: float = 1.0) -> Splits:
    """CIFAR-shaped images: a smooth prototype per class, plus shifted, rescaled, noisy copies.

    `difficulty` scales the per-example noise (smooth and pixel-level) relative to the prototypes;
    around 1 a small CNN needs a few epochs, above 2 classes overlap heavily.
    """
    generator = torch.Generator().manual_seed(seed)
    prototypes = F.interpolate(torch.randn(classes, 3, 4, 4, generator=generator), size=(size, size),
                               mode="bilinear", align_corners=False)
    total = n_train + n_test
    labels = torch.arange(total) % classes
    labels = labels[torch.randperm(total, generator=generator)]
    smooth_noise = F.interpolate(torch.randn(total, 3, 8, 8, generator=generator), size=(size, size),
                                 mode="bilinear", align_corners=False)
    pixel_noise = torch.randn(total, 3, size, size, generator=generator)
    contrast = 0.5 + torch.rand(total, 1, 1, 1, generator=generator)
    images = contrast * prototypes[labels] + difficulty * (0.8 * smooth_noise + 0.5 * pixel_noise)
    shifts = torch.randint(-3, 4, (total, 2), generator=generator)
    for i in range(total):  # small random translations; done once at generation time
        images[i] = torch.roll(images[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
    images = (images - images[:n_train].mean()) / images[:n_train].std()
    return Splits(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                  DataSpec("classification", (3, size, size), classes), info={"difficulty": difficulty})
