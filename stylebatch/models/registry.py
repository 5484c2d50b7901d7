"""Model kinds: one table from a kind's name to the stylizer that implements it.

Every stylizer has one calling convention (``Stylizer``): HxWx3 uint8 images and a style in, images
of the same sizes out. The pipeline's actor, the one-image command and the evaluation all build
their model through ``build`` and pick it through ``kind_for``, so none of them branches on which
model runs. Adding a model kind is one module plus one ``ModelKind`` entry in ``MODEL_KINDS``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np


class StyleLike(Protocol):
    """What models need of a style: a cache key, RGB uint8 images and their blend weights, and
    optionally a trained network (an opaque file reference plus the style's name inside it) and
    the kind of network in that file (``model``: None for the project's own format)."""

    key: str
    images: Sequence[np.ndarray]
    weights: Sequence[float]
    network: Optional[str]
    network_style: Optional[str]
    model: Optional[str]


class Stylizer(Protocol):
    def stylize(self, images: Sequence[np.ndarray], style: StyleLike, *, alpha: float = 1.0,
                preserve_color: bool = False) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ModelOptions:
    """Everything a model kind may need to be built; each kind takes what it uses."""

    device: str = "auto"
    precision: str = "auto"
    encoder_weights: Optional[str] = None    # AdaIN: pytorch-AdaIN vgg_normalised.pth
    decoder_weights: Optional[str] = None    # AdaIN: our decoder or pytorch-AdaIN decoder.pth
    premium_iterations: int = 100
    max_batch: int = 8
    # How a network file named by a style is read (storage.read_bytes in the pipeline): the models
    # never see URIs, only bytes.
    read_bytes: Optional[Callable[[str], bytes]] = None


@dataclass(frozen=True)
class MemoryNeed:
    """Peak memory of a process running one picture of ``pixels``: ``base`` (the process with its model
    loaded), ``per_active_pixel`` for the activations of what runs at once (the whole picture, or,
    where the kind tiles, at most one tile with its halo: ``active_limit`` pixels) and ``per_pixel``
    for the picture's own buffers (its uint8 and float copies, the tiled output's sums). Measured
    on CPU with ``python -m tools.benchmark_sizes``; bytes."""

    base: int
    per_active_pixel: int
    per_pixel: int = 64
    active_limit: Optional[int] = 1216 * 1216  # the default tile (1024) with its halo (96)

    def bytes_for(self, pixels: int) -> int:
        active = pixels if self.active_limit is None else min(pixels, self.active_limit)
        return self.base + self.per_active_pixel * active + self.per_pixel * pixels

    def largest_pixels(self, budget: int) -> int:
        """The largest picture whose need fits ``budget`` bytes (0 if none does)."""
        if budget <= self.base:
            return 0
        if self.active_limit is not None and self.bytes_for(self.active_limit) <= budget:
            return int(self.active_limit + (budget - self.bytes_for(self.active_limit)) // self.per_pixel)
        return int((budget - self.base) // (self.per_active_pixel + self.per_pixel))


_MB = 1 << 20


@dataclass(frozen=True)
class ModelKind:
    name: str
    quality: str                                     # the --quality it serves
    serves: Callable[[StyleLike], bool]              # can it run this style?
    build: Callable[[ModelOptions], Stylizer]
    # Weights files it would load, checked on the driver before any work (raises WeightsError/ValueError).
    check: Callable[[ModelOptions], None]
    # The file a style names, checked on the driver before any work (None: the kind reads no such file).
    check_style: Optional[Callable[[Stylizer, StyleLike], None]] = None
    memory: MemoryNeed = MemoryNeed(base=800 * _MB, per_active_pixel=800)


def _build_adain(opts: ModelOptions) -> Stylizer:
    from stylebatch.models.adain import AdaINStylizer

    return AdaINStylizer(encoder_weights=opts.encoder_weights, decoder_weights=opts.decoder_weights,
                         device=opts.device, precision=opts.precision, max_batch=opts.max_batch)


def _check_adain(opts: ModelOptions) -> None:
    from stylebatch.models.adain import check_adain_weights

    check_adain_weights(opts.encoder_weights, opts.decoder_weights)


def _build_network(opts: ModelOptions) -> Stylizer:
    from stylebatch.models.network_stylizer import NetworkStylizer

    return NetworkStylizer(device=opts.device, precision=opts.precision, read_bytes=opts.read_bytes,
                           max_batch=opts.max_batch)


def _build_gatys(opts: ModelOptions) -> Stylizer:
    from stylebatch.models.gatys import GatysStylizer

    # Its defaults are premium's start and scales (the gatys module's docstring says why).
    return GatysStylizer(device=opts.device, precision=opts.precision, iterations=opts.premium_iterations)


def _build_fast_neural_style(opts: ModelOptions) -> Stylizer:
    from stylebatch.models.fast_neural_style import FastNeuralStyleStylizer

    return FastNeuralStyleStylizer(device=opts.device, precision=opts.precision, read_bytes=opts.read_bytes,
                                   max_batch=opts.max_batch)


def _build_cyclegan(opts: ModelOptions) -> Stylizer:
    from stylebatch.models.cyclegan import CycleGANStylizer

    return CycleGANStylizer(device=opts.device, precision=opts.precision, read_bytes=opts.read_bytes,
                            max_batch=opts.max_batch)


def _model(style: StyleLike) -> Optional[str]:
    return getattr(style, "model", None)


def _has_network(style: StyleLike) -> bool:
    return bool(getattr(style, "network", None)) and _model(style) is None


def _has_images(style: StyleLike) -> bool:
    return len(style.images) > 0


def _check_network_style(stylizer, style: StyleLike) -> None:
    stylizer.style_index(style)


def _check_published_style(stylizer, style: StyleLike) -> None:
    stylizer.check_style(style)


def _no_check(opts: ModelOptions) -> None:
    return None


# Order matters within a quality: the first kind that serves a style runs it.
MODEL_KINDS: tuple[ModelKind, ...] = (
    ModelKind("network", "fast", _has_network, _build_network, _no_check, _check_network_style,
              MemoryNeed(base=640 * _MB, per_active_pixel=480)),
    ModelKind("fast-neural-style", "fast", lambda style: _model(style) == "fast-neural-style",
              _build_fast_neural_style, _no_check, _check_published_style,
              MemoryNeed(base=720 * _MB, per_active_pixel=400)),
    ModelKind("cyclegan", "fast", lambda style: _model(style) == "cyclegan", _build_cyclegan, _no_check,
              _check_published_style, MemoryNeed(base=760 * _MB, per_active_pixel=400)),
    ModelKind("adain", "fast", _has_images, _build_adain, _check_adain,
              memory=MemoryNeed(base=820 * _MB, per_active_pixel=820)),
    # Gatys optimises the whole picture at once: its activations and their gradients grow with it.
    ModelKind("gatys", "premium", _has_images, _build_gatys, _check_adain,
              memory=MemoryNeed(base=1040 * _MB, per_active_pixel=2200, active_limit=None)),
)
KINDS = {k.name: k for k in MODEL_KINDS}
QUALITIES: tuple[str, ...] = tuple(dict.fromkeys(k.quality for k in MODEL_KINDS))
# The kinds a style catalog entry may name with ``model:`` (a published checkpoint in ``weights:``).
PUBLISHED_KINDS: tuple[str, ...] = ("fast-neural-style", "cyclegan")


def kind_for(quality: str, style: StyleLike) -> ModelKind:
    """The model kind that runs ``style`` at ``quality``: a trained network when the style has one
    (presets, catalog entries with ``network:``), the published checkpoint a catalog entry names
    with ``model:``, AdaIN for any other image; Gatys for premium."""
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; expected one of {', '.join(QUALITIES)}")
    for kind in MODEL_KINDS:
        if kind.quality == quality and kind.serves(style):
            return kind
    raise ValueError(f"style {getattr(style, 'name', style.key)!r} cannot run at quality {quality!r}: "
                     f"it is a {_model(style)} checkpoint with no style image")


def build(kind: str, options: ModelOptions = ModelOptions()) -> Stylizer:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    return KINDS[kind].build(options)


def check_styles(options: ModelOptions, styles: Sequence[StyleLike], kinds: Sequence[str]) -> None:
    """Read and check, on the driver, the file each style names for the kind that runs it (one of
    ``kinds``): a missing, corrupt, unsafe or mismatched file is refused before any work."""
    checkers: dict[str, Stylizer] = {}
    for style in styles:
        if not getattr(style, "network", None):
            continue
        kind = kind_for("fast", style)
        if kind.name in kinds and kind.check_style is not None:
            if kind.name not in checkers:
                checkers[kind.name] = kind.build(options)
            kind.check_style(checkers[kind.name], style)


def check(options: ModelOptions, kinds: Sequence[str] = ()) -> None:
    """Each kind's weights check; weights files named in ``options`` are checked whether or not a
    row will use them (a mistyped path is refused, not silently ignored)."""
    named = ["adain"] if options.encoder_weights or options.decoder_weights else []
    for kind in dict.fromkeys([*kinds, *named]):
        KINDS[kind].check(options)
