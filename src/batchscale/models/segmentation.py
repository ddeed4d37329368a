"""DRN-D-22 (Yu, Koltun & Funkhouser, "Dilated Residual Networks", CVPR 2017) for semantic segmentation.

Follows the authors' code (github.com/fyu/drn, drn.py / segment.py). Eight levels, output stride 8:

    level   layers  channels  stride  dilation  kind
    stem    1       16        1       1         conv7x7-BN-ReLU
    1       1       16        1       1         conv3x3-BN-ReLU (plain conv, no residual: the "D" stem)
    2       1       32        2       1         conv3x3-BN-ReLU
    3       2       64        2       1         BasicBlock x2 (residual)
    4       2       128       2       1         BasicBlock x2
    5       2       256       1       2         BasicBlock x2, dilated instead of strided
    6       2       512       1       4         BasicBlock x2, dilated instead of strided
    7       1       512       1       2         conv3x3-BN-ReLU, no residual (removes gridding artefacts)
    8       1       512       1       1         conv3x3-BN-ReLU, no residual

then a 1x1 classifier conv to the classes and bilinear upsampling (x8) back to the input size, giving
(B, classes, H, W). The authors upsample with a fixed bilinear transposed conv; F.interpolate is the same
operation and also handles sizes that are not multiples of 8.

Backbone parameter count (width 1, 3 input channels): 15,880,752 without a classifier; 16,393,752 with the
authors' 1000-class 1x1-conv fc, matching the 16.4M published for DRN-D-22 (paper, Table 1).
Forward cost: ~2.13 GFLOPs for a 3x64x64 image, growing with H x W (~136 GFLOPs at 512x512).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from batchscale.data import DataSpec
from batchscale.models import register_model
from batchscale.spec.options import POSITIVE

LAYERS = (1, 1, 2, 2, 2, 2, 1, 1)
CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    # padding = dilation * (k - 1) / 2 keeps the size: dilated layers see further without shrinking the map
    return [nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                      bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class BasicBlock(nn.Module):
    """ResNet basic block with a dilation per conv (torchvision's BasicBlock refuses dilation > 1)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: tuple[int, int] = (1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation[0], dilation=dilation[0], bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation[1], dilation=dilation[1], bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DRN_D(nn.Module):
    """The DRN-D backbone: image (B, C, H, W) -> features (B, channels[-1], H/8, W/8)."""

    def __init__(self, in_channels: int, layers=LAYERS, channels=CHANNELS, width: float = 1.0):
        super().__init__()
        c = [_scaled(ch, width) for ch in channels]
        self.layer0 = nn.Sequential(*_conv_bn_relu(in_channels, c[0], kernel=7))
        self.layer1 = self._convs(c[0], c[0], layers[0], stride=1)
        self.layer2 = self._convs(c[0], c[1], layers[1], stride=2)
        self.layer3 = self._blocks(c[1], c[2], layers[2], stride=2)
        self.layer4 = self._blocks(c[2], c[3], layers[3], stride=2)
        # from here on the resolution stays at 1/8: dilation replaces the stride the ResNet would use.
        # Authors' detail: the first block of a level "halves" its first dilation only when it starts a new
        # level (new_level=True); levels 5 and 6 are built with new_level=False, so they use (d, d) throughout.
        self.layer5 = self._blocks(c[3], c[4], layers[4], dilation=2)
        self.layer6 = self._blocks(c[4], c[5], layers[5], dilation=4)
        self.layer7 = self._convs(c[5], c[6], layers[6], dilation=2)
        self.layer8 = self._convs(c[6], c[7], layers[7], dilation=1)
        self.out_channels = c[7]

    @staticmethod
    def _convs(cin: int, cout: int, count: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        modules = []
        for i in range(count):
            modules += _conv_bn_relu(cin if i == 0 else cout, cout, stride=stride if i == 0 else 1,
                                     dilation=dilation)
        return nn.Sequential(*modules)

    @staticmethod
    def _blocks(cin: int, cout: int, count: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        blocks = [BasicBlock(cin, cout, stride, (dilation, dilation))]
        blocks += [BasicBlock(cout, cout, 1, (dilation, dilation)) for _ in range(count - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x):
        for i in range(9):
            x = getattr(self, f"layer{i}")(x)
        return x


class DRNSeg(nn.Module):
    """DRN-D backbone -> 1x1 conv classifier at 1/8 resolution -> bilinear upsampling to the input size."""

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        self.base = DRN_D(in_channels, width=width)
        self.seg = nn.Conv2d(self.base.out_channels, num_classes, 1)
        # authors' init for the classifier: He-normal weights, zero bias
        nn.init.normal_(self.seg.weight, 0.0, math.sqrt(2.0 / num_classes))
        nn.init.zeros_(self.seg.bias)
        # the authors' init for the backbone convs as well (He-normal, fan_out)
        for m in self.base.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        logits = self.seg(self.base(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model("drn_d_22", options={"width": POSITIVE})
def drn_d_22(spec: DataSpec, width: float = 1.0) -> nn.Module:
    if len(spec.input_shape) != 3:
        raise ValueError(f"drn_d_22 needs image inputs (C, H, W), got input_shape {tuple(spec.input_shape)}")
    return DRNSeg(int(spec.input_shape[0]), spec.num_classes, width)
