"""CPU inference kernels of the style network (``network.StyleNetwork``): the same arithmetic as the
plain layers, arranged for oneDNN's CPU kernels. Training and GPUs take the plain layers."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def output_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for the output convolutions (9x9, 1 or 3 output channels, full resolution).

    On CPU at inference it is computed as a k x 1 convolution to ``out * k`` channels (one per
    output channel and kernel column) and the sum of the k column slices, each shifted by its
    column: the same arithmetic, but oneDNN's direct 9x9 kernel costs as much for 1 or 3 output
    channels as for 16 (it is bound by gathering the 81 taps), and together the two plain output
    convs take a quarter of the network's time. This way they take half (3 channels) and a sixth (1
    channel) of it. The sum accumulates in fp32. Training and GPUs use the plain convolution."""
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return conv(x)
    out_ch, in_ch, kh, kw = conv.weight.shape
    columns = conv.weight.permute(0, 3, 1, 2).reshape(out_ch * kw, in_ch, kh, 1)
    y = F.conv2d(x, columns)
    y = y.view(y.shape[0], out_ch, kw, y.shape[-2], y.shape[-1])
    width = y.shape[-1] - kw + 1
    total = y[:, :, 0, :, :width].float()
    for k in range(1, kw):
        total = total + y[:, :, k, :, k:k + width]
    if conv.bias is not None:
        total = total + conv.bias.float().view(1, -1, 1, 1)
    return total.to(x.dtype)
