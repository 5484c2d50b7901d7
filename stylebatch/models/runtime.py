"""Device/precision choice and image <-> tensor conversion shared by the models."""
from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from stylebatch.models import tiling

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def cpu_supports_bf16() -> bool:
    # AVX512_BF16 / AMX make bf16 matmuls fast; without them bf16 on CPU is slower than fp32.
    caps = torch.backends.cpu.get_cpu_capability().lower()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported()) or "amx" in caps
    except AttributeError:  # pragma: no cover - older torch
        return False


def pick_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is only supported on CUDA; use bf16 or fp32 on CPU")
    return precision


def autocast(device: torch.device, precision: str):
    """Mixed precision for the convolutions; statistics are computed in fp32 by the callers."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Same-sized HxWx3 uint8 RGB arrays -> NCHW float [0,1]."""
    arr = np.stack([np.ascontiguousarray(im) for im in images])
    t = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return t.contiguous(memory_format=torch.channels_last)


def to_images(batch: torch.Tensor) -> list[np.ndarray]:
    """NCHW float [0,1] -> list of HxWx3 uint8 RGB (rounded, clipped)."""
    arr = batch.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a) for a in arr]


def check_image(img: np.ndarray, what: str = "image") -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        got = f"{type(img).__name__} {getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}"
        raise ValueError(f"{what} must be an HxWx3 uint8 RGB array, got {got}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{what} is empty: {img.shape}")


def check_alpha(alpha: float) -> float:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    return float(alpha)


def map_in_batches(images: Sequence[np.ndarray], device: torch.device, max_batch: int,
                   fn: Callable[[torch.Tensor], torch.Tensor], tiles: Optional[tiling.TilePlan] = None) -> list[np.ndarray]:
    """Check each HxWx3 uint8 image, run same-sized ones through ``fn`` (NCHW [0,1] in, same out)
    in batches of up to ``max_batch`` (on CPU one at a time), and return uint8 images in the input
    order. With ``tiles``, a picture larger than one tile runs alone, tile by tile
    (``tiling.run_tiled``: bounded memory, the whole picture's statistics)."""
    for i, img in enumerate(images):
        check_image(img, f"image {i}")
    if device.type == "cpu":
        # A batch's activations spill out of the CPU's caches (a 32-channel bf16 map of one 512 px
        # image is 17 MB): on a 2-core Xeon, one image at a time ran the style network 1.6x and
        # AdaIN 1.4x faster per image than batches of 8 (1.7x / 2.5x against 16 at 256 px; docs/benchmarks.md).
        max_batch = 1
    out: list = [None] * len(images)
    by_size: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, img in enumerate(images):
        by_size[img.shape].append(i)
    for size, idxs in by_size.items():
        if tiles is not None and tiles.needed(*size[:2]):
            for i in idxs:
                out[i] = to_images(tiling.run_tiled(fn, to_tensor([images[i]], device), tiles))[0]
            continue
        for start in range(0, len(idxs), max_batch):
            chunk = idxs[start:start + max_batch]
            for i, arr in zip(chunk, to_images(fn(to_tensor([images[i] for i in chunk], device)))):
                out[i] = arr
    return out


class FileModels:
    """What every stylizer that runs a weights file named by a style holds: where it runs (device,
    precision, the tile plan) and the files' models, loaded once each (LRU of ``cache_size``)."""

    def __init__(self, *, device: str, precision: str, read_bytes: Callable[[str], bytes], cache_size: int,
                 max_batch: int, tiles: Optional[tiling.TilePlan], bytes_per_pixel: int):
        self.device = pick_device(device)
        self.tiles = tiles or tiling.plan_for(self.device, bytes_per_pixel)
        self.precision = pick_precision(precision, self.device)
        self.read_bytes = read_bytes
        self.cache_size = cache_size
        self.max_batch = max_batch
        self._loaded: collections.OrderedDict = collections.OrderedDict()

    def cached(self, ref: str, load: Callable[[str], Any]) -> Any:
        """``load(ref)`` the first time, the kept result after (most recently used last)."""
        if ref not in self._loaded:
            self._loaded[ref] = load(ref)
            while len(self._loaded) > self.cache_size:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(ref)
        return self._loaded[ref]


def pad_to_multiple(x: torch.Tensor, multiple: int = 8, min_size: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad H and W up to a multiple (the encoder downsamples by 8) and at least ``min_size`` (the
    decoder's reflection padding needs a relu4_1 map of 2+ pixels), so nothing is cropped away.
    Reflection keeps the border statistics natural; tiny images fall back to replication."""
    h, w = x.shape[-2:]
    ph = max(-h % multiple, min_size - h)
    pw = max(-w % multiple, min_size - w)
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


RGB_TO_Y = torch.tensor([0.299, 0.587, 0.114])  # luminance weights (Rec. 601)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """N,3,H,W RGB -> N,1,H,W luminance (Rec. 601), in x's dtype."""
    return (x * RGB_TO_Y.to(x.device, x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)


def keep_content_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer (Gatys et al., 'Preserving Color in Neural Artistic Style Transfer'):
    the stylized luminance with the content's chrominance."""
    return (content - luminance(content) + luminance(stylized)).clamp(0, 1)


def color_stats(images: Sequence[np.ndarray], weights: Sequence[float] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3) and covariance (3x3) of the pixels of HxWx3 uint8 images in [0,1] units; with
    ``weights``, of their weighted mixture (each image's share of the pixels is its weight)."""
    w = np.asarray(list(weights) or [1.0] * len(images), dtype=np.float64)
    w = w / w.sum()
    stats = []
    for img in images:
        px = torch.as_tensor(np.array(img).reshape(-1, 3), dtype=torch.float64).div_(255.0)  # a copy: style images are read-only
        stats.append((px.mean(0), px.T @ px / px.shape[0]))  # mean and second moment
    mean = sum(float(wi) * m for wi, (m, _) in zip(w, stats))
    second = sum(float(wi) * s for wi, (_, s) in zip(w, stats))
    return mean.float(), (second - torch.outer(mean, mean)).float()


def match_color(content: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor], eps: float = 1e-4,
                strength: float = 1.0, keep_luma: float = 0.0) -> torch.Tensor:
    """Linear colour transfer: an affine map of RGB that gives the content (NCHW [0,1]) the target
    mean and 3x3 covariance (``color_stats`` of the style). The symmetric square roots (rather than
    a Cholesky factor) give the map closest to the identity, so hues move least and the photo's
    edges survive; premium starts from this to spend its iterations on texture rather than on
    repainting the palette. ``strength`` in [0, 1] goes part of the way (the identity map blended
    with the transfer: 0 = the content unchanged). ``keep_luma`` in [0, 1] gives back that share of
    the content's own luminance variation (about its mean): a pale, flat target covariance otherwise
    flattens dark hair and a black helmet into a light background, and faces go (the palette_luma row of docs/model-conclusions.md)."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if not 0.0 <= float(keep_luma) <= 1.0:
        raise ValueError(f"keep_luma must be in [0, 1], got {keep_luma}")
    mu_s, cov_s = (t.to(content.device) for t in target)
    eye = eps * torch.eye(3, device=content.device)
    x = content.float().permute(0, 2, 3, 1).reshape(content.shape[0], -1, 3)
    out = []
    for xi in x:
        # One pixel has no covariance (torch.cov gives NaN): treat it as flat.
        # The content's statistics are the whole picture's when it runs in tiles (tiling.global_stat).
        cov_c, mu_c = tiling.global_stat(lambda: (
            (torch.cov(xi.T) if xi.shape[0] > 1 else torch.zeros(3, 3, device=xi.device)) + eye, xi.mean(0)))
        matched = (xi - mu_c) @ (_sqrtm(cov_c, -0.5) @ _sqrtm(cov_s + eye, 0.5)) + mu_s
        if keep_luma:
            luma = RGB_TO_Y.to(xi.device)
            y_in, y_matched = xi @ luma, matched @ luma
            y_in_mean, y_matched_mean = tiling.global_stat(lambda: (y_in.mean(), y_matched.mean()))
            matched = matched + keep_luma * ((y_in - y_in_mean) - (y_matched - y_matched_mean))[:, None]
        out.append(strength * matched + (1.0 - strength) * xi)
    n, _, h, w = content.shape
    y = torch.stack(out).reshape(n, h, w, 3).permute(0, 3, 1, 2).clamp(0, 1)
    return y.to(content.dtype).contiguous(memory_format=torch.channels_last)


def _sqrtm(cov: torch.Tensor, power: float) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag(vals.clamp_min(1e-8) ** power) @ vecs.T
