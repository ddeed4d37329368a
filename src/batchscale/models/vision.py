"""Image classifiers in their CIFAR form: built for 32x32 inputs, working for any (C, H, W) with H, W >= 8.

The ImageNet versions shrink the input 4x in their stem (7x7 stride-2 conv + max-pool); on 32x32 images
that leaves too little to work with, so the CIFAR variants (kuangliu/pytorch-cifar and most batch-size
papers) use a 3x3 stride-1 stem and no max-pool. Each network ends in adaptive pooling, so the input size
only changes the spatial extent of the feature maps, never the classifier's shape.

Every builder takes `width`, a multiplier on all channel counts (1.0 = the published network).
At width 1 with 10 classes on 3x32x32 (checked in tests/test_models_zoo.py; FLOPs = 2 x MACs, see flops.py):
    model         parameters   forward GFLOPs
    resnet18      11,173,962   1.111
    resnet34      21,282,122   2.319
    vgg16_bn      14,728,266   0.626
    alexnet       23,272,266   0.376   (hidden=4096; our CIFAR variant, see `AlexNet`)
    mobilenetv2    2,236,682   0.176
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock
from torchvision.ops.misc import Conv2dNormActivation

from batchscale.data import DataSpec
from batchscale.models import register_model
from batchscale.spec.options import DROPOUT, POSITIVE, POSITIVE_INT


def _scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier; never below one."""
    return max(1, int(round(channels * width)))


def _image_shape(spec: DataSpec, name: str) -> tuple[int, int, int]:
    if len(spec.input_shape) != 3:
        raise ValueError(f"{name} needs image inputs (C, H, W), got input_shape {tuple(spec.input_shape)}")
    return tuple(int(s) for s in spec.input_shape)


# -----------------------------------------------------------------------------
# ResNet (He et al. 2016), CIFAR stem

class ResNet(nn.Module):
    """conv3x3 stem -> 4 stages of BasicBlocks (64, 128, 256, 512 channels; stride 1, 2, 2, 2) -> GAP -> fc."""

    def __init__(self, blocks: list[int], in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        self.stem = Conv2dNormActivation(in_channels, _scaled(64, width), kernel_size=3, stride=1)
        stages, inplanes = [], _scaled(64, width)
        for i, count in enumerate(blocks):
            planes, stride = _scaled(64 * 2 ** i, width), 1 if i == 0 else 2
            stages.append(self._stage(inplanes, planes, count, stride))
            inplanes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    @staticmethod
    def _stage(inplanes: int, planes: int, count: int, stride: int) -> nn.Sequential:
        # the first block changes resolution/width, so its shortcut needs a 1x1 projection (option B)
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(inplanes, planes, stride, downsample)]
        layers += [BasicBlock(planes, planes) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet18", options={"width": POSITIVE})
def resnet18(spec: DataSpec, width: float = 1.0) -> nn.Module:
    channels = _image_shape(spec, "resnet18")[0]
    return ResNet([2, 2, 2, 2], channels, spec.num_classes, width)


@register_model("resnet34", options={"width": POSITIVE})
def resnet34(spec: DataSpec, width: float = 1.0) -> nn.Module:
    channels = _image_shape(spec, "resnet34")[0]
    return ResNet([3, 4, 6, 3], channels, spec.num_classes, width)


# -----------------------------------------------------------------------------
# VGG-16 with batch norm (Simonyan & Zisserman 2015), CIFAR head

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """13 conv-BN-ReLU layers in 5 pooled blocks -> GAP -> a single linear layer 512 -> classes.

    The CIFAR variant drops the two 4096-wide fully connected layers (at 32x32 the features are 1x1
    after the last pool, so they add 120M parameters for nothing).
    """

    def __init__(self, config: list, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        layers, channels = [], in_channels
        for item in config:
            if item == "M":
                # ceil_mode keeps a 1x1 map at 1x1, so five pools also work on 8x8 (or odd-sized) inputs
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                # conv bias kept (as in torchvision and kuangliu) so the count matches the usual 14.73M
                layers.append(Conv2dNormActivation(channels, _scaled(item, width), kernel_size=3, bias=True))
                channels = _scaled(item, width)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("vgg16_bn", options={"width": POSITIVE})
def vgg16_bn(spec: DataSpec, width: float = 1.0) -> nn.Module:
    return VGG(VGG16, _image_shape(spec, "vgg16_bn")[0], spec.num_classes, width)


# -----------------------------------------------------------------------------
# AlexNet (Krizhevsky et al. 2012), a CIFAR variant

class AlexNet(nn.Module):
    """Five convs with AlexNet's widths (64, 192, 384, 256, 256) -> 2x2 adaptive pool -> 3-layer classifier.

    There is no single canonical CIFAR AlexNet; ours keeps the ImageNet network's structure and changes
    only what 32x32 inputs force: all kernels are 3x3 with stride 1 (ImageNet: 11x11/4 and 5x5 stems), the
    three 2x2 max-pools take 32 -> 16 -> 8 -> 4, and an adaptive average pool to 2x2 (ImageNet: 6x6) feeds
    the classifier Dropout -> Linear(1024, hidden) -> ReLU -> Dropout -> Linear(hidden, hidden) -> ReLU ->
    Linear(hidden, classes). No batch norm, as in the original. At width 1, hidden 4096, 10 classes:
    2,251,584 conv + 21,020,682 classifier = 23,272,266 parameters, 0.376 GFLOPs forward on 3x32x32.
    """

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, hidden: int = 4096,
                 dropout: float = 0.5):
        super().__init__()
        c1, c2, c3, c4, c5 = (_scaled(c, width) for c in (64, 192, 384, 256, 256))
        hidden = _scaled(hidden, width)
        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]

        def pool():
            return nn.MaxPool2d(2, 2, ceil_mode=True)  # ceil_mode: 1x1 maps stay 1x1 on tiny inputs

        self.features = nn.Sequential(
            *conv(in_channels, c1), pool(),
            *conv(c1, c2), pool(),
            *conv(c2, c3), *conv(c3, c4), *conv(c4, c5), pool(),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(c5 * 2 * 2, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("alexnet", options={"width": POSITIVE, "hidden": POSITIVE_INT, "dropout": DROPOUT})
def alexnet(spec: DataSpec, width: float = 1.0, hidden: int = 4096, dropout: float = 0.5) -> nn.Module:
    return AlexNet(_image_shape(spec, "alexnet")[0], spec.num_classes, width, hidden, dropout)


# -----------------------------------------------------------------------------
# MobileNetV2 (Sandler et al. 2018), CIFAR strides

# (expansion t, output channels c, blocks n, stride of the first block s), as in the paper's Table 2,
# except the stem and the 24-channel stage use stride 1 (kuangliu/pytorch-cifar): overall stride 8, not 32.
MOBILENETV2 = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    """conv3x3(32) -> 17 inverted residual blocks -> conv1x1(1280) -> GAP -> fc.

    The blocks are torchvision's: the residual is used only where the shape is unchanged (as in the paper),
    so there are no 1x1 projection shortcuts (kuangliu adds them: 2.30M parameters instead of 2.24M).
    The width multiplier scales every layer, the 1280-channel head included (the paper keeps the head at
    1280 for width < 1; a uniform scale keeps "width" meaning the same thing across models).
    """

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        channels = _scaled(32, width)
        layers = [Conv2dNormActivation(in_channels, channels, kernel_size=3, stride=1, activation_layer=nn.ReLU6)]
        for t, c, n, s in MOBILENETV2:
            for i in range(n):
                layers.append(InvertedResidual(channels, _scaled(c, width), s if i == 0 else 1, expand_ratio=t))
                channels = _scaled(c, width)
        head = _scaled(1280, width)
        layers.append(Conv2dNormActivation(channels, head, kernel_size=1, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("mobilenetv2", options={"width": POSITIVE})
def mobilenetv2(spec: DataSpec, width: float = 1.0) -> nn.Module:
    return MobileNetV2(_image_shape(spec, "mobilenetv2")[0], spec.num_classes, width)
