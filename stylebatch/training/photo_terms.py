"""The terms of a network's training loss that hold some of the photo in the output, beside the
content term. Each measures (output, photo, recoloured photo) -> a scalar, 0 when the output keeps
all of it, and is weighted by its ``TrainConfig`` field (0: off, not computed).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylebatch.models import runtime
from stylebatch.models.losses import colour_layout, correlation, edge_magnitude, slope, tonal_layout

_LAPLACE = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def coarse_structure(x: torch.Tensor, pool: int = 4) -> torch.Tensor:
    """The Laplacian of the luminance after ``pool``x``pool`` averaging (Li et al.'s Lapstyle): the
    photo's outlines at the scale of objects and faces. A target for it keeps them while leaving
    colour (luminance only) and texture finer than ``pool`` px (averaged away) to the style."""
    y = F.pad(F.avg_pool2d(runtime.luminance(x.float()), pool), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(y, y.new_tensor(_LAPLACE).view(1, 1, 3, 3))


def _structure(y: torch.Tensor, x: torch.Tensor, recoloured: torch.Tensor) -> torch.Tensor:
    """1 - cosine of the photo's and the output's coarse luminance Laplacians: outlines at object
    scale keep their place.

    A cosine: where the outlines are, not how strong (a style may raise or lower the contrast)."""
    return 1.0 - F.cosine_similarity(coarse_structure(y).flatten(1), coarse_structure(x).flatten(1),
                                     dim=1, eps=1e-6).mean()


def _edges(y: torch.Tensor, x: torch.Tensor, recoloured: torch.Tensor) -> torch.Tensor:
    """1 - correlation of the photo's and the output's half-size edge maps (the evaluation's
    structure measure).

    The coarse Laplacian (structure) asks for more of the photo's object-scale shading than Gatys
    keeps (docs/model-conclusions.md) while fine outlines and fur, which Gatys does keep, go."""
    return 1.0 - correlation(edge_magnitude(y).flatten(1), edge_magnitude(x).flatten(1)).mean()


def _layout(y: torch.Tensor, x: torch.Tensor, recoloured: torch.Tensor) -> torch.Tensor:
    """1 - correlation of the photo's and the output's 8x8-block luminance: a face stays lighter
    than the wall behind it.

    The outlines alone (structure) let a network paint a face and its background in one tone, and
    the face is gone."""
    return 1.0 - correlation(tonal_layout(y), tonal_layout(x)).mean()


def _contrast(y: torch.Tensor, x: torch.Tensor, recoloured: torch.Tensor) -> torch.Tensor:
    """How far the output's 8x8-block luminance falls short of the photo's contrast (only a
    shortfall counts).

    The layout term is a correlation, blind to contrast: with it alone the dark presets keep where
    the photo is light and dark at a third to a half of its contrast, and faces sink into the
    background, where Gatys@100 keeps about all of it (docs/model-conclusions.md). Against the photo, not the
    recoloured photo: the recolouring alone already halves it on dark palettes. Only a shortfall
    counts, so the style may add contrast."""
    return F.relu(1.0 - slope(tonal_layout(y), tonal_layout(x))).mean()


def _colour_layout(y: torch.Tensor, x: torch.Tensor, recoloured: torch.Tensor) -> torch.Tensor:
    """1 - correlation of the recoloured photo's and the output's 8x8-block hues: each object keeps
    its own colour in the style's palette.

    Without it a palette network paints every region in the palette's full range of colours, and
    the parrots and the orange suit are gone where Gatys keeps them."""
    return 1.0 - correlation(colour_layout(y), colour_layout(recoloured)).mean()


@dataclass(frozen=True)
class PhotoTerm:
    name: str      # its key in the loss parts, the training history and the progress line
    weight: str    # the TrainConfig field that weighs it
    measure: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # its docstring's first
    # paragraph says what it measures: the weight's description in a recipe


PHOTO_TERMS = (
    PhotoTerm("structure", "structure_weight", _structure),
    PhotoTerm("edges", "edge_weight", _edges),
    PhotoTerm("layout", "layout_weight", _layout),
    PhotoTerm("contrast", "contrast_weight", _contrast),
    PhotoTerm("colour_layout", "colour_layout_weight", _colour_layout),
)


def weight_help(weight: str) -> str:
    """What the photo term that ``weight`` (a TrainConfig field) weighs measures: the first paragraph
    of its docstring."""
    measure = next(t.measure for t in PHOTO_TERMS if t.weight == weight)
    text = " ".join(inspect.cleandoc(measure.__doc__).split("\n\n")[0].split()).rstrip(".")
    return text[0].lower() + text[1:]
