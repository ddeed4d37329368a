"""What every pack runs on: the device, the data on it, mixed precision, SIGTERM handling, a run's result.

The training loop is batchscale.engine.pack.train_pack; this module trains nothing.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

import torch

from batchscale.data import Splits
from batchscale.errors import ConfigError


@dataclass
class RunResult:
    """Everything a trace records about one run."""

    run: dict
    status: str
    steps_total: int
    points: dict[str, list] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    threads: int = 1
    wall_seconds: float = 0.0
    eval_seconds: float = 0.0
    info: dict = field(default_factory=dict)


class TerminationFlag:
    """Records SIGTERM instead of dying, so the loop can checkpoint at the next step boundary."""

    def __init__(self):
        self.requested = False
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self) -> None:
        """Put back the SIGTERM handler that was there before."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def pick_device(requested: str, study: str | None = None) -> torch.device:
    """The torch device of a study's `device` key.

    Args:
        requested: `auto` (CUDA when torch sees a GPU, else the CPU), `cpu` or `cuda`.
        study: the study's name, for the config key an error names.

    Returns:
        The device to train on.

    Raises:
        ConfigError: `cuda` on a machine where torch sees no CUDA device (one line naming the key).
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        key = f"studies.{study}.device" if study else "device"
        raise ConfigError(f"config key {key}: cuda was requested but torch sees no CUDA device on this machine; "
                          f"use device: auto (CUDA when present) or device: cpu")
    return torch.device(requested)


class DeviceData:
    """A split's tensors on the device, with on-device normalisation and augmentation."""

    def __init__(self, splits: Splits, device: torch.device, augment: bool, seed: int):
        self.x_train = splits.train_x.to(device)
        self.y_train = splits.train_y.to(device)
        self.x_test = splits.test_x.to(device)
        self.y_test = splits.test_y.to(device)
        self.spec = splits.spec
        self.augment = augment and len(splits.spec.input_shape) == 3
        self.mean = self.std = None
        if splits.mean is not None:
            shape = (1, -1, 1, 1)
            self.mean = torch.tensor(splits.mean, device=device, dtype=torch.float32).view(shape)
            self.std = torch.tensor(splits.std, device=device, dtype=torch.float32).view(shape)
        self.augment_generator = torch.Generator(device=device).manual_seed(seed + 7919)

    def prepare(self, x: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised inputs; augmented (from `generator`, a run's own stream) when training."""
        if self.mean is not None:
            x = (x.float() / 255.0 - self.mean) / self.std
        if train and self.augment:
            x = random_crop_flip(x, generator if generator is not None else self.augment_generator)
        return x


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation, vectorised: random crop from a zero-padded image and a horizontal flip."""
    batch, _, height, width = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=x.device)
    rows = (offsets[:, 0:1] + torch.arange(height, device=x.device)).view(batch, 1, height, 1)
    cols = (offsets[:, 1:2] + torch.arange(width, device=x.device)).view(batch, 1, 1, width)
    flip = torch.rand(batch, generator=generator, device=x.device) < 0.5
    cols = torch.where(flip.view(batch, 1, 1, 1), cols.flip(-1), cols)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[torch.arange(batch, device=x.device).view(batch, 1, 1, 1), channels, rows, cols]


def autocast_factory(device: torch.device, precision: str):
    """A function that opens the autocast context of `precision` (bf16 autocasts on CUDA only; fp32 never)."""
    enabled = precision == "bf16" and device.type == "cuda"

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)

    return autocast

