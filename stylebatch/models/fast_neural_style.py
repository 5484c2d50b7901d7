"""Johnson et al.'s feed-forward style networks in the layout of PyTorch's examples/fast_neural_style.

Those files (candy, mosaic, udnie, rain_princess and any trained with that example) are state dicts
of its ``TransformerNet``: reflection-padded convolutions ``conv1`` 9x9, ``conv2``/``conv3`` 3x3
stride 2, five residual blocks ``res1``..``res5`` (two 3x3 convolutions each), ``deconv1``/``deconv2``
nearest x2 upsampling then 3x3, ``deconv3`` 9x9 to RGB; affine instance norm ``in1``..``in5`` and
ReLU after every convolution but the last. Pixels are RGB 0-255 in and out. The widths (32, 64,
128) and the number of residual blocks are read from the file, so narrower variants load too.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from stylebatch.models.published import InstanceNorm, PublishedStylizer, shape_of

NAME = "fast-neural-style"


class _Conv(nn.Module):
    """Reflection padding then a convolution (``upsample``: nearest x2 first); its parameters are
    ``conv2d.*`` as in the published files."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv2d(self.pad(x))


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.in1 = _Conv(channels, channels, 3), InstanceNorm(channels, affine=True)
        self.conv2, self.in2 = _Conv(channels, channels, 3), InstanceNorm(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class TransformerNet(nn.Module):
    def __init__(self, width: int = 32, blocks: int = 5):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.conv1, self.in1 = _Conv(3, c1, 9), InstanceNorm(c1, affine=True)
        self.conv2, self.in2 = _Conv(c1, c2, 3, stride=2), InstanceNorm(c2, affine=True)
        self.conv3, self.in3 = _Conv(c2, c3, 3, stride=2), InstanceNorm(c3, affine=True)
        for i in range(1, blocks + 1):
            setattr(self, f"res{i}", _Residual(c3))
        self.blocks = blocks
        self.deconv1, self.in4 = _Conv(c3, c2, 3, upsample=True), InstanceNorm(c2, affine=True)
        self.deconv2, self.in5 = _Conv(c2, c1, 3, upsample=True), InstanceNorm(c1, affine=True)
        self.deconv3 = _Conv(c1, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        for i in range(1, self.blocks + 1):
            y = getattr(self, f"res{i}")(y)
        y = F.relu(self.in4(self.deconv1(y)))
        y = F.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class FastNeuralStyleStylizer(PublishedStylizer):
    what = NAME
    stride = 4  # two stride-2 convolutions

    def build(self, state: dict[str, torch.Tensor], ref: str) -> nn.Module:
        width = shape_of(state, "conv1.conv2d.weight", ref, self.what)[0]
        blocks = len({m.group(1) for k in state if (m := re.match(r"res(\d+)\.", k))})
        return TransformerNet(width, blocks)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x * 255.0

    def to_unit(self, y: torch.Tensor) -> torch.Tensor:
        return y / 255.0
