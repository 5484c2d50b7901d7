"""Running published image-to-image checkpoints: a state dict in a known layout, one network per file.

A style names the file (``style.network``) and the kind of network in it (``style.model``); each
kind module (``fast_neural_style``, ``cyclegan``) describes its architecture and pixel range, and
``PublishedStylizer`` does the rest the same way for every kind: weights-only loading, a strict
check of the keys and shapes against the architecture built from the file, padding to the
network's stride, precision, ``alpha`` and ``preserve_color``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch
from torch import nn

from stylebatch.models import runtime, tiling
from stylebatch.models.checkpoints import WeightsError, load_weights_bytes, read_weights_file

# Instance-norm buffers that files saved by older PyTorch releases carry (instance norm then tracked
# running statistics by default); the networks normalise by each picture's own statistics, so
# these are never read.
STALE_NORM_KEYS = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters and keys) that takes the whole picture's statistics
    while the picture runs in tiles (``tiling``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not tiling.taping():
            return super().forward(x)
        y = tiling.instance_norm(x, self.eps)
        if self.affine:
            y = y * self.weight.to(y.dtype)[:, None, None] + self.bias.to(y.dtype)[:, None, None]
        return y


def state_dict_of(record, ref: str, what: str) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` mapping of a loaded file, without the stale instance-norm buffers."""
    if isinstance(record, dict) and isinstance(record.get("state_dict"), dict):
        record = record["state_dict"]
    if not isinstance(record, dict) or not record or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in record.items()):
        raise WeightsError(f"{ref}: not a {what} state dict (expected a mapping of parameter names to tensors)")
    return {k: v for k, v in record.items() if not STALE_NORM_KEYS.search(k)}


def check_layout(state: dict[str, torch.Tensor], net: nn.Module, ref: str, what: str) -> None:
    """Refuse a file whose keys or shapes differ from ``net``'s, naming the first differences."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else "")] if missing else []) + \
                ([f"unexpected {', '.join(extra[:4])}" + (" ..." if len(extra) > 4 else "")] if extra else [])
        raise WeightsError(f"{ref} is not a {what} checkpoint: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise WeightsError(f"{ref} is not a {what} checkpoint: {k} has shape {tuple(state[k].shape)}, "
                               f"the architecture needs {tuple(v.shape)}")


def shape_of(state: dict[str, torch.Tensor], key: str, ref: str, what: str) -> tuple[int, ...]:
    """The shape of a key the architecture is read from; a file without it is refused."""
    if key not in state:
        raise WeightsError(f"{ref} is not a {what} checkpoint: it has no {key}")
    return tuple(state[key].shape)


class PublishedStylizer(runtime.FileModels):
    """Stylize with a published checkpoint. Subclasses set ``what`` (the kind's name in messages),
    ``stride`` (input sides are padded up to a multiple of it) and implement ``build`` (the
    architecture that fits a state dict), ``to_input`` and ``to_unit`` (the network's pixel range
    from and to [0, 1])."""

    what = ""
    stride = 4

    def __init__(self, *, device: str = "auto", precision: str = "auto",
                 read_bytes: Optional[Callable[[str], bytes]] = None, cache_size: int = 8, max_batch: int = 8,
                 tiles: Optional[tiling.TilePlan] = None):
        # 400: the activation bytes a pixel (registry's MemoryNeed), for a GPU's tile size.
        super().__init__(device=device, precision=precision,
                         read_bytes=read_bytes or (lambda ref: read_weights_file(ref, f"{self.what} weights file")),
                         cache_size=cache_size, max_batch=max_batch, tiles=tiles, bytes_per_pixel=400)

    def build(self, state: dict[str, torch.Tensor], ref: str) -> nn.Module:
        raise NotImplementedError

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_unit(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def network(self, ref: str) -> nn.Module:
        """The network in file ``ref``, loaded once (LRU of ``cache_size``); refused with a
        WeightsError when the file is not this kind's layout."""
        return self.cached(ref, self._load)

    def _load(self, ref: str) -> nn.Module:
        state = state_dict_of(load_weights_bytes(self.read_bytes(ref), ref), ref, self.what)
        net = self.build(state, ref)
        check_layout(state, net, ref, self.what)
        net.load_state_dict(state)
        return net.eval().to(self.device)

    def check_style(self, style) -> None:
        if not getattr(style, "network", None):
            raise ValueError(f"style {getattr(style, 'name', style.key)!r} names no {self.what} weights file")
        self.network(style.network)

    @torch.inference_mode()
    def stylize(self, images: Sequence[np.ndarray], style, *, alpha: float = 1.0,
                preserve_color: bool = False) -> list[np.ndarray]:
        """Each HxWx3 uint8 image through the style's network; ``alpha`` blends with the photo in
        pixel space, ``preserve_color`` keeps the photo's chrominance (before the blend)."""
        alpha = runtime.check_alpha(alpha)
        self.check_style(style)
        net = self.network(style.network)

        def run(x: torch.Tensor) -> torch.Tensor:
            # Sides padded to the network's total stride, so its output crops back to the input's size.
            padded, (h, w) = runtime.pad_to_multiple(x, self.stride, min_size=self.stride)
            with runtime.autocast(self.device, self.precision):
                y = net(self.to_input(padded.contiguous()))
            y = self.to_unit(y.float())[..., :h, :w].clamp(0, 1)
            if preserve_color:
                y = runtime.keep_content_color(y, x)
            return alpha * y + (1.0 - alpha) * x if alpha < 1.0 else y

        return runtime.map_in_batches(images, self.device, self.max_batch, run, tiles=self.tiles)

