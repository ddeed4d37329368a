"""Cityscapes (fine annotations, 19 train classes) from `data_root` through torchvision's reader; never
downloaded (it needs a registered account)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from batchscale.data import DataSpec, Splits, register_dataset
from batchscale.data.files import (CITYSCAPES_URL, channel_stats, first_missing, missing_error, reject_unknown_options, torchvision_error)
from batchscale.errors import ConfigError
from batchscale.spec.options import POSITIVE_INT

SPLIT_SIZES = {"train": 2_975, "val": 500, "test": 1_525}


def cityscapes_shape(options: dict):
    height, width = _cityscapes_size(options.get("size", (256, 512)))
    return (DataSpec("segmentation", (3, height, width), 19, ignore_index=255), SPLIT_SIZES["train"],
            SPLIT_SIZES[options.get("test_split", "val")])


# Cityscapes (fine annotations, 19 train classes)

CITYSCAPES_OPTIONS = ("size", "test_split")


def cityscapes_train_ids() -> np.ndarray:
    """Lookup table label id (0..255) -> train id (0..18), everything else 255 (ignored)."""
    from torchvision.datasets import Cityscapes

    table = np.full(256, 255, dtype=np.uint8)
    for cls in Cityscapes.classes:
        if 0 <= cls.id < 256 and 0 <= cls.train_id < 255:
            table[cls.id] = cls.train_id
    return table


def _cityscapes_root(data_root: str) -> str:
    return os.path.join(data_root, "cityscapes")


def _cityscapes_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size)):
        raise ConfigError(f"config key dataset.options.size: {size!r} is not [height, width] in pixels")
    return int(size[0]), int(size[1])


def check_cityscapes(data_root: str, options: dict) -> None:
    reject_unknown_options("cityscapes", options, CITYSCAPES_OPTIONS)
    _cityscapes_size(options.get("size", (256, 512)))
    test_split = options.get("test_split", "val")
    if test_split not in ("val", "test"):
        raise ConfigError(f"config key dataset.options.test_split: {test_split!r} is not allowed; "
                          f"allowed values: val, test")
    root = _cityscapes_root(data_root)
    zips = [os.path.join(root, "leftImg8bit_trainvaltest.zip"), os.path.join(root, "gtFine_trainvaltest.zip")]
    if first_missing(zips) is None:  # torchvision extracts these itself
        return
    folders = [os.path.join(root, kind, split) for split in ("train", test_split) for kind in ("leftImg8bit", "gtFine")]
    missing = first_missing(folders)
    if missing is not None:
        raise missing_error("Cityscapes", missing, f"it needs a registered account at {CITYSCAPES_URL}: download "
                                              f"leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into {root} "
                                              f"(download: true cannot fetch it)")


def _read_cityscapes_split(root: str, split: str, size: tuple[int, int], table: np.ndarray):
    from PIL import Image
    from torchvision.datasets import Cityscapes

    reader = Cityscapes(root, split=split, mode="fine", target_type="semantic")
    order = sorted(range(len(reader.images)), key=lambda i: reader.images[i])  # os.listdir order is arbitrary
    height, width = size

    def load(index):
        image, target = reader[index]
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        if target.size != (width, height):
            target = target.resize((width, height), Image.NEAREST)
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        labels = table[np.asarray(target, dtype=np.uint8)]
        return pixels, labels

    count = len(order)
    x = torch.empty((count, 3, height, width), dtype=torch.uint8)
    y = torch.empty((count, height, width), dtype=torch.int64)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for slot, (pixels, labels) in enumerate(pool.map(load, order)):
            x[slot] = torch.from_numpy(np.ascontiguousarray(pixels))
            y[slot] = torch.from_numpy(labels.astype(np.int64))
    return x, y, [reader.images[i] for i in order]


@register_dataset("cityscapes", check=check_cityscapes, real=True, shape=cityscapes_shape,
                  options={"size": {"type": "array", "items": POSITIVE_INT, "minItems": 2, "maxItems": 2},
                           "test_split": {"type": "string", "enum": ["val", "test"]}})
def cityscapes(*, seed: int, data_root: str, download: bool, size=(256, 512), test_split: str = "val",
               **options) -> Splits:
    """Cityscapes semantic segmentation (fine annotations): 2,975 train images, evaluated on the 500 `val`
    images (the test split's labels are withheld). Label ids are mapped to the 19 train ids, every other
    id to 255 (ignore_index). Images are resized to `size` = [height, width] (bilinear), labels with
    nearest neighbour. All files are decoded on every load (2048x1024 PNGs: allow a few minutes)."""
    options = dict(options, size=size, test_split=test_split)
    check_cityscapes(data_root, options)  # never downloadable, so always check
    size = _cityscapes_size(size)
    root = _cityscapes_root(data_root)
    table = cityscapes_train_ids()
    try:
        train_x, train_y, _ = _read_cityscapes_split(root, "train", size, table)
        test_x, test_y, _ = _read_cityscapes_split(root, test_split, size, table)
    except (RuntimeError, OSError) as err:  # e.g. an image without its gtFine labelIds file
        raise torchvision_error("Cityscapes", root, err, f"it needs both leftImg8bit and gtFine from "
                                                          f"{CITYSCAPES_URL}", "could not be read") from None
    mean, std = channel_stats(train_x)
    info = {"source": "torchvision.datasets.Cityscapes", "path": root, "test_split": test_split,
            "size": list(size), "num_train": int(train_x.shape[0]), "num_test": int(test_x.shape[0])}
    spec = DataSpec("segmentation", (3, size[0], size[1]), 19, ignore_index=255)
    return Splits(train_x, train_y, test_x, test_y, spec, mean, std, info)
