"""Small networks and images shared by the style-network tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stylebatch.models.network import NetworkConfig, StyleNetwork
from stylebatch.models.network_file import save_network
from stylebatch.training.recipe import TrainConfig

TINY = {"channels": 8, "residual_blocks": 1}
TINY_TRAIN = TrainConfig(steps=4, batch=2, crop=32, content_side=48, style_side=64, network=TINY)


def tiny_network_file(path: Path, styles_: tuple = ("a", "b"), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = StyleNetwork(len(styles_), NetworkConfig(**TINY))
    with torch.no_grad():
        # Untrained, the network is the identity (its last conv starts at zero) and every style has
        # scale 1 / shift 0: give it an output and each style its own parameters.
        torch.nn.init.normal_(net.out.weight, std=0.02)
        for name, p in net.named_parameters():
            if name.endswith((".scale", ".shift")):
                p.add_(torch.randn_like(p) * 0.3)
    save_network(net, list(styles_), str(path))
    return path


def stationary(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture with the same statistics everywhere: a frame-free model keeps it so."""
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def frame_gap(img: np.ndarray, band: int = 8) -> float:
    """The worst outer ``band``-px strip's mean colour against the interior's, in units of the spread
    of the interior strips' means. On a stationary input: the input ~1, zero padding in the AdaIN
    encoder 3.3-6.9 (a frame about one encoder cell wide), reflection 2-2.8."""
    a = img.astype(np.float64)
    inner = a[3 * band:-3 * band, 3 * band:-3 * band]
    strips = [inner[i:i + band].mean((0, 1)) for i in range(0, inner.shape[0] - band, band)] + \
             [inner[:, i:i + band].mean((0, 1)) for i in range(0, inner.shape[1] - band, band)]
    centre, spread = np.mean(strips, 0), np.std(strips, 0).mean() + 1e-6
    outer = [a[:band].mean((0, 1)), a[-band:].mean((0, 1)), a[:, :band].mean((0, 1)), a[:, -band:].mean((0, 1))]
    return float(max(np.abs(o - centre).mean() for o in outer) / spread)
