"""Real image datasets read from `data_root` by torchvision's readers: CIFAR-10, CIFAR-100, MNIST and SVHN
(where each must lie: batchscale.data.files)."""

from __future__ import annotations

import os

import numpy as np
import torch

from batchscale.data import DataSpec, Splits, register_dataset
from batchscale.data.files import (CIFAR_URL, MNIST_URL, SVHN_URL, TRAIN_EXAMPLES, first_missing, image_splits,
                                   missing_error, positive_int, reject_unknown_options, seeded_cap,
                                   torchvision_error)


def _capped(n: int, options: dict) -> int:
    cap = options.get("train_examples")
    return min(n, int(cap)) if cap else n


def cifar_shape(classes: int):
    return lambda options: (DataSpec("classification", (3, 32, 32), classes), 50_000, 10_000, classes)  # equal classes


def mnist_shape(options: dict):
    side = 32 if options.get("pad", True) else 28
    return DataSpec("classification", (1, side, side), 10), _capped(60_000, options), 10_000


def svhn_shape(options: dict):
    n = 73_257 + (531_131 if options.get("extra", False) else 0)
    return DataSpec("classification", (3, 32, 32), 10), _capped(n, options), 26_032


# CIFAR-10 / CIFAR-100


def _cifar_paths(data_root: str, hundred: bool) -> tuple[str, list[str]]:
    if hundred:
        folder = os.path.join(data_root, "cifar-100-python")
        names = ["train", "test", "meta"]
    else:
        folder = os.path.join(data_root, "cifar-10-batches-py")
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    return folder, [os.path.join(folder, name) for name in names]


def _check_cifar(data_root: str, hundred: bool) -> None:
    folder, files = _cifar_paths(data_root, hundred)
    missing = first_missing([folder] + files)
    if missing is not None:
        what = "CIFAR-100" if hundred else "CIFAR-10"
        archive = "cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz"
        raise missing_error(what, missing, f"download {archive} from {CIFAR_URL} and extract it into {data_root}, "
                                      f"or set download: true")


def check_cifar10(data_root: str, options: dict) -> None:
    reject_unknown_options("cifar10", options, ())
    _check_cifar(data_root, hundred=False)


def check_cifar100(data_root: str, options: dict) -> None:
    reject_unknown_options("cifar100", options, ())
    _check_cifar(data_root, hundred=True)


def _load_cifar(data_root: str, download: bool, hundred: bool) -> Splits:
    from torchvision import datasets

    if not download:
        _check_cifar(data_root, hundred)
    reader = datasets.CIFAR100 if hundred else datasets.CIFAR10
    what = "CIFAR-100" if hundred else "CIFAR-10"
    folder, _ = _cifar_paths(data_root, hundred)
    try:
        train = reader(root=data_root, train=True, download=download)
        test = reader(root=data_root, train=False, download=download)
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found or corrupted" (md5), no network
        raise torchvision_error(what, folder, err) from None

    def to_tensors(part):
        images = torch.from_numpy(np.ascontiguousarray(part.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(part.targets, dtype=torch.int64)

    train_x, train_y = to_tensors(train)
    test_x, test_y = to_tensors(test)
    info = {"source": f"torchvision.datasets.{reader.__name__}", "path": folder}
    return image_splits(train_x, train_y, test_x, test_y, 100 if hundred else 10, info)


@register_dataset("cifar10", check=check_cifar10, real=True, shape=cifar_shape(10))
def cifar10(*, seed: int, data_root: str, download: bool, **options) -> Splits:
    """CIFAR-10: 50,000 train / 10,000 test uint8 (3, 32, 32) images, 10 classes."""
    reject_unknown_options("cifar10", options, ())
    return _load_cifar(data_root, download, hundred=False)


@register_dataset("cifar100", check=check_cifar100, real=True, shape=cifar_shape(100))
def cifar100(*, seed: int, data_root: str, download: bool, **options) -> Splits:
    """CIFAR-100 (fine labels): 50,000 train / 10,000 test uint8 (3, 32, 32) images, 100 classes."""
    reject_unknown_options("cifar100", options, ())
    return _load_cifar(data_root, download, hundred=True)


# MNIST

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MNIST_OPTIONS = ("train_examples", "pad")


def _mnist_present(data_root: str) -> str | None:
    """None when torchvision can read MNIST from data_root, else the first missing path."""
    raw = os.path.join(data_root, "MNIST", "raw")
    missing = first_missing([raw] + [os.path.join(raw, name) for name in MNIST_FILES])
    if missing is None:
        return None
    processed = os.path.join(data_root, "MNIST", "processed")  # torchvision's legacy cache is accepted too
    if first_missing([os.path.join(processed, "training.pt"), os.path.join(processed, "test.pt")]) is None:
        return None
    return missing


def check_mnist(data_root: str, options: dict) -> None:
    reject_unknown_options("mnist", options, MNIST_OPTIONS)
    positive_int(options.get("train_examples"), "train_examples", allow_none=True)
    missing = _mnist_present(data_root)
    if missing is not None:
        raw = os.path.join(data_root, "MNIST", "raw")
        raise missing_error("MNIST", missing, f"download the four *-ubyte.gz files from {MNIST_URL} and gunzip them "
                                         f"into {raw}, or set download: true")


@register_dataset("mnist", check=check_mnist, real=True, shape=mnist_shape,
                  options={"train_examples": TRAIN_EXAMPLES, "pad": {"type": "boolean"}})
def mnist(*, seed: int, data_root: str, download: bool, train_examples: int | None = None,
          pad: bool = True, **options) -> Splits:
    """MNIST: 60,000 train / 10,000 test digits, 10 classes.

    Images are zero-padded from 28x28 to 32x32 (`pad: true`, the default) so that the CIFAR-shaped
    architectures apply unchanged; `pad: false` returns them as (1, 28, 28). `train_examples` keeps a
    seeded subset of the training split (the paper uses 50,000).
    """
    from torchvision import datasets

    reject_unknown_options("mnist", options, MNIST_OPTIONS)
    cap = positive_int(train_examples, "train_examples", allow_none=True)
    if not download:
        check_mnist(data_root, {})
    try:
        train = datasets.MNIST(root=data_root, train=True, download=download)
        test = datasets.MNIST(root=data_root, train=False, download=download)
    except (RuntimeError, OSError) as err:
        raise torchvision_error("MNIST", os.path.join(data_root, "MNIST"), err) from None
    train_x, train_y = train.data.unsqueeze(1).contiguous(), train.targets.to(torch.int64)
    test_x, test_y = test.data.unsqueeze(1).contiguous(), test.targets.to(torch.int64)
    if pad:
        train_x = torch.nn.functional.pad(train_x, (2, 2, 2, 2))
        test_x = torch.nn.functional.pad(test_x, (2, 2, 2, 2))
    available = int(train_x.shape[0])
    index = seeded_cap(available, cap, seed)
    if index is not None:
        train_x, train_y = train_x[index], train_y[index]
    info = {"source": "torchvision.datasets.MNIST", "path": os.path.join(data_root, "MNIST"), "padded": bool(pad),
            "train_available": available}
    return image_splits(train_x, train_y, test_x, test_y, 10, info)


# SVHN

SVHN_OPTIONS = ("train_examples", "extra")


def _svhn_root(data_root: str) -> str:
    # torchvision's SVHN keeps its .mat files directly in `root`; a subfolder keeps data_root tidy.
    return os.path.join(data_root, "svhn")


def check_svhn(data_root: str, options: dict) -> None:
    reject_unknown_options("svhn", options, SVHN_OPTIONS)
    positive_int(options.get("train_examples"), "train_examples", allow_none=True)
    root = _svhn_root(data_root)
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if options.get("extra") else [])
    missing = first_missing([os.path.join(root, name) for name in names])
    if missing is not None:
        raise missing_error("SVHN", missing, f"download {os.path.basename(missing)} from {SVHN_URL} into {root}, "
                                        f"or set download: true")


@register_dataset("svhn", check=check_svhn, real=True, shape=svhn_shape,
                  options={"train_examples": TRAIN_EXAMPLES, "extra": {"type": "boolean"}})
def svhn(*, seed: int, data_root: str, download: bool, train_examples: int | None = None,
         extra: bool = False, **options) -> Splits:
    """SVHN (cropped digits): 73,257 train (+531,131 with `extra: true`, 604,388 in all) / 26,032 test uint8
    (3, 32, 32) images, 10 classes (digit 0 has label 0). `train_examples` keeps a seeded subset of the
    training split (paper: 50,000; Fig. 4 uses the extra split)."""
    from torchvision import datasets

    reject_unknown_options("svhn", options, SVHN_OPTIONS)
    cap = positive_int(train_examples, "train_examples", allow_none=True)
    options = {"extra": extra}
    if not download:
        check_svhn(data_root, options)
    root = _svhn_root(data_root)
    parts = ["train", "extra"] if extra else ["train"]
    try:
        train_parts = [datasets.SVHN(root=root, split=part, download=download) for part in parts]
        test = datasets.SVHN(root=root, split="test", download=download)
    except (RuntimeError, OSError) as err:
        raise torchvision_error("SVHN", root, err) from None

    def to_tensors(part):
        return torch.from_numpy(np.ascontiguousarray(part.data)), torch.from_numpy(part.labels.astype(np.int64))

    pieces = [to_tensors(part) for part in train_parts]
    del train_parts
    train_x = torch.cat([p[0] for p in pieces]) if len(pieces) > 1 else pieces[0][0]
    train_y = torch.cat([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
    del pieces
    test_x, test_y = to_tensors(test)
    available = int(train_x.shape[0])
    index = seeded_cap(available, cap, seed)
    if index is not None:
        train_x, train_y = train_x[index], train_y[index]
    info = {"source": "torchvision.datasets.SVHN", "path": root, "extra": bool(extra), "train_available": available}
    return image_splits(train_x, train_y, test_x, test_y, 10, info)
