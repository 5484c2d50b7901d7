"""CycleGAN generators in the layout of pytorch-CycleGAN-and-pix2pix (photo -> Monet, Cezanne,
Ukiyo-e, Van Gogh and other translations).

Those files are state dicts of its ``ResnetGenerator`` with instance norm (no affine parameters),
reflection padding and no dropout, all in one ``model`` Sequential: a reflection-padded 7x7
convolution to ``ngf`` channels, two 3x3 stride-2 convolutions (to 2 and 4 ``ngf``), residual blocks
(``conv_block``: reflection pad, 3x3 conv, norm, ReLU, reflection pad, 3x3 conv, norm; added to
their input), two 3x3 stride-2 transposed convolutions back to ``ngf``, a reflection-padded 7x7
convolution to RGB and tanh. Pixels are RGB in [-1, 1] in and out. ``ngf`` (64 in the published
generators) and the number of blocks (9 there, 6 in its smaller variant) are read from the file.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from stylebatch.models.published import InstanceNorm, PublishedStylizer, shape_of

NAME = "cyclegan"


class _ResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, ngf: int = 64, blocks: int = 9):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), InstanceNorm(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                       InstanceNorm(ngf * mult * 2), nn.ReLU(True)]
        layers += [_ResnetBlock(ngf * 4) for _ in range(blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       InstanceNorm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class CycleGANStylizer(PublishedStylizer):
    what = NAME
    stride = 4  # two stride-2 convolutions, undone exactly by the transposed ones

    def build(self, state: dict[str, torch.Tensor], ref: str) -> nn.Module:
        ngf = shape_of(state, "model.1.weight", ref, self.what)[0]
        blocks = len({m.group(1) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
        return ResnetGenerator(ngf, blocks)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0

    def to_unit(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1.0) / 2.0
