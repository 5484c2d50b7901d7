"""Gatys et al. (2016), "Image Style Transfer Using Convolutional Neural Networks": the premium model.

The stylized image itself is optimised with L-BFGS so that its VGG19 relu4_2 features match the
content image and its Gram matrices at relu1_1..relu5_1 match the style's, plus an optional
total-variation term.

``GatysStylizer``'s defaults are what ``--quality premium`` runs (the registry builds it with only
the device, the precision and ``--premium-iterations``, 100 by default):

* ``init="palette"``, ``palette_strength=0.5``: start from the photo moved half-way to the style's
  colour mean and covariance (``runtime.match_color``), chosen by measurement against Gatys from the
  photo (docs/model-conclusions.md): fully recoloured, the start has the best style loss but loses structure
  at 512 px. ``init="content"`` starts from the photo itself, as the reference (``reference``,
  "Gatys@100", the yardstick every fast path is scored against) does.
* ``coarse_to_fine=False``: one level at full size. With it on, the optimisation runs first at half
  resolution (a quarter of the cost per iteration) when the shorter side is at least 256 px, then
  upsamples and finishes at full size, keeping the start's own high frequencies (a
  Laplacian-pyramid step); on held-out pairs it loses more structure than one level (docs/model-conclusions.md).
* bf16 autocast for the VGG passes on CPUs with native bf16 (``precision="auto"``, see
  ``tools/benchmark_models.py``); the optimised image, Gram matrices and loss stay fp32.

The default objective is exactly the ``pastiche`` package's (content layer weight 1e-2, style layer
weights 10 / C_l**2, TV 0.5 * tv_weight * TV in 0-255 units), so ``content_weight=style_weight=1,
tv_weight=0`` reproduces its loss values and the two can be scored with one function.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from stylebatch.models import runtime
from stylebatch.models.adain import StyleCache, StyleLike
from stylebatch.models.losses import gram, total_variation
from stylebatch.models.vgg import VGG19Encoder, load_vgg19

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
INITS = ("content", "palette")

DEFAULT_ITERATIONS = 100          # full-resolution iterations (the expensive ones)
REFERENCE_ITERATIONS = 100        # the quality yardstick ("Gatys@100"): the evaluation's reference
DEFAULT_COARSE_FACTOR = 1         # coarse iterations per full-resolution one (more measured worse per pass)
MIN_COARSE_SIDE = 128             # below this a coarse stage sees too little to be worth it
LBFGS_HISTORY = 50
LBFGS_HISTORY_BYTES = 512 << 20
RANGE_WEIGHT = 100.0              # out-of-range penalty, relative to the level's initial loss


@dataclass(frozen=True)
class GatysObjective:
    """Weights of the Gatys loss. The per-layer normalisation is pastiche's: the content MSE is scaled
    by 1e-2 and each Gram MSE by 10 / C_l**2. (The paper's 1 / (4 N_l^2 M_l^2) equals MSE / 4 for Grams
    already divided by the number of positions, as ``losses.gram`` does; pastiche's extra 1 / C_l**2
    damps the wide deep layers, whose Gram errors are by far the largest.) Keeping pastiche's scale
    makes our loss values directly comparable with its printed ones."""

    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0
    content_layer: str = CONTENT_LAYER
    style_layers: tuple = STYLE_LAYERS
    content_layer_weight: float = 1e-2
    style_layer_weights: Optional[tuple] = None   # None: 10 / C_l**2

    def layer_weights(self, encoder: VGG19Encoder) -> dict[str, float]:
        if self.style_layer_weights is not None:
            if len(self.style_layer_weights) != len(self.style_layers):
                raise ValueError("style_layer_weights needs one weight per style layer")
            return dict(zip(self.style_layers, map(float, self.style_layer_weights)))
        return {name: 10.0 / encoder.convs["conv" + name[4:]].out_channels ** 2 for name in self.style_layers}


def gatys_loss(encoder: VGG19Encoder, x: torch.Tensor, content_feat: torch.Tensor,
               style_grams: Mapping[str, torch.Tensor], objective: GatysObjective,
               precision: str = "fp32", pad_multiple: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of RGB [0,1] ``x`` (1,3,H,W) and its parts. VGG runs under ``precision`` autocast;
    the statistics and the sum are fp32 so an L-BFGS step compares like with like. ``pad_multiple``
    reflect-pads the VGG input (not the TV term) so floor pooling drops no border rows."""
    layers = set(objective.style_layers) | {objective.content_layer}
    vgg_in = runtime.pad_to_multiple(x, pad_multiple)[0] if pad_multiple > 1 else x
    with runtime.autocast(x.device, precision):
        feats = encoder(vgg_in.contiguous(memory_format=torch.channels_last), layers)
    c = F.mse_loss(feats[objective.content_layer].float(), content_feat.float())
    weights = objective.layer_weights(encoder)
    s = x.new_zeros((), dtype=torch.float32)
    for name in objective.style_layers:
        g = gram(feats[name])
        s = s + weights[name] * F.mse_loss(g, style_grams[name].expand_as(g))
    # pastiche's TV is 0.5 * w * TV of 0-255 pixels; ours works on [0, 1] pixels.
    tv = total_variation(x.float()) * 255.0
    total = (objective.content_weight * objective.content_layer_weight * c + objective.style_weight * s
             + 0.5 * objective.tv_weight * tv)
    return total, {"content": float(c.detach()), "style": float(s.detach()), "tv": float(tv.detach())}


@dataclass
class Progress:
    """Passed to ``stylize(callback=...)`` after every loss evaluation. ``image`` is the live
    optimisation variable (1,3,h,w) at this level's size, not yet clamped to [0, 1]: clone it to
    keep it. ``loss`` includes the small out-of-range penalty."""

    image_index: int
    level: int
    levels: int
    size: tuple
    evaluation: int          # evaluations so far at this level
    loss: float
    elapsed: float           # seconds since this image's stylization started
    image: torch.Tensor


class GatysStylizer:
    """Optimisation-based style transfer with the same calling convention as ``AdaINStylizer``."""

    def __init__(self, *, device: str = "auto", precision: str = "auto", cache_size: int = 16,
                 max_style_size: int = 512, iterations: int = DEFAULT_ITERATIONS, init: str = "palette",
                 coarse_to_fine: bool = False, palette_strength: float = 0.5):
        # Defaults for ``stylize``: the registry's one calling convention passes only images and style.
        self.iterations, self.init, self.coarse_to_fine = iterations, init, coarse_to_fine
        # How far the ``palette`` start recolours the photo (runtime.match_color's strength).
        self.palette_strength = palette_strength
        self.device = runtime.pick_device(device)
        self.precision = runtime.pick_precision(precision, self.device)
        self.encoder: VGG19Encoder = load_vgg19(last_layer="relu5_1").to(self.device)
        self.encoder.to(memory_format=torch.channels_last)
        self.cache = StyleCache(cache_size)
        self.max_style_size = max_style_size

    # -- style targets ------------------------------------------------------------------------
    def style_grams(self, style: StyleLike, scale: float = 1.0,
                    layers: Sequence[str] = STYLE_LAYERS) -> dict[str, torch.Tensor]:
        """Weighted sum of the style images' Gram matrices (weights normalised), with each image at
        ``scale`` times its working size (longer side at most ``max_style_size``); cached per key.
        Summing Grams is exact for the multi-style loss: sum_i w_i |G - G_i|^2 differs from
        |G - sum_i w_i G_i|^2 by a constant, so both have the same minimiser and gradient."""
        layers = tuple(layers)

        @torch.no_grad()  # not inference_mode: these targets enter autograd graphs later
        def compute():
            weights = np.asarray(list(style.weights) or [1.0] * len(style.images), dtype=np.float64)
            if len(weights) != len(style.images) or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"style {style.key!r}: need one non-negative weight per image, got {list(weights)}")
            weights = weights / weights.sum()
            out: dict[str, torch.Tensor] = {}
            for img, w in zip(style.images, weights):
                runtime.check_image(img, f"style image of {style.key!r}")
                h, w_ = img.shape[:2]
                factor = min(1.0, self.max_style_size / max(h, w_)) * scale
                x = _resize(runtime.to_tensor([img], self.device), _scaled_size(h, w_, factor))
                with runtime.autocast(self.device, self.precision):
                    feats = self.encoder(runtime.pad_to_multiple(x, 16)[0], layers)
                for name in layers:
                    out[name] = out.get(name, 0.0) + float(w) * gram(feats[name])
            return out

        return self.cache.get_or_compute(f"{style.key}|gatys|{self.max_style_size}|{scale:.4f}|{','.join(layers)}",
                                         compute)

    # -- stylization --------------------------------------------------------------------------
    def stylize(self, images: Sequence[np.ndarray], style: StyleLike, *, iterations: Optional[int] = None,
                coarse_iterations: Optional[int] = None, preserve_color: bool = False,
                init: Optional[str] = None, coarse_to_fine: Optional[bool] = None,
                content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 0.0,
                alpha: float = 1.0, callback: Optional[Callable[[Progress], None]] = None) -> list[np.ndarray]:
        """Stylize each HxWx3 uint8 RGB image independently; outputs have the input's size.

        ``iterations``: L-BFGS iterations at full resolution (one VGG forward+backward each; the line
        search may spend up to a quarter more).
        ``coarse_iterations``: iterations at each coarser level (default ``iterations``: a half-size
        level costs a quarter as much). ``init``: ``content`` (the photo) or ``palette`` (the photo
        moved ``palette_strength`` of the way to the style's colours, ``runtime.match_color``).
        ``alpha`` in [0, 1] scales the style weight: at 0 only the content term is left.
        """
        iterations = self.iterations if iterations is None else iterations
        init = self.init if init is None else init
        coarse_to_fine = self.coarse_to_fine if coarse_to_fine is None else coarse_to_fine
        _check_count(iterations, "iterations")
        if coarse_iterations is None:
            coarse_iterations = DEFAULT_COARSE_FACTOR * iterations
        _check_count(coarse_iterations, "coarse_iterations")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        for name, value in (("content_weight", content_weight), ("style_weight", style_weight),
                            ("tv_weight", tv_weight)):
            if not (math.isfinite(float(value)) and float(value) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {alpha}")
        for i, img in enumerate(images):
            runtime.check_image(img, f"image {i}")

        objective = GatysObjective(content_weight=float(content_weight), style_weight=float(style_weight) * float(alpha),
                                   tv_weight=float(tv_weight))
        out = []
        for i, img in enumerate(images):
            result = self._stylize_one(i, img, style, objective, iterations, coarse_iterations, init,
                                       coarse_to_fine, callback)
            if preserve_color:
                result = runtime.keep_content_color(result, runtime.to_tensor([img], self.device))
            out.extend(runtime.to_images(result))
        return out

    def reference(self, images: Sequence[np.ndarray], style: StyleLike, *, iterations: int = REFERENCE_ITERATIONS,
                  seed: int = 0) -> list[np.ndarray]:
        """The yardstick every fast path is scored against: plain Gatys from the photo at one level,
        ``iterations`` L-BFGS iterations, unit weights. Nothing in it is random: ``seed`` only lets
        a caller that names its runs by a seed pass one."""
        return self.stylize(images, style, iterations=iterations, init="content", coarse_to_fine=False)

    def levels(self, h: int, w: int, coarse_to_fine: bool = True) -> list[tuple[int, int]]:
        """Sizes to optimise at, coarsest first: halve while the shorter side stays >= MIN_COARSE_SIDE."""
        sizes = [(h, w)]
        while coarse_to_fine and min(sizes[0]) // 2 >= MIN_COARSE_SIDE:
            ph, pw = sizes[0]
            sizes.insert(0, ((ph + 1) // 2, (pw + 1) // 2))
        return sizes

    def _initial(self, content: torch.Tensor, style: StyleLike, init: str) -> torch.Tensor:
        if init == "content":
            return content
        # The style's colour statistics, once per style (a catalog run starts every row from them).
        stats = self.cache.get_or_compute(f"{style.key}|palette",
                                          lambda: runtime.color_stats(style.images, style.weights))
        return runtime.match_color(content, stats, strength=self.palette_strength)

    def _stylize_one(self, index, img, style, objective, iterations, coarse_iterations, init,
                     coarse_to_fine, callback) -> torch.Tensor:
        start = time.perf_counter()
        h, w = img.shape[:2]
        content_full = runtime.to_tensor([img], self.device)
        init_full = self._initial(content_full, style, init)
        sizes = self.levels(h, w, coarse_to_fine)
        x: Optional[torch.Tensor] = None
        prev_init: Optional[torch.Tensor] = None
        for level, size in enumerate(sizes):
            init_l = _resize(init_full, size)
            if x is None:
                x = init_l
            else:
                # Laplacian step: the coarse solution's low frequencies plus the init's own detail,
                # which bilinear upsampling of the coarse solution alone would lose.
                x = _resize(x, size, mode="bilinear") + init_l - _resize(prev_init, size, mode="bilinear")
            prev_init = init_l
            n = iterations if level == len(sizes) - 1 else coarse_iterations
            if n == 0 or (objective.style_weight == 0 and objective.content_weight == 0 and objective.tv_weight == 0):
                continue
            content_l = _resize(content_full, size)
            style_grams = self.style_grams(style, size[0] / h, objective.style_layers)
            with torch.no_grad():
                with runtime.autocast(self.device, self.precision):
                    content_feat = self.encoder(runtime.pad_to_multiple(content_l, 16)[0],
                                                [objective.content_layer])[objective.content_layer]
                content_feat = content_feat.float()

            def report(evaluation, loss, var, level=level, size=size):
                if callback is not None:
                    callback(Progress(index, level, len(sizes), size, evaluation, loss,
                                      time.perf_counter() - start, var.detach()))

            x = self._optimise(x, content_feat, style_grams, objective, n, report)
        return x.detach().clamp(0, 1)

    def _optimise(self, x0, content_feat, style_grams, objective, n, report) -> torch.Tensor:
        # The variable is fp32 whatever the autocast precision: L-BFGS's curvature pairs and tiny
        # late steps would vanish in bf16's 8-bit mantissa.
        # Contiguous NCHW: LBFGS flattens the gradient with .view(-1), which channels_last forbids.
        x = x0.detach().float().contiguous().clone().requires_grad_(True)
        evals, scale = 0, None

        def closure():
            nonlocal evals, scale
            opt.zero_grad(set_to_none=True)
            # The loss sees the clamped image, i.e. exactly what will be delivered: unconstrained
            # (pastiche) optimisation pushes a few % of pixels far out of range, and clipping them
            # afterwards doubles the loss. The penalty pulls stray pixels back to the boundary so
            # that they can take part again (their clamped gradient is zero).
            y = x.clamp(0.0, 1.0)
            loss, _ = gatys_loss(self.encoder, y, content_feat, style_grams, objective, self.precision, 16)
            if scale is None:  # fixed per level, so L-BFGS sees one function throughout
                scale = float(loss.detach()) * RANGE_WEIGHT
            loss = loss + scale * (x - y).square().mean()
            loss.backward()
            evals += 1
            report(evals, float(loss.detach()), x)
            return loss

        # First iteration without line search: L-BFGS's first step is -g/|g|_1, a millionth of a grey
        # level per pixel, and a line search would spend ~5 evaluations growing it. That tiny step
        # already yields the curvature scale the later steps use.
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, max_eval=1, history_size=_lbfgs_history(x.numel()))
        opt.step(closure)
        if n > 1:
            # Then strong-Wolfe line searches: pastiche's plain unit steps overshoot badly early on
            # (the loss jumps up several times); the search costs a few % more evaluations and makes
            # every iteration a decrease. It compares loss values of one precision with each other,
            # so bf16 autocast does not upset it.
            opt.param_groups[0].update(max_iter=n - 1, max_eval=n - 1 + n // 4, line_search_fn="strong_wolfe")
            opt.step(closure)
        return x.detach()


def _lbfgs_history(numel: int) -> int:
    """L-BFGS keeps two fp32 image-sized vectors per remembered step: cap that memory (a 2048x2048
    image would need 5 GB for 50 steps). Beyond ~10 steps the history barely changes convergence."""
    return max(5, min(LBFGS_HISTORY, LBFGS_HISTORY_BYTES // (8 * numel)))


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def _scaled_size(h: int, w: int, factor: float) -> tuple[int, int]:
    return max(1, round(h * factor)), max(1, round(w * factor))


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str = "area") -> torch.Tensor:
    """Area averaging to shrink (anti-aliased), bilinear to enlarge; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area" and (size[0] > x.shape[-2] or size[1] > x.shape[-1]):
        mode = "bilinear"
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=size, mode=mode, **kwargs)
