"""Style presets, style catalogs and style resolution.

A style is one or more reference images (with blend weights) plus transfer
settings.  Built-in presets are *generated* by the code below (numpy + Pillow,
fixed seeds) so the project ships no third-party artwork and needs no download.
They are designed for AdaIN, which only transfers the mean/std of VGG feature
maps: each preset therefore carries a distinct palette *and* distinct texture
at several scales (flat colour fields would transfer almost nothing).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw

from . import images as _images
from . import storage as _storage
from .models.registry import QUALITIES

PRESET_SIZE = 512
# Style statistics are scale-sensitive but saturate quickly: VGG means/stds of a
# 1024 px reference are practically those of a larger one, and smaller inputs
# keep the per-actor style encoding cheap.
MAX_STYLE_SIZE = 1024
# A style reference is a single image; anything bigger than this is a mistake
# (or an attack) rather than a style.
MAX_STYLE_BYTES = 64 * 1024 * 1024
_STYLE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class StyleError(ValueError):
    """A style name, catalog entry or style image cannot be used."""


@dataclass(frozen=True, eq=False)
class ResolvedStyle:
    """Everything a model needs to apply one style.

    ``images`` are read-only HxWx3 uint8 RGB arrays: ``key`` hashes their pixels,
    so mutating them would silently invalidate cached style statistics.
    """

    name: str
    key: str
    images: tuple[np.ndarray, ...]
    weights: tuple[float, ...]
    alpha: float = 1.0
    preserve_color: bool = False
    quality: str = "fast"
    network: str | None = None         # a trained network file (path or URI) for this style, if any
    network_style: str | None = None   # the style's name inside that file (None: its only style)

    def __post_init__(self) -> None:
        if not self.images:
            raise StyleError(f"style {self.name!r}: no style images")
        if len(self.images) != len(self.weights):
            raise StyleError(f"style {self.name!r}: {len(self.images)} images but {len(self.weights)} weights")
        if self.quality not in QUALITIES:
            raise StyleError(f"style {self.name!r}: unknown quality {self.quality!r} (expected one of {', '.join(QUALITIES)})")
        if not 0.0 <= self.alpha <= 1.0:
            raise StyleError(f"style {self.name!r}: alpha must be within [0, 1], got {self.alpha!r}")

    # Arrays make generated __eq__/__hash__ unusable; ``key`` already stands
    # for the pixels and weights.
    def _identity(self) -> tuple:
        return (self.name, self.key, self.weights, self.alpha, self.preserve_color, self.quality, self.network,
                self.network_style)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResolvedStyle):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


# --------------------------------------------------------------------------
# procedural helpers (float32 images in [0, 1])
# --------------------------------------------------------------------------


def _rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32) / 255.0


def _box1d(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    # Moving average via cumulative sums: O(n) whatever the radius.
    if r <= 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return ((hi - lo) / (2 * r + 1)).astype(np.float32)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-like blur (three box passes) of a 2-D or HxWxC float array.

    Pillow's GaussianBlur only handles 8-bit images and scipy is not a runtime
    dependency, hence this small separable implementation.
    """
    r = int(round((math.sqrt(4.0 * sigma * sigma + 1.0) - 1.0) / 2.0))
    out = a.astype(np.float32)
    for _ in range(3):
        out = _box1d(_box1d(out, r, 0), r, 1)
    return out


def _noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 1) -> np.ndarray:
    """Smooth fractal value noise in [0, 1] (bicubic-upsampled random grids)."""
    acc = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * (2**o)
        grid = rng.random((n + 1, n + 1)).astype(np.float32)
        acc += amp * np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32)
        total += amp
        amp *= 0.5
    acc -= acc.min()
    return acc / max(float(acc.max()), 1e-6)


def _layer(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (size, size), (0, 0, 0))
    return img, ImageDraw.Draw(img)


def _mask_layer(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (size, size), 0)
    return img, ImageDraw.Draw(img)


def _f(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _over(base: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None] if alpha.ndim == 2 else alpha
    return base * (1.0 - a) + colour * a


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _jitter_voronoi(rng: np.random.Generator, size: int, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voronoi diagram of one jittered point per grid cell.

    Returns (cell id, distance to nearest, distance to second nearest).  With
    one point per cell the two nearest points always lie in the surrounding
    5x5 cells, so this is exact and linear in pixels (no scipy needed).
    """
    n = size // cell + 1
    pts = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1) + rng.random((n, n, 2))) * cell
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = (yy // cell).astype(int), (xx // cell).astype(int)
    best = np.full((size, size), np.inf, np.float32)
    second = np.full((size, size), np.inf, np.float32)
    ids = np.zeros((size, size), np.int64)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            gy, gx = cy + dy, cx + dx
            valid = (gy >= 0) & (gy < n) & (gx >= 0) & (gx < n)
            gyc, gxc = np.clip(gy, 0, n - 1), np.clip(gx, 0, n - 1)
            p = pts[gyc, gxc]
            d = np.hypot(p[..., 0] - yy, p[..., 1] - xx).astype(np.float32)
            d[~valid] = np.inf
            closer = d < best
            second = np.where(closer, best, np.minimum(second, d))
            ids = np.where(closer, gyc * n + gxc, ids)
            best = np.where(closer, d, best)
    return ids, best, second


def _perspective_grid(draw: ImageDraw.ImageDraw, size: int, horizon: int, colour: tuple, width: int, rows: int, cols: int) -> None:
    vx = size // 2
    for i in range(1, rows + 1):
        # Geometric spacing mimics perspective foreshortening toward the horizon.
        y = horizon + (size - horizon) * (i / rows) ** 2.2
        draw.line([(0, y), (size, y)], fill=colour, width=width)
    for j in range(-cols, cols + 1):
        draw.line([(vx, horizon), (vx + j * size / cols * 1.6, size)], fill=colour, width=width)


# --------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------


def _cyberpunk(size: int) -> np.ndarray:
    rng = np.random.default_rng(2077)
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = _rgb("#07021a") * (1 - yy) + _rgb("#120a3a") * yy + np.zeros((size, size, 3), np.float32)
    haze = _noise(rng, size, 4, 3)[..., None]
    img += haze * _rgb("#2a0a4a") * 0.6
    horizon = int(size * 0.62)

    # Skyline: dark towers with lit windows give small-scale texture.
    city, cd = _layer(size)
    win, wd = _layer(size)
    x = -10
    while x < size:
        w = int(rng.integers(24, 70))
        top = int(rng.integers(int(size * 0.12), horizon - 40))
        cd.rectangle([x, top, x + w, horizon], fill=(5, 4, 14))
        palette = [(0, 230, 255), (255, 40, 200), (255, 170, 60), (90, 120, 255)]
        for wy in range(top + 6, horizon - 4, 7):
            for wx in range(x + 4, x + w - 4, 6):
                if rng.random() < 0.35:
                    c = palette[int(rng.integers(len(palette)))]
                    k = float(rng.uniform(0.3, 1.0))
                    wd.rectangle([wx, wy, wx + 2, wy + 3], fill=tuple(int(v * k) for v in c))
        x += w + int(rng.integers(2, 10))
    cmask = (np.asarray(city)[..., 2] > 0).astype(np.float32)
    img = _over(img, _rgb("#05040e"), cmask)
    img += _f(win) * 0.9

    # Neon: crisp lines plus two blurred copies give the glow halo.
    neon, nd = _layer(size)
    neons = [(255, 0, 200), (0, 255, 255), (40, 90, 255), (255, 60, 140)]
    for _ in range(22):
        c = neons[int(rng.integers(len(neons)))]
        x0, y0 = int(rng.integers(0, size)), int(rng.integers(30, horizon))
        kind = rng.random()
        if kind < 0.35:
            nd.line([(x0, y0), (x0, y0 + int(rng.integers(30, 140)))], fill=c, width=3)
        elif kind < 0.65:
            w, h = int(rng.integers(20, 90)), int(rng.integers(10, 40))
            nd.rectangle([x0, y0, x0 + w, y0 + h], outline=c, width=2)
        elif kind < 0.85:
            nd.line([(x0, y0), (x0 + int(rng.integers(-120, 120)), y0 + int(rng.integers(-30, 30)))], fill=c, width=2)
        else:
            r = int(rng.integers(8, 30))
            nd.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], outline=c, width=3)
    nd.line([(0, horizon), (size, horizon)], fill=(0, 240, 255), width=3)
    n = _f(neon)
    img += n + _blur(n, 3) * 1.4 + _blur(n, 10) * 1.2
    # The floor grid glows less than the signs so the floor stays dark.
    grid, gd = _layer(size)
    _perspective_grid(gd, size, horizon, (220, 0, 200), 2, 10, 8)
    g = _f(grid)
    img += g * 0.9 + _blur(g, 2) * 0.5 + _blur(g, 8) * 0.25

    # Light streaks (traffic trails) and rain: long horizontal + fine diagonal texture.
    streak, sd = _layer(size)
    for _ in range(26):
        y = int(rng.integers(horizon + 6, size))
        x0 = int(rng.integers(-100, size))
        c = neons[int(rng.integers(len(neons)))]
        sd.line([(x0, y), (x0 + int(rng.integers(80, 320)), y + int(rng.integers(-3, 4)))], fill=c, width=int(rng.integers(1, 3)))
    for _ in range(420):
        x0, y0 = int(rng.integers(0, size)), int(rng.integers(0, size))
        sd.line([(x0, y0), (x0 - 4, y0 + 16)], fill=(60, 110, 160), width=1)
    s = _f(streak)
    img += s * 0.8 + _blur(s, 4) * 0.9
    img += (rng.random((size, size, 1)).astype(np.float32) - 0.5) * 0.05
    return _to_uint8(img)


def _ukiyo(size: int) -> np.ndarray:
    rng = np.random.default_rng(1831)
    cream = _rgb("#efe3c2")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    paper = _noise(rng, size, 32, 2)
    img = np.broadcast_to(cream, (size, size, 3)).copy()
    img *= (0.93 + 0.07 * paper)[..., None]
    # Sky: faint beige cloud bands and a pale vermilion sun.
    bands = (np.sin(yy / 9.0 + 2.0 * _noise(rng, size, 3)) > 0.6) & (yy < size * 0.35)
    img = _over(img, _rgb("#d9c49a"), bands.astype(np.float32) * 0.7)
    sun = np.hypot(xx - size * 0.78, yy - size * 0.16) < size * 0.08
    img = _over(img, _rgb("#d4563a"), sun.astype(np.float32) * 0.85)

    # Waves: a warped vertical coordinate split into bands of indigo shades.
    warp = (
        18 * np.sin(xx / 37.0 + 1.3)
        + 9 * np.sin(xx / 13.0 + yy / 40.0)
        + 30 * (_noise(rng, size, 3) - 0.5)
    )
    v = yy + warp
    start = size * 0.32
    band_h = 34.0
    band = np.floor((v - start) / band_h)
    inband = (v - start) - band * band_h
    indigo = np.stack([_rgb("#13204d"), _rgb("#27407f"), _rgb("#4f73ad"), _rgb("#1c2f66"), _rgb("#8aa6cc")])
    sea = v > start
    colour = indigo[np.mod(band, len(indigo)).astype(int)]
    # Fine engraved lines running along each band (woodblock line work).
    lines = (np.mod(inband, 7.0) < 1.4) & (inband > 8)
    colour = np.where(lines[..., None], colour * 0.55 + cream * 0.25, colour)
    # Cream crest at the top of each band, scalloped like stylised foam.
    crest = inband < (5.0 + 4.0 * np.abs(np.sin(xx / 11.0 + band * 1.7)))
    colour = np.where(crest[..., None], cream, colour)
    img = np.where(sea[..., None], colour, img)

    # Foam curls: white claw-like arcs with indigo outlines along wave crests.
    foam, fd = _layer(size)
    for _ in range(150):
        x0 = float(rng.uniform(0, size))
        b = int(rng.integers(0, 6))
        y0 = start + b * band_h - float(warp[min(int(start + b * band_h), size - 1), min(int(x0), size - 1)])
        r = float(rng.uniform(4, 13))
        a0 = float(rng.uniform(120, 240))
        fd.arc([x0 - r, y0 - r, x0 + r, y0 + r], a0, a0 + 250, fill=(255, 255, 255), width=3)
        fd.arc([x0 - r - 2, y0 - r - 2, x0 + r + 2, y0 + r + 2], a0, a0 + 250, fill=(1, 1, 1), width=1)
    for _ in range(700):
        x0, y0 = float(rng.uniform(0, size)), float(rng.uniform(start - 30, size))
        r = float(rng.uniform(0.8, 2.6))
        fd.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=(255, 255, 255))
    f = np.asarray(foam)
    img = _over(img, _rgb("#fbf6e8"), (f[..., 0] == 255).astype(np.float32))
    img = _over(img, _rgb("#0e1738"), (f[..., 0] == 1).astype(np.float32))
    img *= (0.95 + 0.05 * _noise(rng, size, 64))[..., None]
    return _to_uint8(img)


def _impressionist(size: int) -> np.ndarray:
    rng = np.random.default_rng(1872)
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32) / size
    # Underpainting: sky, sunlit meadow, shaded foreground, blended by noise.
    n1 = _noise(rng, size, 4, 2)
    sky, field, shade = _rgb("#9cc3e0"), _rgb("#d8d46a"), _rgb("#6f9e58")
    t = np.clip((yy - 0.38 + 0.15 * (n1 - 0.5)) * 6, 0, 1)[..., None]
    u = np.clip((yy - 0.72 + 0.2 * (n1 - 0.5)) * 5, 0, 1)[..., None]
    base = sky * (1 - t) + field * t
    base = base * (1 - u) + shade * u
    canvas = Image.fromarray(_to_uint8(base))
    draw = ImageDraw.Draw(canvas)
    palette = np.stack([_rgb(c) for c in ("#f3e27a", "#e9b96e", "#b7d77a", "#7fb069", "#9dc8e8", "#6a9fd4", "#f1d6a8", "#c9e3a0", "#f6f0c8", "#e58f6b")])
    angle = _noise(rng, size, 3) * math.pi * 2.0
    base_u8 = np.asarray(canvas).astype(np.float32) / 255.0
    # Three passes from big to small dabs: texture at several scales.
    for count, length, width in ((1400, (14, 26), (8, 12)), (2600, (9, 16), (5, 8)), (3200, (5, 9), (3, 5))):
        xs = rng.integers(0, size, count)
        ys = rng.integers(0, size, count)
        for x0, y0 in zip(xs, ys):
            under = base_u8[y0, x0]
            c = 0.55 * under + 0.45 * palette[int(rng.integers(len(palette)))]
            c = np.clip(c * rng.uniform(0.85, 1.12), 0, 1)
            a = float(angle[y0, x0]) + float(rng.normal(0, 0.35))
            ln = float(rng.uniform(*length))
            dx, dy = math.cos(a) * ln / 2, math.sin(a) * ln / 2
            w = int(rng.integers(*width))
            col = tuple(int(v * 255) for v in c)
            draw.line([(x0 - dx, y0 - dy), (x0 + dx, y0 + dy)], fill=col, width=w)
            if rng.random() < 0.3:
                # Impasto highlight: a thin lighter ridge along the dab.
                hi = tuple(int(min(255, v * 255 * 1.18 + 20)) for v in c)
                draw.line([(x0 - dx * 0.8, y0 - dy * 0.8 - 1), (x0 + dx * 0.8, y0 + dy * 0.8 - 1)], fill=hi, width=1)
    img = np.asarray(canvas).astype(np.float32) / 255.0
    grey = img.mean(-1, keepdims=True)
    img = grey + (img - grey) * 1.35  # mixing dabs with the underpainting dulls them
    img *= (0.96 + 0.08 * rng.random((size, size, 1)).astype(np.float32))  # canvas weave
    return _to_uint8(img)


def _mosaic(size: int) -> np.ndarray:
    rng = np.random.default_rng(79)
    ids, d1, d2 = _jitter_voronoi(rng, size, 18)
    palette = np.stack([_rgb(c) for c in ("#e63b2e", "#f28c1e", "#f7d21c", "#2fae4f", "#14a3a3", "#2257c4", "#7b3fb5", "#f2f0e6")])
    # Tile colours follow a large concentric/swirl motif so the mosaic has
    # structure beyond the tile scale, with per-tile randomness on top.
    nid = int(ids.max()) + 1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx = cy = size / 2
    ang = np.arctan2(yy - cy, xx - cx)
    rad = np.hypot(yy - cy, xx - cx)
    motif = np.floor(rad / 38.0 + 1.5 * np.sin(ang * 3.0)).astype(int)
    flat_ids = ids.ravel()
    # The motif sampled at each tile's first pixel decides the tile's colour.
    first = np.zeros(nid, np.int64)
    first[flat_ids[::-1]] = np.arange(flat_ids.size)[::-1]
    tile_motif = motif.ravel()[first]
    pick = np.where(rng.random(nid) < 0.2, rng.integers(0, len(palette), nid), np.mod(tile_motif, len(palette)))
    shade = rng.uniform(0.8, 1.1, nid).astype(np.float32)
    img = palette[pick[ids]] * shade[ids][..., None]
    # Slight dome shading per tile + fine stone grain.
    img *= (1.05 - 0.012 * np.minimum(d1, 14.0))[..., None]
    img *= (0.92 + 0.16 * rng.random((size, size, 1))).astype(np.float32)
    grout = np.clip((2.2 - (d2 - d1)) / 1.2, 0, 1)
    grout_col = _rgb("#2b2622") * (0.8 + 0.4 * rng.random((size, size, 1)).astype(np.float32))
    img = _over(img, grout_col, grout)
    return _to_uint8(img)


def _dry_brush(draw: ImageDraw.ImageDraw, rng: np.random.Generator, pts: list, width: float, profile: Callable[[float], float], tone: int, dry: float) -> None:
    """Stamp a brush along ``pts``: ``nb`` bristles side by side, each running
    dry at a random point in the last ``dry`` fraction of the stroke, which
    leaves the streaky 'flying white' texture of ink brushes."""
    nb = 14
    ends = rng.uniform(1.0 - dry, 1.0, nb)
    offs = np.linspace(-0.5, 0.5, nb) + rng.normal(0, 0.015, nb)
    n = len(pts)
    for i in range(n - 1):
        t = i / max(1, n - 2)
        w = width * max(0.05, profile(t))
        (x0, y0), (x1, y1) = pts[i], pts[i + 1]
        a = math.atan2(y1 - y0, x1 - x0)
        nx, ny = -math.sin(a), math.cos(a)
        r = max(0.7, 0.9 * w / nb)
        for b in range(nb):
            if t > ends[b]:
                continue
            px, py = x0 + nx * offs[b] * w, y0 + ny * offs[b] * w
            draw.ellipse([px - r, py - r, px + r, py + r], fill=tone)


def _ink(size: int) -> np.ndarray:
    rng = np.random.default_rng(1420)
    paper = np.broadcast_to(_rgb("#f1ebda"), (size, size, 3)).copy()
    paper *= (0.94 + 0.06 * _noise(rng, size, 6, 3))[..., None]
    fib, fd = _mask_layer(size)
    for _ in range(900):
        x0, y0 = float(rng.uniform(0, size)), float(rng.uniform(0, size))
        a, ln = float(rng.uniform(0, math.pi)), float(rng.uniform(4, 18))
        fd.line([(x0, y0), (x0 + math.cos(a) * ln, y0 + math.sin(a) * ln)], fill=int(rng.integers(30, 90)), width=1)
    paper = _over(paper, _rgb("#cfc3a6"), _f(fib) * 0.8)
    img = paper
    xs = np.arange(size, dtype=np.float32)
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32)

    # Ink-wash mountain ridges: soft-edged grey layers, paler toward the back.
    for k, (level, tone) in enumerate(((0.35, 0.25), (0.5, 0.45), (0.66, 0.7))):
        ridge = size * level + 60 * (_noise(rng, size, 5)[0] - 0.5) * (1 + k) + 25 * np.sin(xs / (40 + 20 * k) + k)
        mask = (yy > ridge[None, :]).astype(np.float32)
        fade = np.clip(1.0 - (yy - ridge[None, :]) / (size * 0.35), 0.15, 1.0)
        wash = _blur(mask * fade, 3 + 2 * k) * (0.75 + 0.25 * _noise(rng, size, 24, 2))
        img = _over(img, _rgb("#1a1a1c"), wash * tone)

    # Sumi-e subject: bamboo stalks, tapered leaves and an enso circle, each a
    # dry-brush stroke whose bristles run out of ink at different points.
    strokes, sd = _mask_layer(size)
    for k in range(3):
        x0 = float(rng.uniform(40, size - 40))
        bend = float(rng.normal(0, 0.0004))
        w = float(rng.uniform(12, 20))
        tone = int(rng.integers(150, 256))
        y = size + 10.0
        while y > -20:
            seg = float(rng.uniform(50, 90))
            pts = [(x0 + bend * (size - yy_) ** 2, yy_) for yy_ in np.arange(y, y - seg, -2.0)]
            _dry_brush(sd, rng, pts, w, lambda t: 0.85 + 0.25 * abs(2 * t - 1) ** 4, tone, dry=0.35)
            nx, ny = pts[-1]
            sd.line([(nx - w * 0.7, ny - 3), (nx + w * 0.7, ny - 1)], fill=tone, width=3)
            if rng.random() < 0.6:
                for _ in range(int(rng.integers(2, 5))):
                    a = float(rng.uniform(-math.pi, 0))
                    ln = float(rng.uniform(50, 110))
                    curve = float(rng.normal(0, 0.01))
                    lp, px, py = [], nx, ny
                    for _s in range(int(ln / 2)):
                        a += curve
                        px, py = px + 2 * math.cos(a), py + 2 * math.sin(a)
                        lp.append((px, py))
                    _dry_brush(sd, rng, lp, float(rng.uniform(9, 16)), lambda t: math.sin(math.pi * min(1.0, 0.15 + t)) ** 0.7, int(rng.integers(200, 256)), dry=0.25)
            y -= seg + 5
    cx, cy, r = size * 0.7, size * 0.28, size * 0.17
    a0 = float(rng.uniform(0, 2 * math.pi))
    enso = [(cx + r * math.cos(a0 + t), cy + r * math.sin(a0 + t)) for t in np.arange(0, 5.8, 2.0 / r)]
    _dry_brush(sd, rng, enso, 24, lambda t: min(1.0, t * 8) * (1 - 0.45 * t), 245, dry=0.6)
    for _ in range(40):
        x0, y0 = float(rng.uniform(0, size)), float(rng.uniform(0, size))
        r = float(rng.exponential(1.0)) + 0.4
        sd.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=230)
    st = _f(strokes)
    img = _over(img, _rgb("#0c0c0e"), np.clip(st * 0.92 + _blur(st, 2.5) * 0.35, 0, 1))
    return _to_uint8(img)


def _halftone(size: int, spacing: float, radius: np.ndarray, angle_deg: float = 45.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = math.radians(angle_deg)
    u = (xx * math.cos(a) + yy * math.sin(a)) / spacing
    v = (-xx * math.sin(a) + yy * math.cos(a)) / spacing
    du = (u - np.round(u)) * spacing
    dv = (v - np.round(v)) * spacing
    d = np.hypot(du, dv)
    return np.clip(radius - d + 0.5, 0, 1)  # antialiased dot coverage


def _pop(size: int) -> np.ndarray:
    rng = np.random.default_rng(1963)
    red, yellow, blue = _rgb("#e3202b"), _rgb("#ffd600"), _rgb("#1f57c3")
    white, black = _rgb("#fbfaf4"), _rgb("#111111")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.broadcast_to(white, (size, size, 3)).copy()
    half = size // 2
    # Four comic panels, each with its own Ben-Day dot treatment.
    q = [(yy < half) & (xx < half), (yy < half) & (xx >= half), (yy >= half) & (xx < half), (yy >= half) & (xx >= half)]
    grad = np.clip(xx / size, 0, 1)
    img = _over(img, red, _halftone(size, 9, 2.6 + 1.6 * grad) * q[0])
    img = np.where(q[1][..., None], yellow, img)
    img = _over(img, blue, _halftone(size, 7, 2.2 + 0 * grad) * q[1])
    img = np.where(q[2][..., None], blue * 0.35 + white * 0.65, img)
    img = _over(img, blue, _halftone(size, 11, 1.5 + 3.0 * (yy / size)) * q[2])
    stripes = (np.mod(xx + yy, 28) < 14) & q[3]
    img = np.where(stripes[..., None], red, img)
    img = _over(img, white, _halftone(size, 8, 2.0 + 0 * grad) * q[3] * stripes)

    # Flat shapes with thick black outlines: starburst, speech bubble, discs.
    shapes = Image.fromarray(_to_uint8(img))
    d = ImageDraw.Draw(shapes)
    cx, cy = half * 0.5, half * 0.55
    pts = []
    for i in range(28):
        r = (105 if i % 2 == 0 else 55) + float(rng.uniform(-10, 10))
        a = i * math.pi * 2 / 28
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    d.polygon(pts, fill=(255, 214, 0), outline=(17, 17, 17), width=7)
    d.ellipse([cx - 38, cy - 38, cx + 38, cy + 38], fill=(227, 32, 43), outline=(17, 17, 17), width=6)
    d.ellipse([size * 0.57, size * 0.56, size * 0.95, size * 0.82], fill=(251, 250, 244), outline=(17, 17, 17), width=7)
    d.polygon([(size * 0.64, size * 0.78), (size * 0.6, size * 0.93), (size * 0.72, size * 0.8)], fill=(251, 250, 244), outline=(17, 17, 17))
    d.line([(size * 0.64, size * 0.79), (size * 0.6, size * 0.93), (size * 0.72, size * 0.81)], fill=(17, 17, 17), width=7)
    for i in range(4):  # lettering rows in the bubble
        y0 = size * (0.63 + 0.042 * i)
        x0 = size * (0.64 + 0.02 * (i % 2))
        while x0 < size * (0.86 - 0.03 * abs(i - 1.5)):
            w = float(rng.uniform(8, 26))
            d.line([(x0, y0), (x0 + w, y0)], fill=(17, 17, 17), width=6)
            x0 += w + 7
    for _ in range(6):
        r = float(rng.uniform(18, 40))
        x0, y0 = float(rng.uniform(half + 30, size - 30)), float(rng.uniform(30, half - 30))
        fill = [(227, 32, 43), (31, 87, 195), (251, 250, 244)][int(rng.integers(3))]
        d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=fill, outline=(17, 17, 17), width=6)
    for _ in range(4):
        x0, y0 = float(rng.uniform(20, half - 80)), float(rng.uniform(half + 20, size - 80))
        w, h = float(rng.uniform(40, 90)), float(rng.uniform(30, 70))
        fill = [(255, 214, 0), (227, 32, 43), (251, 250, 244)][int(rng.integers(3))]
        d.rectangle([x0, y0, x0 + w, y0 + h], fill=fill, outline=(17, 17, 17), width=6)
    # Panel gutters.
    d.line([(half, 0), (half, size)], fill=(17, 17, 17), width=10)
    d.line([(0, half), (size, half)], fill=(17, 17, 17), width=10)
    d.rectangle([0, 0, size - 1, size - 1], outline=(17, 17, 17), width=8)
    return np.asarray(shapes).copy()


def _stained_glass(size: int) -> np.ndarray:
    rng = np.random.default_rng(1163)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Regions of an arrangement of lines and circles: each pixel's region is
    # the pattern of which side of every cut it lies on.
    code = np.zeros((size, size), np.int64)
    lead = np.full((size, size), np.inf, np.float32)
    for i in range(13):
        a = float(rng.uniform(0, math.pi))
        px, py = float(rng.uniform(0, size)), float(rng.uniform(0, size))
        dist = (xx - px) * math.sin(a) - (yy - py) * math.cos(a)
        code = code * 2 + (dist > 0)
        lead = np.minimum(lead, np.abs(dist))
    for i in range(6):
        cx, cy, r = float(rng.uniform(0, size)), float(rng.uniform(0, size)), float(rng.uniform(40, 150))
        dist = np.hypot(xx - cx, yy - cy) - r
        code = code * 2 + (dist > 0)
        lead = np.minimum(lead, np.abs(dist))
    _, region = np.unique(code, return_inverse=True)
    region = region.reshape(size, size)
    nreg = int(region.max()) + 1
    palette = np.stack([_rgb(c) for c in ("#9b111e", "#0f52ba", "#0b7a3e", "#e8a317", "#6a2c91", "#c2401c", "#1d8fa8", "#f2d16b")])
    col = palette[rng.integers(0, len(palette), nreg)] * rng.uniform(0.7, 1.15, (nreg, 1)).astype(np.float32)
    img = col[region]
    # Backlight: glass glows brighter toward the centre.
    glow = 1.15 - 0.55 * (np.hypot(xx - size / 2, yy - size * 0.45) / size)
    img *= glow[..., None]
    # Mottled glass and streaky seeds (bubbles) inside each pane.
    mott = _noise(rng, size, 40, 2)
    streaks = np.asarray(Image.fromarray(rng.random((size // 8, size)).astype(np.float32)).resize((size, size), Image.BICUBIC))
    img *= (0.78 + 0.3 * mott + 0.1 * streaks)[..., None]
    edge_dark = np.clip(lead / 14.0, 0.55, 1.0)  # pigment pools near the leading
    img *= edge_dark[..., None]
    lead_mask = np.clip(4.5 - lead, 0, 1)
    lead_col = _rgb("#17171a") * (0.8 + 0.5 * _noise(rng, size, 80))[..., None]
    img = _over(img, lead_col, lead_mask)
    return _to_uint8(img)


def _watercolor(size: int) -> np.ndarray:
    rng = np.random.default_rng(1840)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    grain = rng.random((size, size)).astype(np.float32)
    tooth = _noise(rng, size, 96)
    img = np.ones((size, size, 3), np.float32) * _rgb("#fcfaf4")
    img *= (0.965 + 0.035 * tooth)[..., None]
    palette = [_rgb(c) for c in ("#ef7fa5", "#9b7fe0", "#39b8b0", "#f6b85a", "#5aa8f0", "#e8566f", "#7fd08f")]
    # Edge wobble fields shared by all washes (a random window of a field twice
    # the size per wash): far cheaper than fresh noise for each wash.
    wobble = _noise(rng, 2 * size, 12, 3) - 0.5
    pool = _noise(rng, 2 * size, 40, 2)
    # Transparent washes: noise-edged blobs, darker at the rim where pigment
    # collects while drying, multiplied onto the paper like real glazes.
    for i in range(18):
        cx, cy = float(rng.uniform(-30, size + 30)), float(rng.uniform(-30, size + 30))
        r = float(rng.uniform(55, 150))
        sy, sx = int(rng.integers(size)), int(rng.integers(size))
        shape = np.hypot((xx - cx) / r, (yy - cy) / (r * float(rng.uniform(0.6, 1.4)))) + 0.6 * wobble[sy : sy + size, sx : sx + size]
        mask = _blur(np.clip((1.0 - shape) * 5.0, 0, 1), 1.5)
        rim = np.clip(mask - _blur(mask, 5.0), 0, 1) * 2.2
        pooling = 0.7 + 0.5 * pool[sy : sy + size, sx : sx + size]
        density = float(rng.uniform(0.25, 0.5)) * mask * pooling * (0.92 + 0.12 * grain) + rim * 0.3
        pigment = palette[int(rng.integers(len(palette)))]
        img *= 1.0 - np.clip(density, 0, 0.9)[..., None] * (1.0 - pigment)
    # Granulation: pigment settling in the paper's tooth as fine speckle.
    img *= (1.0 - 0.05 * (grain > 0.9) * (img.mean(-1) < 0.85))[..., None]
    return _to_uint8(img)


def _sunset_synthwave(size: int) -> np.ndarray:
    rng = np.random.default_rng(1984)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    horizon = int(size * 0.6)
    t = np.clip(yy / horizon, 0, 1)[..., None]
    stops = [(0.0, "#2b0f54"), (0.45, "#a3206f"), (0.75, "#f2542d"), (1.0, "#ffd23f")]
    img = np.zeros((size, size, 3), np.float32)
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        w = np.clip((t - t0) / (t1 - t0), 0, 1)
        seg = (t >= t0) & (t <= t1)
        img = np.where(seg, _rgb(c0) * (1 - w) + _rgb(c1) * w, img)
    stars = (rng.random((size, size)) < 0.004) & (yy < horizon * 0.5)
    img = _over(img, _rgb("#fff4d6"), stars.astype(np.float32) * rng.random((size, size)).astype(np.float32))
    # Sun: vertical yellow->pink gradient disc cut by thickening horizontal gaps.
    cx, cy, r = size / 2, horizon - size * 0.08, size * 0.24
    inside = np.hypot(xx - cx, yy - cy) < r
    st = np.clip((yy - (cy - r)) / (2 * r), 0, 1)[..., None]
    sun = _rgb("#fff35c") * (1 - st) + _rgb("#ff2d95") * st
    rel = (yy - cy) / r
    gaps = (rel > 0) & (np.mod(yy - cy, 18) < 2 + 10 * np.clip(rel, 0, 1))
    sun_mask = (inside & ~gaps & (yy < horizon)).astype(np.float32)
    halo = _blur(inside.astype(np.float32), 18) * 0.5
    img = img + halo[..., None] * _rgb("#ff6a3d") * 0.6
    img = _over(img, sun, sun_mask)
    # Layered mountains with wireframe ridges.
    xs = np.arange(size, dtype=np.float32)
    for k, col in enumerate(("#4a1a6b", "#2a0c45")):
        ridge = horizon - (40 + 40 * k) * _noise(rng, size, 8 + 4 * k)[0] - 10
        mask = (yy > ridge[None, :]) & (yy < horizon)
        img = np.where(mask[..., None], _rgb(col) * (0.8 + 0.2 * (yy / size))[..., None], img)
        edge = (np.abs(yy - ridge[None, :]) < 1.5) & (yy < horizon)
        img = _over(img, _rgb("#ff7ad9"), edge.astype(np.float32) * 0.9)
    # Floor: dark plum with glowing orange/pink perspective grid.
    floor = yy >= horizon
    img = np.where(floor[..., None], _rgb("#1b0630") * (1 + 0.6 * (yy - horizon) / size)[..., None], img)
    grid, gd = _layer(size)
    _perspective_grid(gd, size, horizon, (255, 90, 170), 2, 13, 11)
    gd.line([(0, horizon), (size, horizon)], fill=(255, 200, 90), width=3)
    g = _f(grid) * floor[..., None]
    img += g + _blur(g, 3) * 1.2 + _blur(g, 9) * 0.8
    # Scanlines: a fine horizontal retro texture over everything.
    img *= (0.93 + 0.07 * (np.mod(yy, 3) < 1))[..., None]
    img += (rng.random((size, size, 1)).astype(np.float32) - 0.5) * 0.04
    return _to_uint8(img)


_PRESETS: dict[str, Callable[[int], np.ndarray]] = {
    "cyberpunk": _cyberpunk,
    "ukiyo": _ukiyo,
    "impressionist": _impressionist,
    "mosaic": _mosaic,
    "ink": _ink,
    "pop": _pop,
    "stained_glass": _stained_glass,
    "watercolor": _watercolor,
    "sunset_synthwave": _sunset_synthwave,
}

PRESET_DESCRIPTIONS: dict[str, str] = {
    "cyberpunk": "dark neon night: magenta/cyan/electric-blue glowing signs, lit skyline windows, perspective grid, light trails and rain",
    "ukiyo": "woodblock-print sea: indigo and cream wave bands with engraved line work, white foam curls and spray on aged paper",
    "impressionist": "plein-air landscape in many short thick brush dabs of warm pastel yellows, greens and sky blues",
    "mosaic": "Voronoi tesserae in saturated reds, oranges, yellows, greens, teals and purples set in dark grout",
    "ink": "sumi-e ink wash: grey mountain washes and dry-brush black calligraphic strokes on fibrous rice paper",
    "pop": "comic pop art: Ben-Day halftone dots, flat red/yellow/blue shapes, stripes and thick black outlines",
    "stained_glass": "backlit jewel-toned glass panes (ruby, sapphire, emerald, amber) cut by straight and curved black leading",
    "watercolor": "transparent rose, violet, teal and ochre washes with dark drying rims and blooms on white cold-press paper",
    "sunset_synthwave": "retro sunset: purple-to-orange sky, striped sun, wireframe mountains and a glowing pink grid floor",
}


@functools.lru_cache(maxsize=None)
def _preset_cached(name: str) -> np.ndarray:
    arr = np.ascontiguousarray(_PRESETS[name](PRESET_SIZE), dtype=np.uint8)
    arr.flags.writeable = False  # shared per process; callers get copies
    return arr


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def preset_image(name: str) -> np.ndarray:
    """The 512x512 RGB uint8 pixels of a built-in preset (a fresh writable copy)."""
    if name not in _PRESETS:
        raise StyleError(f"unknown preset {name!r}; built-in presets: {', '.join(preset_names())}")
    return _preset_cached(name).copy()


# --------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------


def style_key(images: Iterable[np.ndarray], weights: Iterable[float]) -> str:
    """Stable content hash of style pixels and blend weights."""
    h = hashlib.sha256(b"stylebatch-style-v1")
    for img, w in zip(images, weights, strict=True):
        arr = np.ascontiguousarray(img, dtype=np.uint8)
        h.update(json.dumps({"shape": list(arr.shape), "weight": round(float(w), 9)}).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:20]


def _uri_scheme(ref: str) -> str:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", ref)
    return m.group(1).lower() if m else ""


def _check_image_uri(ref: str, where: str) -> None:
    scheme = _uri_scheme(ref)
    if scheme not in ("", "file", "s3"):
        raise StyleError(
            f"{where}: unsupported URI scheme {scheme!r} in {_storage.redact(ref)!r}; "
            "style images must be local paths, file:// or s3:// URIs (download the image and reference the copy)"
        )


def _looks_like_uri(ref: str) -> bool:
    return (
        "://" in ref
        or "/" in ref
        or "\\" in ref
        or ref.startswith(("~", "."))
        or ref.lower().endswith(_IMAGE_SUFFIXES)
        or os.path.exists(ref)
    )


def _load_style_image(uri: str, *, max_pixels: int | None, where: str) -> np.ndarray:
    _check_image_uri(uri, where)
    if uri.startswith("~"):
        uri = os.path.expanduser(uri)
    try:
        data = _storage.read_bytes(uri, max_bytes=MAX_STYLE_BYTES)
    except _storage.UnsupportedSchemeError as exc:
        raise StyleError(f"{where}: {exc}") from exc
    except Exception as exc:  # storage errors, missing files, S3 failures
        raise StyleError(f"{where}: cannot read style image {_storage.redact(uri)!r}: {_storage.redact(str(exc))}") from exc
    try:
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        img = _images.decode_image(data, **kwargs)
    except _images.ImageDecodeError as exc:
        raise StyleError(f"{where}: cannot decode style image {_storage.redact(uri)!r}: {exc}") from exc
    if max(img.shape[:2]) > MAX_STYLE_SIZE:
        img = _images.resize_to_max(img, MAX_STYLE_SIZE)
    return img


def _frozen(img: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(img, dtype=np.uint8)
    if arr.flags.writeable:
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


def _image_for_ref(ref: str, *, max_pixels: int | None, where: str) -> np.ndarray:
    if ref in _PRESETS:
        return _preset_cached(ref)
    return _frozen(_load_style_image(ref, max_pixels=max_pixels, where=where))


def _build(name: str, refs: list[tuple[str, float]], *, alpha: float, preserve_color: bool, quality: str, max_pixels: int | None, where: str,
           network: str | None = None, network_style: str | None = None) -> ResolvedStyle:
    imgs = tuple(_image_for_ref(ref, max_pixels=max_pixels, where=where) for ref, _ in refs)
    if network is None and len(refs) == 1 and refs[0][0] in shipped_preset_networks():
        # A preset (alone, not in a blend) runs through its trained network; blends fall back to AdaIN.
        network, network_style = SHIPPED_NETWORKS_REF, refs[0][0]
    total = sum(w for _, w in refs)
    weights = tuple(w / total for _, w in refs)
    return ResolvedStyle(
        name=name,
        key=style_key(imgs, weights),
        images=imgs,
        weights=weights,
        alpha=float(alpha),
        preserve_color=bool(preserve_color),
        quality=quality,
        network=network,
        network_style=network_style,
    )


SHIPPED_NETWORKS_FILE = "preset_networks.pt"
# How a style names the shipped file: resolved where it is read (a Ray worker's install of the
# package may live elsewhere than the driver's), never an absolute path baked into the plan.
SHIPPED_NETWORKS_REF = f"builtin:{SHIPPED_NETWORKS_FILE}"


def shipped_networks_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "weights", SHIPPED_NETWORKS_FILE)


def network_location(ref: str) -> str:
    """Where a style's network file is: the shipped file for ``builtin:``, else the path or URI itself."""
    return shipped_networks_path() if ref == SHIPPED_NETWORKS_REF else ref


def read_network(ref: str) -> bytes:
    """The bytes of a style's network file (local, s3:// or the shipped one): what models read with."""
    return _storage.read_bytes(network_location(ref))


@functools.lru_cache(maxsize=1)
def shipped_preset_networks() -> frozenset:
    """The presets the shipped network file was trained for (empty when it is absent)."""
    path = shipped_networks_path()
    if not os.path.exists(path):
        return frozenset()
    from .models.network import load_network_styles

    return frozenset(load_network_styles(path))


def with_network(style: ResolvedStyle, network: str, network_style: str | None = None) -> ResolvedStyle:
    """The same style, run by a trained network (``--train-style``, catalog ``network:``)."""
    import dataclasses

    return dataclasses.replace(style, network=network, network_style=network_style)


def style_from_image(uri: str, *, max_pixels: int | None = None, name: str | None = None, alpha: float = 1.0, preserve_color: bool = False, quality: str = "fast") -> ResolvedStyle:
    """A single-image style from a local path, file:// or s3:// URI."""
    where = f"style {name or uri!r}"
    img = _frozen(_load_style_image(uri, max_pixels=max_pixels, where=where))
    return ResolvedStyle(name=name or uri, key=style_key([img], [1.0]), images=(img,), weights=(1.0,), alpha=alpha, preserve_color=preserve_color, quality=quality)


# --------------------------------------------------------------------------
# catalog
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    images: tuple[tuple[str, float], ...]  # (preset name or URI, raw weight)
    alpha: float = 1.0
    preserve_color: bool = False
    quality: str = "fast"
    description: str = ""
    network: str | None = None          # a network trained for this style (stylebatch styles train)
    network_style: str | None = None    # its name in that file, when the file holds several


_ENTRY_FIELDS = {"image", "images", "alpha", "preserve_color", "quality", "description", "network", "network_style"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _resolve_relative(ref: str, base_dir: str | None) -> str:
    # Relative image paths in a catalog are relative to the catalog file, so a
    # catalog directory can be moved (or synced to S3) as a unit.
    if ref in _PRESETS or base_dir is None or _uri_scheme(ref) or os.path.isabs(ref) or ref.startswith("~"):
        return ref
    return _storage.join(base_dir, ref)


def _parse_entry(name: Any, raw: Any, base_dir: str | None) -> CatalogEntry:
    if not isinstance(name, str) or not _STYLE_NAME_RE.match(name):
        raise StyleError(f"style {name!r}: invalid name (use letters, digits, '_', '-', '.'; at most 64 characters)")
    where = f"style {name!r}"
    if isinstance(raw, str):
        raw = {"image": raw}  # shorthand: `name: path/or/preset`
    if not isinstance(raw, Mapping):
        raise StyleError(f"{where}: entry must be a mapping or an image reference, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - _ENTRY_FIELDS)
    if unknown:
        raise StyleError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_ENTRY_FIELDS))})")
    if ("image" in raw) == ("images" in raw):
        raise StyleError(f"{where}: field 'image' (one reference) or 'images' (a blend) is required, not both and not neither")
    refs: list[tuple[str, float]] = []
    if "image" in raw:
        if not isinstance(raw["image"], str) or not raw["image"].strip():
            raise StyleError(f"{where}: field 'image' must be a non-empty string (preset name, local path, file:// or s3:// URI)")
        refs.append((raw["image"].strip(), 1.0))
    else:
        items = raw["images"]
        if not isinstance(items, list) or not items:
            raise StyleError(f"{where}: field 'images' must be a non-empty list")
        for i, item in enumerate(items):
            iw = f"{where}: images[{i}]"
            if isinstance(item, str):
                item = {"uri": item}
            if not isinstance(item, Mapping):
                raise StyleError(f"{iw} must be a string or a mapping with 'uri' and optional 'weight'")
            extra = sorted(set(map(str, item)) - {"uri", "weight"})
            if extra:
                raise StyleError(f"{iw}: unknown field(s) {', '.join(extra)} (allowed: uri, weight)")
            uri = item.get("uri")
            if not isinstance(uri, str) or not uri.strip():
                raise StyleError(f"{iw}: field 'uri' is required (preset name, local path, file:// or s3:// URI)")
            w = item.get("weight", 1.0)
            if not _is_number(w) or w <= 0:
                raise StyleError(f"{iw}: field 'weight' must be a positive number, got {w!r}")
            refs.append((uri.strip(), float(w)))
    for i, (ref, _) in enumerate(refs):
        _check_image_uri(ref, f"{where}: field {'image' if 'image' in raw else f'images[{i}]'}")
    refs = [(_resolve_relative(ref, base_dir), w) for ref, w in refs]

    alpha = raw.get("alpha", 1.0)
    if not _is_number(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise StyleError(f"{where}: field 'alpha' must be a number within [0, 1], got {alpha!r}")
    preserve = raw.get("preserve_color", False)
    if not isinstance(preserve, bool):
        raise StyleError(f"{where}: field 'preserve_color' must be true or false, got {preserve!r}")
    quality = raw.get("quality", "fast")
    if quality not in QUALITIES:
        raise StyleError(f"{where}: field 'quality' must be one of {', '.join(QUALITIES)}, got {quality!r}")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise StyleError(f"{where}: field 'description' must be a string")
    network, network_style = raw.get("network"), raw.get("network_style")
    if network is not None:
        if not isinstance(network, str) or not network.strip():
            raise StyleError(f"{where}: field 'network' must be a network file path or s3:// URI")
        if len(refs) != 1:
            raise StyleError(f"{where}: field 'network' needs a single 'image' (a blend runs through AdaIN)")
        _check_image_uri(network.strip(), f"{where}: field 'network'")
        network = _resolve_relative(network.strip(), base_dir)
    if network_style is not None and (network is None or not isinstance(network_style, str)):
        raise StyleError(f"{where}: field 'network_style' must be a string and needs 'network'")
    return CatalogEntry(name, tuple(refs), float(alpha), preserve, quality, desc, network, network_style)


@dataclass(frozen=True)
class StyleCatalog:
    """Named styles from a YAML/JSON catalog file (data only, never code)."""

    entries: Mapping[str, CatalogEntry] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | None = None, source: str | None = None) -> "StyleCatalog":
        where = f"style catalog {source!r}" if source else "style catalog"
        if not isinstance(data, Mapping) or not isinstance(data.get("styles"), Mapping):
            raise StyleError(f"{where}: expected a top-level 'styles:' mapping of name -> style entry")
        extra = sorted(set(map(str, data)) - {"styles", "version"})
        if extra:
            raise StyleError(f"{where}: unknown top-level field(s) {', '.join(extra)}")
        entries = {str(n): _parse_entry(n, raw, base_dir) for n, raw in data["styles"].items()}
        return cls(entries=entries, source=source)

    @classmethod
    def loads(cls, text: str | bytes, *, base_dir: str | None = None, source: str | None = None) -> "StyleCatalog":
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        import yaml  # YAML is a superset of JSON, so one safe parser reads both

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise StyleError(f"style catalog {source or ''}: not valid YAML/JSON: {exc}".replace("  ", " ")) from exc
        return cls.from_dict(data, base_dir=base_dir, source=source)

    @classmethod
    def load(cls, uri: str) -> "StyleCatalog":
        try:
            data = _storage.read_bytes(uri, max_bytes=4 * 1024 * 1024)
        except Exception as exc:
            raise StyleError(f"cannot read style catalog {_storage.redact(uri)!r}: {_storage.redact(str(exc))}") from exc
        base_dir = uri.rsplit("/", 1)[0] if "/" in uri else "."
        if uri.lower().endswith(".json"):
            # Strict JSON for .json files: a YAML-only construct there is a mistake.
            try:
                parsed = json.loads(data.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise StyleError(f"style catalog {uri!r}: not valid JSON: {exc}") from exc
            return cls.from_dict(parsed, base_dir=base_dir, source=uri)
        return cls.loads(data, base_dir=base_dir, source=uri)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def entry(self, name: str) -> CatalogEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise StyleError(f"style {name!r} is not in the catalog; catalog styles: {', '.join(self.names()) or '(none)'}") from None

    def resolve(self, name: str, *, max_pixels: int | None = None) -> ResolvedStyle:
        e = self.entry(name)
        return _build(name, list(e.images), alpha=e.alpha, preserve_color=e.preserve_color, quality=e.quality, max_pixels=max_pixels, where=f"style {name!r}",
                      network=e.network, network_style=e.network_style)


def available_styles(catalog: StyleCatalog | None = None) -> list[str]:
    names = set(_PRESETS)
    if catalog is not None:
        names |= set(catalog.names())
    return sorted(names)


def list_styles(catalog: StyleCatalog | None = None) -> list[dict]:
    """One dict per available style: name, source ('builtin' or 'catalog'), description, images, alpha, quality."""
    out = []
    for name in available_styles(catalog):
        if catalog is not None and name in catalog:
            e = catalog.entries[name]
            refs = ", ".join(f"{r} ({w:g})" if len(e.images) > 1 else r for r, w in e.images)
            out.append({
                "name": name,
                "source": "catalog",
                "description": e.description or f"catalog style from {refs}",
                "images": [r for r, _ in e.images],
                "alpha": e.alpha,
                "preserve_color": e.preserve_color,
                "quality": e.quality,
            })
        else:
            out.append({
                "name": name,
                "source": "builtin",
                "description": PRESET_DESCRIPTIONS[name],
                "images": [name],
                "alpha": 1.0,
                "preserve_color": False,
                "quality": "fast",
            })
    return out


def resolve_style(name_or_uri: str, *, catalog: StyleCatalog | None = None, max_pixels: int | None = None) -> ResolvedStyle:
    """Resolve a catalog name (checked first, so a catalog can retune a preset),
    a built-in preset name, or a style image URI (local path, file://, s3://)."""
    if not isinstance(name_or_uri, str) or not name_or_uri.strip():
        raise StyleError(f"style must be a non-empty string; available styles: {', '.join(available_styles(catalog))}")
    ref = name_or_uri.strip()
    if catalog is not None and ref in catalog:
        return catalog.resolve(ref, max_pixels=max_pixels)
    if ref in _PRESETS:
        return _build(ref, [(ref, 1.0)], alpha=1.0, preserve_color=False, quality="fast", max_pixels=max_pixels, where=f"style {ref!r}")
    if _looks_like_uri(ref):
        return style_from_image(ref, max_pixels=max_pixels)
    raise StyleError(
        f"unknown style {ref!r}; available styles: {', '.join(available_styles(catalog))} "
        "(or pass a style image as a local path, file:// or s3:// URI)"
    )
