"""Reference networks in the published checkpoint layouts, and files saved the way those projects save them.

Written from the architectures' descriptions (Johnson et al.'s network as PyTorch's
examples/fast_neural_style lays it out; pytorch-CycleGAN-and-pix2pix's ResnetGenerator with
instance norm, reflection padding and no dropout), independently of stylebatch's own modules, so
a test can compare what stylebatch loads with what the reference computes. Both projects save
``torch.save(net.state_dict(), path)``; older fast_neural_style files also carry instance-norm
``running_mean``/``running_var`` buffers, which ``stale_norm_keys=True`` adds.

    python tests/published_checkpoints.py fast-neural-style candy.pth [--small]
    python tests/published_checkpoints.py cyclegan style_monet.pth [--small]
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.nn import functional as F


class JohnsonReference(nn.Module):
    """TransformerNet: parameters conv{1,2,3}, res{1..N}.{conv1,conv2,in1,in2}, deconv{1,2,3}, in{1..5}."""

    def __init__(self, width: int = 32, blocks: int = 5):
        super().__init__()
        c = (width, 2 * width, 4 * width)

        def conv(cin, cout, k, stride=1):
            m = nn.Module()
            m.conv2d = nn.Conv2d(cin, cout, k, stride)
            return m

        def norm(ch):
            return nn.InstanceNorm2d(ch, affine=True)

        self.conv1, self.in1 = conv(3, c[0], 9), norm(c[0])
        self.conv2, self.in2 = conv(c[0], c[1], 3, 2), norm(c[1])
        self.conv3, self.in3 = conv(c[1], c[2], 3, 2), norm(c[2])
        self.res = []
        for i in range(blocks):
            block = nn.Module()
            block.conv1, block.in1 = conv(c[2], c[2], 3), norm(c[2])
            block.conv2, block.in2 = conv(c[2], c[2], 3), norm(c[2])
            setattr(self, f"res{i + 1}", block)
            self.res.append(block)
        self.deconv1, self.in4 = conv(c[2], c[1], 3), norm(c[1])
        self.deconv2, self.in5 = conv(c[1], c[0], 3), norm(c[0])
        self.deconv3 = conv(c[0], 3, 9)

    @staticmethod
    def _apply(m, x, upsample=False):
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        k = m.conv2d.kernel_size[0]
        return m.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"))

    def forward(self, x):  # x: RGB 0-255
        y = F.relu(self.in1(self._apply(self.conv1, x)))
        y = F.relu(self.in2(self._apply(self.conv2, y)))
        y = F.relu(self.in3(self._apply(self.conv3, y)))
        for b in self.res:
            y = y + b.in2(self._apply(b.conv2, F.relu(b.in1(self._apply(b.conv1, y)))))
        y = F.relu(self.in4(self._apply(self.deconv1, y, upsample=True)))
        y = F.relu(self.in5(self._apply(self.deconv2, y, upsample=True)))
        return self._apply(self.deconv3, y)


class _Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True),
                                        nn.InstanceNorm2d(dim), nn.ReLU(True), nn.ReflectionPad2d(1),
                                        nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class CycleGANReference(nn.Module):
    """ResnetGenerator(3, 3, ngf, norm=instance, use_dropout=False, n_blocks, padding_type='reflect')."""

    def __init__(self, ngf: int = 64, blocks: int = 9):
        super().__init__()
        seq = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, kernel_size=7, padding=0, bias=True),
               nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(2):  # downsampling
            m = 2 ** i
            seq += [nn.Conv2d(ngf * m, ngf * m * 2, kernel_size=3, stride=2, padding=1, bias=True),
                    nn.InstanceNorm2d(ngf * m * 2), nn.ReLU(True)]
        seq += [_Block(ngf * 4) for _ in range(blocks)]
        for i in range(2):  # upsampling
            m = 2 ** (2 - i)
            seq += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, kernel_size=3, stride=2, padding=1,
                                       output_padding=1, bias=True),
                    nn.InstanceNorm2d(ngf * m // 2), nn.ReLU(True)]
        seq += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*seq)

    def forward(self, x):  # x: RGB in [-1, 1]
        return self.model(x)


def reference(kind: str, small: bool = False, seed: int = 0) -> nn.Module:
    """A reference network with seeded weights; instance-norm affine parameters are randomised
    too, so a loader that drops or swaps them changes the output."""
    torch.manual_seed(seed)
    if kind == "fast-neural-style":
        net = JohnsonReference(8, 2) if small else JohnsonReference()
    elif kind == "cyclegan":
        net = CycleGANReference(8, 2) if small else CycleGANReference()
    else:
        raise ValueError(kind)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight") and p.ndim == 1:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias") and p.ndim == 1 and kind == "fast-neural-style":
                p.uniform_(-0.5, 0.5)
        if kind == "fast-neural-style":  # outputs across 0-255, as a trained network's
            net.deconv3.conv2d.weight.mul_(200.0)
            net.deconv3.conv2d.bias.fill_(128.0)
    return net.eval()


def write_checkpoint(kind: str, path, *, small: bool = False, seed: int = 0, stale_norm_keys: bool = False) -> nn.Module:
    """Save a reference network as its project does (``torch.save(state_dict)``); return it."""
    net = reference(kind, small, seed)
    state = net.state_dict()
    if stale_norm_keys:
        for name, m in net.named_modules():
            if isinstance(m, nn.InstanceNorm2d):
                state[f"{name}.running_mean"] = torch.zeros(m.num_features)
                state[f"{name}.running_var"] = torch.ones(m.num_features)
    torch.save(state, str(path))
    return net


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["fast-neural-style", "cyclegan"])
    ap.add_argument("path")
    ap.add_argument("--small", action="store_true", help="narrow, 2-block variant (default: the published size)")
    ap.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    args = ap.parse_args(argv)
    write_checkpoint(args.kind, args.path, small=args.small, seed=args.seed)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
