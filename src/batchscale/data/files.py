"""What the readers of real datasets share: where each dataset must lie, one-line errors for missing or
damaged files, option checks, per-channel image statistics and seeded caps.

Where each dataset must lie (`data_root` defaults to `data`):

    cifar10     data_root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100    data_root/cifar-100-python/{train, test, meta}
    mnist       data_root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    svhn        data_root/svhn/{train,test[,extra]}_32x32.mat
    wikitext2   data_root/wikitext-2/wiki.{train,valid,test}.tokens
    cityscapes  data_root/cityscapes/{leftImg8bit,gtFine}/{train,val}/<city>/...

CIFAR, MNIST and SVHN are fetched by torchvision when the study allows `download: true`; WikiText-2 and
Cityscapes are never downloaded (Cityscapes needs a registered account). Every real dataset registers a
`check(data_root, options)` that raises a one-line `ConfigError` naming the missing path and how to get
the data, before any job starts, and a `shape(options)` with its published sizes. Files that exist but fail
torchvision's md5 check raise `ConfigError` when the factory runs.

Images are returned as uint8 (N, C, H, W) with the per-channel mean/std of the returned training split
(0..1 scale) in `Splits.mean`/`Splits.std`; the engine normalises on the device.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from batchscale.data import DataSpec, Splits
from batchscale.errors import ConfigError, DataMissingError

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
WIKITEXT_URL = "https://wikitext.smerity.com/wikitext-2-v1.zip"
CITYSCAPES_URL = "https://www.cityscapes-dataset.com"
TRAIN_EXAMPLES = {"type": ["integer", "null"], "minimum": 1}  # the range of a `train_examples` option


def reject_unknown_options(dataset: str, options: dict, allowed) -> None:
    """ConfigError naming the first option the dataset does not take."""
    for name in options:
        if name not in allowed:
            raise ConfigError(
                f"config key dataset.options.{name}: not an option of dataset {dataset!r}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'}")


def positive_int(value, key: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"config key dataset.options.{key}: {value!r} is not a positive integer")
    return int(value)


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[tuple, tuple]:
    """Per-channel mean and std (0..1 scale) of uint8 (N, C, H, W) images, accumulated in float64."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].to(torch.float64) / 255.0
        total += block.sum(dim=(0, 2, 3))
        total_sq += (block * block).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def seeded_cap(count: int, cap: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded subset of `cap` out of `count` examples (None: keep all)."""
    if cap is None or cap >= count:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:cap].sort().values


def missing_error(what: str, path: str, how: str) -> DataMissingError:
    return DataMissingError(f"config key data_root: {what} not found at {path}; {how}")


def first_missing(paths) -> str | None:
    for path in paths:
        if not os.path.exists(path):
            return path
    return None


def torchvision_error(what: str, path: str, err: Exception,
                       fix: str = "delete it and set download: true, or fetch it again",
                       failed: str = "could not be read or downloaded") -> ConfigError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ConfigError(f"config key data_root: {what} at {path} {failed} by torchvision ({reason}); {fix}")


def image_splits(train_x, train_y, test_x, test_y, num_classes: int, info: dict) -> Splits:
    mean, std = channel_stats(train_x)
    info = dict(info, num_train=int(train_x.shape[0]), num_test=int(test_x.shape[0]))
    spec = DataSpec("classification", tuple(train_x.shape[1:]), num_classes)
    return Splits(train_x, train_y.to(torch.int64), test_x, test_y.to(torch.int64), spec, mean, std, info)


def windows(tokens: torch.Tensor, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows: x = tokens[i:i+bptt], y = tokens[i+1:i+bptt+1], i = 0, bptt, 2*bptt, ..."""
    count = (tokens.numel() - 1) // bptt
    x = tokens[:count * bptt].reshape(count, bptt)
    y = tokens[1:count * bptt + 1].reshape(count, bptt)
    return x.contiguous(), y.contiguous()
