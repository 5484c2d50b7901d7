"""Pixel scores of a stylised output against its photo, no network involved (1 for the photo
itself, about 0 for an unrelated image):

* structure: Pearson correlation of the Sobel edge magnitude of the luminance at half size, output
  vs photo, 4 px border cut (an unrelated photo scores about 0; the photo itself 1);
* face: the structure score inside a face's box (the edge maps of the whole images, cut to the
  box): a network can keep the outlines of a whole photo and still lose a face, which holds few of
  them;
* layout: how much of the photo's tonal layout the output carries, at what strength: the slope of
  the output's 8x8 px block luminances regressed on the photo's (``losses.tonal_layout``; 1 for
  the photo, 0.5 for the photo at half contrast, 0 for an unrelated image or one flat tone,
  negative for a tone-inverted one). It says whether the face stays lighter than the wall behind
  it, which structure alone misses: a network can keep every outline at half size and still paint
  a face and its background in one tone. A slope, not a correlation: a faint trace of the layout
  correlates as well as the layout itself;
* colour: whether each region keeps its own hue (the orange suit, the red parrot), in whatever
  palette: the share of the output's 8x8 px block hues (``losses.colour_layout``) that an affine
  map of the photo's block colours explains (R^2; 1 for the photo or the photo recoloured by one
  affine map, as a palette network's first step does; about 0 for hues unrelated to the photo's).
"""

from __future__ import annotations

import numpy as np
import torch

from stylebatch.models import losses


def _as_batch(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float in [0, 1]."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0


def edge_map(img: np.ndarray, border: int = 4) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance at half size, ``border`` px cut, flattened."""
    mag = losses.edge_magnitude(_as_batch(img))[0, 0]
    return mag[border:-border, border:-border].flatten()


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two flat maps (0 where one is flat): training's edge term's own."""
    return float(losses.correlation(a[None].double(), b[None].double())[0])


def structure_score(out: np.ndarray, photo: np.ndarray) -> float:
    """Pearson correlation of the two edge maps: 1 for the photo itself, about 0 for an unrelated image."""
    return _correlation(edge_map(out), edge_map(photo))


def face_score(out: np.ndarray, photo: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """The structure score inside ``box`` (fractions of width and height: left, top, right, bottom)."""
    a, b = (losses.edge_magnitude(_as_batch(img))[0, 0] for img in (out, photo))
    h, w = a.shape
    left, top, right, bottom = round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)
    return _correlation(a[top:bottom, left:right].flatten(), b[top:bottom, left:right].flatten())


def layout_score(out: np.ndarray, photo: np.ndarray) -> float:
    """Slope of the output's tonal layout on the photo's: cov / var (0 where the photo is flat)."""
    return float(losses.slope(losses.tonal_layout(_as_batch(out))[0].double(),
                              losses.tonal_layout(_as_batch(photo))[0].double()))


def colour_score(out: np.ndarray, photo: np.ndarray, block: int = 8) -> float:
    """R^2 of the output's block hues regressed (affine, least squares) on the photo's block RGB."""
    hues = losses.colour_layout(_as_batch(out), block).t().double()                   # blocks x 3
    colours = torch.nn.functional.avg_pool2d(_as_batch(photo), block).flatten(2)[0].t().double()
    design = torch.cat([colours, torch.ones(len(colours), 1, dtype=colours.dtype)], 1)
    residual = hues - design @ torch.linalg.lstsq(design, hues).solution
    total = float((hues - hues.mean(0)).square().sum())
    return 1.0 - float(residual.square().sum()) / total if total > 1e-12 else 0.0
