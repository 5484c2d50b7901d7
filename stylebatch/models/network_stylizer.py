"""Stylizing with trained style networks (``network.StyleNetwork``): the ``network`` model kind."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch

from stylebatch.models import runtime, tiling
from stylebatch.models.checkpoints import load_weights_bytes
from stylebatch.models.network import StyleNetwork
from stylebatch.models.network_file import network_from_record, read_network_file


class NetworkStylizer(runtime.FileModels):
    """Stylize with trained networks: a style names its network file (``style.network``, an opaque
    reference read with ``read_bytes``; a local path by default) and its name inside it
    (``style.network_style``). Each file is loaded once and kept (LRU of ``cache_size``: every
    preset has its own file, so a catalog run over all nine keeps all nine, ~7 MB each)."""

    def __init__(self, *, device: str = "auto", precision: str = "auto",
                 read_bytes: Optional[Callable[[str], bytes]] = None, cache_size: int = 16, max_batch: int = 8,
                 tiles: Optional[tiling.TilePlan] = None):
        # 480: the activation bytes a pixel (registry's MemoryNeed), for a GPU's tile size.
        super().__init__(device=device, precision=precision, read_bytes=read_bytes or read_network_file,
                         cache_size=cache_size, max_batch=max_batch, tiles=tiles, bytes_per_pixel=480)

    def network(self, ref: str) -> tuple[StyleNetwork, list[str]]:
        return self.cached(ref, self._load)

    def _load(self, ref: str) -> tuple[StyleNetwork, list[str]]:
        net, styles = network_from_record(load_weights_bytes(self.read_bytes(ref), ref), ref)
        # bf16 runs on bf16 weights (no autocast: its per-call weight casts cost a third of the
        # time on CPU); fp16 keeps fp32 weights under autocast, as fp16 instance-norm scales can
        # overflow.
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        # Channels-last, as training runs it: on CPU the convolutions otherwise reorder every input
        # and output (bf16: 1.6 s against 0.95 s for 4 images at 512 px on a 2-core Xeon).
        return net.to(self.device, dtype).to(memory_format=torch.channels_last), styles

    def style_index(self, style) -> tuple[StyleNetwork, int]:
        ref, name = getattr(style, "network", None), getattr(style, "network_style", None)
        if not ref:
            raise ValueError(f"style {getattr(style, 'name', style.key)!r} has no trained network")
        net, styles = self.network(ref)
        if name is None and len(styles) == 1:
            return net, 0
        if name not in styles:
            raise ValueError(f"network {ref} has no style {name!r}; it holds {', '.join(styles)}")
        return net, styles.index(name)

    @torch.inference_mode()
    def stylize(self, images: Sequence[np.ndarray], style, *, alpha: float = 1.0,
                preserve_color: bool = False) -> list[np.ndarray]:
        """Each HxWx3 uint8 image through the style's network. ``alpha`` blends the output with the
        photo in pixel space (1 = fully stylized, 0 = the photo); ``preserve_color`` keeps the
        photo's chrominance (applied before the blend)."""
        alpha = runtime.check_alpha(alpha)
        net, index = self.style_index(style)

        def run(x: torch.Tensor) -> torch.Tensor:
            with runtime.autocast(self.device, "fp32" if self.precision == "bf16" else self.precision):
                y = net(x.contiguous(memory_format=torch.channels_last),
                        torch.full((x.shape[0],), index, dtype=torch.long, device=self.device))
            y = y.float().clamp(0, 1)
            if preserve_color:
                y = runtime.keep_content_color(y, x)
            return alpha * y + (1.0 - alpha) * x if alpha < 1.0 else y

        return runtime.map_in_batches(images, self.device, self.max_batch, run, tiles=self.tiles)
