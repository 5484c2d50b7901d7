"""Any picture size in bounded memory: a model run tile by tile with the whole picture's statistics.

Instance norm, AdaIN and the palette recolouring normalise by statistics of the whole picture; run
on a tile alone, each tile would get its own colours and the tile borders would show. So a large
picture is run twice: first whole, downscaled to at most ``stats_pixels``, while a ``StatsTape``
records every such statistic in the order the model asks for them; then tile by tile at full
size while the tape plays them back. Each tile carries ``halo`` pixels of context on every side
(more than the model's receptive field reaches), and neighbouring tiles are blended with linear
ramps across ``blend`` pixels, so no border shows.

A model opts in by computing each whole-picture statistic through ``global_stat``: without a
tape it is the plain computation, so an untiled run is unchanged to the bit.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

_local = threading.local()


class StatsTape:
    """Statistics recorded on the whole picture, then played back in the same order on each tile."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.recording = True
        self._cursor = 0

    def take(self, compute: Callable[[], Any]) -> Any:
        if self.recording:
            value = compute()
            self.values.append(value)
            return value
        if self._cursor >= len(self.values):
            raise RuntimeError("a tile asked for more statistics than the whole picture recorded")
        value = self.values[self._cursor]
        self._cursor += 1
        return value

    def rewind(self) -> None:
        self.recording, self._cursor = False, 0


def global_stat(compute: Callable[[], Any]) -> Any:
    """A statistic of the whole picture: ``compute()`` on what the model sees, or, while a tile is
    running, the value recorded for the whole picture."""
    tape = getattr(_local, "tape", None)
    return compute() if tape is None else tape.take(compute)


def taping() -> bool:
    """Whether a tape is active (models may take a slower, tape-aware path only then)."""
    return getattr(_local, "tape", None) is not None


@contextlib.contextmanager
def _using(tape: StatsTape):
    previous = getattr(_local, "tape", None)
    _local.tape = tape
    try:
        yield tape
    finally:
        _local.tape = previous


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-sample, per-channel normalisation over H and W with the tape's statistics (fp32)."""
    var, mean = global_stat(lambda: torch.var_mean(x.float(), dim=(2, 3), unbiased=False, keepdim=True))
    return ((x.float() - mean) * torch.rsqrt(var + eps)).to(x.dtype)


@dataclass(frozen=True)
class TilePlan:
    """``tile``: the core side of a tile; ``halo``: context on each side; ``blend``: the width of the
    ramp between neighbours (within the halo); ``multiple``: the model's total stride (tile origins
    stay on its grid, so a tile sees the same downsampling phase as the whole picture);
    ``stats_pixels``: the largest picture run whole for the statistics."""

    tile: int = 1024
    halo: int = 96
    blend: int = 32
    multiple: int = 8
    stats_pixels: int = (1024 + 2 * 96) ** 2  # the whole picture at most a tile's size: the same peak

    def __post_init__(self) -> None:
        if self.tile % self.multiple or self.halo % self.multiple:
            raise ValueError(f"tile {self.tile} and halo {self.halo} must be multiples of {self.multiple}")
        if not 0 < self.blend <= self.halo:
            raise ValueError(f"blend {self.blend} must be within (0, halo {self.halo}]")

    def needed(self, h: int, w: int) -> bool:
        return h > self.tile + 2 * self.halo or w > self.tile + 2 * self.halo


def plan_for(device: torch.device, bytes_per_pixel: int, *, share: float = 0.5) -> TilePlan:
    """The tile plan for a device: on CPU the default tile; on a GPU the largest tile (with its halo)
    whose activations, at ``bytes_per_pixel``, take at most ``share`` of the device's free memory,
    so a large GPU runs large pictures in few tiles and a busy one in small tiles."""
    default = TilePlan()
    if device.type != "cuda":
        return default
    free, _ = torch.cuda.mem_get_info(device)
    side = int(math.sqrt(free * share / bytes_per_pixel)) - 2 * default.halo
    tile = max(256, side // default.multiple * default.multiple)
    return TilePlan(tile=tile, halo=default.halo, blend=default.blend, multiple=default.multiple,
                    stats_pixels=(tile + 2 * default.halo) ** 2)


def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    return [(s, min(s + tile, size)) for s in range(0, size, tile)]


def _ramp(length: int, start: int, stop: int, lo: int, hi: int, blend: int) -> torch.Tensor:
    """Weights over a tile's computed span [lo, hi): 1 on its core [start, stop), falling linearly to
    0 across ``blend`` pixels centred on each core edge that has a neighbour."""
    pos = torch.arange(lo, hi, dtype=torch.float32) + 0.5
    w = torch.ones(hi - lo)
    if start > 0:
        w = torch.minimum(w, ((pos - (start - blend / 2)) / blend).clamp(0, 1))
    if stop < length:
        w = torch.minimum(w, (((stop + blend / 2) - pos) / blend).clamp(0, 1))
    return w


def run_tiled(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """``run`` (1,3,H,W [0,1] in, the same size out) over ``x`` tile by tile; see the module docstring.
    A picture that fits one tile (with its halo) runs whole, untouched by any tape."""
    if x.shape[0] != 1:
        raise ValueError(f"tiles run one picture at a time, got a batch of {x.shape[0]}")
    h, w = x.shape[-2:]
    if not plan.needed(h, w):
        return run(x)
    tape = StatsTape()
    scale = min(1.0, math.sqrt(plan.stats_pixels / (h * w)))
    small = x if scale >= 1.0 else F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                                                  mode="area")
    with _using(tape):
        run(small)
    out = torch.zeros(1, 3, h, w, dtype=torch.float32, device=x.device)
    weight = torch.zeros(1, 1, h, w, dtype=torch.float32, device=x.device)
    for y0, y1 in _spans(h, plan.tile):
        for x0, x1 in _spans(w, plan.tile):
            ya, yb = max(0, y0 - plan.halo), min(h, y1 + plan.halo)
            xa, xb = max(0, x0 - plan.halo), min(w, x1 + plan.halo)
            tape.rewind()
            with _using(tape):
                y = run(x[..., ya:yb, xa:xb]).float()
            wy = _ramp(h, y0, y1, ya, yb, plan.blend).to(x.device)
            wx = _ramp(w, x0, x1, xa, xb, plan.blend).to(x.device)
            wt = (wy[:, None] * wx[None, :])[None, None]
            out[..., ya:yb, xa:xb] += y * wt
            weight[..., ya:yb, xa:xb] += wt
    return (out / weight.clamp_min(1e-6)).to(x.dtype)
