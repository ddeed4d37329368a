"""`synthetic_segmentation`: seeded images of coloured shapes on noisy backgrounds with per-pixel labels.

Each image (3, size, size) has a smooth random colour gradient as background (class 0) and one to
`max_shapes` shapes painted on top of each other. Foreground class c (1..num_classes-1) has a fixed shape
kind (rectangle, disc, triangle, cycling with c) and a fixed base colour (the same for every seed) that is
jittered per shape; Gaussian pixel noise of standard deviation `noise` (0..1 scale) covers everything.
A fraction `ignore_fraction` of the pixels on label borders (a 4-neighbour has another label) is labelled
255, the ignore_index, as void borders are in Cityscapes. Images are uint8 with the per-channel mean/std of
the training split in `Splits.mean`/`Splits.std`; labels are int64 (N, size, size).
"""

from __future__ import annotations

import math

import torch

from batchscale.data import DataSpec, Splits, register_dataset
from batchscale.data.files import channel_stats, positive_int, reject_unknown_options
from batchscale.errors import ConfigError
from batchscale.spec.options import CLASSES, NON_NEGATIVE, POSITIVE_INT, UNIT_INTERVAL

SEG_OPTIONS = ("size", "num_classes", "n_train", "n_test", "noise", "ignore_fraction", "max_shapes")
IGNORE = 255
SHAPES = ("rectangle", "disc", "triangle")
PALETTE_SEED = 20180101  # class colours do not depend on the dataset seed


def class_colours(num_classes: int) -> torch.Tensor:
    """(num_classes, 3) base colours in 0..1; row 0 (background) is unused."""
    generator = torch.Generator().manual_seed(PALETTE_SEED)
    return 0.15 + 0.75 * torch.rand((num_classes, 3), generator=generator)


def _shape_masks(generator, count: int, size: int, kinds: torch.Tensor) -> torch.Tensor:
    """Boolean (count, size, size) masks of one random shape per image, of kind 0/1/2 per image."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)

    def draw(low, high):
        return (low + (high - low) * torch.rand(count, generator=generator)).view(count, 1, 1)

    cy, cx = draw(0.15 * size, 0.85 * size), draw(0.15 * size, 0.85 * size)
    radius = draw(0.12 * size, 0.28 * size)
    half_h, half_w = radius * draw(0.6, 1.0), radius * draw(0.6, 1.0)
    rectangle = ((yy - cy).abs() <= half_h) & ((xx - cx).abs() <= half_w)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    start = draw(0.0, 2 * math.pi)
    corners = []
    for k in range(3):
        angle = start + k * 2 * math.pi / 3 + draw(-0.3, 0.3)
        corners.append((cy + 1.2 * radius * torch.sin(angle), cx + 1.2 * radius * torch.cos(angle)))
    edges = []
    for k in range(3):
        (y0, x0), (y1, x1) = corners[k], corners[(k + 1) % 3]
        edges.append((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0))
    triangle = ((edges[0] >= 0) & (edges[1] >= 0) & (edges[2] >= 0)) | (
        (edges[0] <= 0) & (edges[1] <= 0) & (edges[2] <= 0))
    kinds = kinds.view(count, 1, 1)
    return torch.where(kinds == 0, rectangle, torch.where(kinds == 1, disc, triangle))


def _border(labels: torch.Tensor) -> torch.Tensor:
    """Pixels with a 4-neighbour of another label."""
    border = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[:, 1:, :] != labels[:, :-1, :]
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    border[:, 1:, :] |= vertical
    border[:, :-1, :] |= vertical
    border[:, :, 1:] |= horizontal
    border[:, :, :-1] |= horizontal
    return border


def generate(generator, count: int, size: int, num_classes: int, noise: float, ignore_fraction: float,
             max_shapes: int) -> tuple[torch.Tensor, torch.Tensor]:
    palette = class_colours(num_classes)
    coords = torch.linspace(0.0, 1.0, size)
    # background: base colour plus a linear gradient in a random direction
    base = 0.1 + 0.6 * torch.rand((count, 3, 1, 1), generator=generator)
    angle = 2 * math.pi * torch.rand((count, 1, 1, 1), generator=generator)
    amplitude = 0.3 * (2 * torch.rand((count, 3, 1, 1), generator=generator) - 1)
    ramp = torch.cos(angle) * coords.view(1, 1, size, 1) + torch.sin(angle) * coords.view(1, 1, 1, size)
    images = base + amplitude * ramp
    labels = torch.zeros((count, size, size), dtype=torch.int64)
    for slot in range(max_shapes):
        active = torch.ones(count, dtype=torch.bool) if slot == 0 else (
            torch.rand(count, generator=generator) < 0.6)
        classes = torch.randint(1, num_classes, (count,), generator=generator)
        kinds = (classes - 1) % len(SHAPES)
        masks = _shape_masks(generator, count, size, kinds) & active.view(count, 1, 1)
        jitter = 0.08 * (2 * torch.rand((count, 3), generator=generator) - 1)
        colours = (palette[classes] + jitter).view(count, 3, 1, 1)
        images = torch.where(masks.unsqueeze(1), colours, images)
        labels = torch.where(masks, classes.view(count, 1, 1), labels)
    images = images + noise * torch.randn(images.shape, generator=generator)
    images = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    ignored = _border(labels) & (torch.rand(labels.shape, generator=generator) < ignore_fraction)
    labels[ignored] = IGNORE
    return images, labels


def _fraction(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"config key dataset.options.{key}: {value!r} is not between 0 and 1")
    return float(value)


@register_dataset("synthetic_segmentation", options={
    "size": {"type": "integer", "minimum": 8}, "num_classes": {**CLASSES, "maximum": 255}, "n_train": POSITIVE_INT,
    "n_test": POSITIVE_INT, "noise": NON_NEGATIVE, "ignore_fraction": UNIT_INTERVAL, "max_shapes": POSITIVE_INT})
def synthetic_segmentation(*, seed: int, data_root: str = "data", download: bool = False, size: int = 32,
                           num_classes: int = 4, n_train: int = 2000, n_test: int = 500, noise: float = 0.1,
                           ignore_fraction: float = 0.5, max_shapes: int = 4, **options) -> Splits:
    """Seeded shapes-on-noise segmentation (embedded); class 0 is background, 255 is ignored."""
    reject_unknown_options("synthetic_segmentation", options, SEG_OPTIONS)
    size = positive_int(size, "size")
    if size < 8:
        raise ConfigError(f"config key dataset.options.size: {size} is too small (at least 8 pixels)")
    num_classes = positive_int(num_classes, "num_classes")
    if not 2 <= num_classes <= 255:
        raise ConfigError(f"config key dataset.options.num_classes: {num_classes} is not between 2 and 255")
    n_train, n_test = positive_int(n_train, "n_train"), positive_int(n_test, "n_test")
    max_shapes = positive_int(max_shapes, "max_shapes")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ConfigError(f"config key dataset.options.noise: {noise!r} is not a non-negative number")
    ignore_fraction = _fraction(ignore_fraction, "ignore_fraction")

    generator = torch.Generator().manual_seed(seed)
    train_x, train_y = generate(generator, n_train, size, num_classes, float(noise), ignore_fraction, max_shapes)
    test_x, test_y = generate(generator, n_test, size, num_classes, float(noise), ignore_fraction, max_shapes)
    mean, std = channel_stats(train_x)
    labelled = train_y[train_y != IGNORE]
    pixel_share = torch.bincount(labelled, minlength=num_classes).double() / max(1, labelled.numel())
    info = {
        "source": "synthetic shapes", "num_train": n_train, "num_test": n_test, "size": size,
        "train_class_pixel_share": [round(float(v), 4) for v in pixel_share],
        "train_ignored_pixel_share": round(float((train_y == IGNORE).double().mean()), 4),
    }
    spec = DataSpec("segmentation", (3, size, size), num_classes, ignore_index=IGNORE)
    return Splits(train_x, train_y, test_x, test_y, spec, mean, std, info)
