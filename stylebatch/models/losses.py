"""Feature statistics and the losses shared by AdaIN training, Gatys and evaluation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from stylebatch.models.runtime import luminance

EPS = 1e-5


def mean_std(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over space, in fp32 (bf16 variance is too coarse), shape N,C,1,1."""
    f = feat.float().flatten(2)
    mean = f.mean(-1)
    std = (f.var(-1, unbiased=False) + EPS).sqrt()
    return mean[..., None, None], std[..., None, None]


def gram(feat: torch.Tensor) -> torch.Tensor:
    """Gram matrix normalised by the number of positions, fp32, shape N,C,C."""
    f = feat.float().flatten(2)
    return f @ f.transpose(1, 2) / f.shape[-1]


def content_loss(feats: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], layer: str) -> torch.Tensor:
    return F.mse_loss(feats[layer].float(), target[layer].float())


def mean_std_errors(feats: Mapping[str, torch.Tensor], target_stats: Mapping[str, tuple],
                    layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per layer: MSE(channel means) + MSE(channel stds), the terms of Huang & Belongie's style loss."""
    errors = {}
    for layer in layers:
        m, s = mean_std(feats[layer])
        tm, ts = target_stats[layer]
        errors[layer] = F.mse_loss(m, tm.expand_as(m)) + F.mse_loss(s, ts.expand_as(s))
    return errors


def mean_std_loss(feats: Mapping[str, torch.Tensor], target_stats: Mapping[str, tuple], layers: Sequence[str]):
    """Huang & Belongie's style loss: the sum of ``mean_std_errors`` over the layers."""
    return sum(mean_std_errors(feats, target_stats, layers).values())


def gram_loss(feats: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor], layers: Sequence[str]):
    total = 0.0
    for layer in layers:
        g = gram(feats[layer])
        total = total + F.mse_loss(g, target_grams[layer].expand_as(g))
    return total


def tonal_layout(x: torch.Tensor, block: int = 8) -> torch.Tensor:
    """N,3,H,W images in [0, 1] -> N rows: the luminance averaged over ``block`` x ``block`` pixels,
    i.e. where an image is bright and where dark at the scale of objects (a face, a suit, the sky)."""
    return F.avg_pool2d(luminance(x.float()), block).flatten(1)


def colour_layout(x: torch.Tensor, block: int = 8) -> torch.Tensor:
    """N,3,H,W images in [0, 1] -> N*3 rows: each RGB channel minus the luminance, averaged over
    ``block`` x ``block`` pixels, i.e. which hue each object has (an orange suit, a red parrot)
    apart from how bright it is (``tonal_layout``)."""
    x = x.float()
    return F.avg_pool2d(x - luminance(x), block).flatten(2).flatten(0, 1)


_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def edge_magnitude(x: torch.Tensor) -> torch.Tensor:
    """N,3,H,W images in [0, 1] -> N,1,h,w: the Sobel gradient magnitude of the luminance at half
    size, i.e. where an image's outlines are at the scale of features and fur (the evaluation's
    structure score correlates the output's with the photo's)."""
    y = F.interpolate(luminance(x.float()), scale_factor=0.5, mode="area")
    kx = y.new_tensor(_SOBEL_X).view(1, 1, 3, 3)
    gx, gy = F.conv2d(y, kx), F.conv2d(y, kx.transpose(2, 3))
    return (gx.square() + gy.square() + 1e-8).sqrt()  # the epsilon: a finite gradient where flat


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (0 where one is flat):
    blind to a change of brightness or contrast, so a style may set those."""
    return F.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), dim=1, eps=1e-6)


def slope(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of each row of ``a`` regressed on the same row of ``b`` (0 where ``b`` is
    flat): how much of ``b``'s variation ``a`` carries, at what strength (0.5: at half contrast)."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    var = b.square().sum(-1)
    return torch.where(var > 1e-12, (a * b).sum(-1) / var.clamp_min(1e-12), torch.zeros_like(var))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
