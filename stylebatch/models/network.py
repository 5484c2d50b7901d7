"""The style network: Johnson et al.'s feed-forward network (2016, "Perceptual Losses for Real-Time
Style Transfer"), with instance normalisation (Ulyanov et al. 2016) made conditional on the style
(Dumoulin et al. 2017, "A Learned Representation for Artistic Style"): every style shares the
convolutions and owns only the scale/shift of each normalisation layer. A file holding one style is
Johnson's network: each shipped preset has one (``weights/presets/<name>.pt``), fine-tuned from the
shared base file that holds all nine in one 1.7M-parameter network (``weights/preset_networks.pt``).
The file format is ``network_file``, the stylizer ``network_stylizer``, training ``stylebatch.training``.

conv 9x9 -> two stride-2 convs -> residual blocks -> two nearest-upsample convs -> conv 9x9,
reflection padding everywhere (zero padding draws dark frames along the borders). The last conv's
output is added to the photo and starts at zero, so an untrained network is the identity: like
Gatys's optimisation started from the photo, training moves from the photo towards the style and the
photo's structure is there from the first step, instead of having to be rebuilt from a blur (on 2
CPU cores that is the difference between recognisable faces after minutes and after hours).

A *palette* network (``NetworkConfig.palette``) first moves the photo to its style's RGB mean and
covariance (one affine map per image, ``runtime.match_color``; the style's statistics are buffers in
the file) and learns the texture on top: a residual started from the photo itself keeps the photo's
colours in flat regions, and the outputs look washed out next to the style. With ``palette_luma``
the recolouring keeps that share of the photo's luminance variation: a pale, low-contrast style's
covariance alone squeezes the photo's brightness range to a third, and faces go.
``palette_strength`` below 1 recolours only part of the way (the identity map blended with the
transfer), leaving the network to carry the rest of the palette where the photo's content needs it.

A *skip* network (``NetworkConfig.skip``) adds a second output conv fed by the first layer's
full-resolution features: the rest of the network sees the photo only through two downsamplings, so
it can paint texture over the photo's fine detail (fur, grain) but not remove it, where Gatys
flattens such regions into the style's shapes. It starts at zero, so fine-tuning a file without it
starts from that file's outputs. With ``skip_luma`` it changes brightness only (one channel added to
R, G and B alike): a colour skip conv learns to cancel the photo's small colour accents too (a
cat's green eyes, a blue badge), which Gatys keeps.

*Droplets* (``NetworkConfig.droplet_energy``): every shipped network, as StyleGAN2 found of its
generator, grows a spike at one or two places of the photo that nearly every channel shares and
that holds most of a layer's variance (at the first upsampling layer, 100-400 times a position's
mean energy where the median position holds 0.03), which the instance norms divide by: a volume
knob on the rest of the picture. Drawn, it is a bright diamond some 30 px across (without the fill,
on almost every photo of the cyberpunk and sunset_synthwave presets). Removing the spike changes
every norm's statistics and wrecks the picture, so the spike is left to do its work inside the
network and only the output's change where it shows is filled in from around it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from stylebatch.models import runtime, tiling
from stylebatch.models.network_kernels import output_conv


def setting(default, help: str):
    """A config field with its description: what the setting of that name in a recipe file means."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class NetworkConfig:
    """Widths of the network; the defaults are Johnson et al.'s."""

    channels: int = setting(32, "the first layer's channels (doubled by each of the two downsamplings)")
    residual_blocks: int = setting(5, "residual blocks in the network's trunk")
    palette: bool = setting(False, "recolour each photo to its style's RGB mean and covariance before the network")
    skip: bool = setting(False, "a second output conv from the first layer's full-resolution features")
    skip_luma: bool = setting(False, "with skip: that conv changes brightness only, keeping the photo's colour accents")
    palette_luma: float = setting(0.0, "with palette: share (0-1) of the photo's luminance variation the "
                                       "recolouring keeps, for pale low-contrast styles that flatten faces")
    palette_strength: float = setting(1.0, "with palette: how far (0-1] the recolouring moves the photo to the "
                                           "style's palette")
    # Why the fill: the module docstring.
    droplet_energy: float = setting(10.0, "fill in the output's change where an instance-norm droplet (a position "
                                          "of the first upsampling layer) holds more than this many times the "
                                          "layer's mean energy; 0: off")

    def __post_init__(self):
        if self.skip_luma and not self.skip:
            raise ValueError("NetworkConfig: skip_luma needs skip (it says what the skip conv changes)")
        if not 0.0 <= self.palette_luma <= 1.0:
            raise ValueError(f"NetworkConfig: palette_luma must be in [0, 1], got {self.palette_luma}")
        if self.palette_luma and not self.palette:
            raise ValueError("NetworkConfig: palette_luma needs palette (it says what the recolouring keeps)")
        if not 0.0 < self.palette_strength <= 1.0:
            raise ValueError(f"NetworkConfig: palette_strength must be in (0, 1], got {self.palette_strength}")
        if self.palette_strength != 1.0 and not self.palette:
            raise ValueError("NetworkConfig: palette_strength needs palette (it says how far the recolouring goes)")
        if self.droplet_energy < 0 or 0 < self.droplet_energy <= 1:
            raise ValueError(f"NetworkConfig: droplet_energy is a multiple of the mean energy (above 1), or 0 "
                             f"for off; got {self.droplet_energy}")

    @property
    def multiple(self) -> int:
        return 4  # two stride-2 convs: sizes are padded to a multiple of 4 and cropped back


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose affine scale/shift is chosen per sample by a style index."""

    def __init__(self, channels: int, n_styles: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n_styles, channels))
        self.shift = nn.Parameter(torch.zeros(n_styles, channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor, energy: bool = False):
        """With ``energy``, also each position's mean over channels of the squared normalised
        features, N,1,H,W (1 on average over positions): where a droplet sits it is hundreds."""
        # group_norm with one group per channel is instance norm, and its CPU kernel takes the
        # statistics and normalises in one fused pass (accumulating bf16/fp16 in fp32): about 3.5x
        # faster than torch.var_mean alone, which would take a third of the network's inference time.
        # The per-sample scale/shift is then one multiply-add.
        # Training runs the network channels-last (the convolutions' fast layout), where the CPU
        # group_norm *backward* is 5-7x slower than on a contiguous tensor (a quarter of a training
        # step): on CPU the norm works on a contiguous copy and hands back the caller's layout.
        # Inference (no autograd) normalises channels-last in place: the forward kernel is fast
        # there, and the two copies would cost 40% of a 512 px batch's time.
        if tiling.taping():  # a tile of a larger picture: normalised by the whole picture's statistics
            normed = tiling.instance_norm(x)
            y = torch.addcmul(self.shift[style].to(x.dtype)[..., None, None], normed,
                              self.scale[style].to(x.dtype)[..., None, None])
            return (y, normed.float().square().mean(1, keepdim=True)) if energy else y
        if not (energy or torch.is_grad_enabled()) and bool((style == style[0]).all()):
            # Inference with one style for the whole batch (a catalog run): group_norm applies the
            # scale/shift in its own pass, where a separate multiply-add costs 16% of the time.
            s = int(style[0])
            return F.group_norm(x, x.shape[1], self.scale[s].to(x.dtype), self.shift[s].to(x.dtype), eps=1e-5)
        channels_last = (x.device.type == "cpu" and torch.is_grad_enabled() and not x.is_contiguous()
                         and x.is_contiguous(memory_format=torch.channels_last))
        normed = F.group_norm(x.contiguous() if channels_last else x, x.shape[1], eps=1e-5)
        scale = self.scale[style].to(x.dtype)[..., None, None]
        shift = self.shift[style].to(x.dtype)[..., None, None]
        y = torch.addcmul(shift, normed, scale)
        y = y.contiguous(memory_format=torch.channels_last) if channels_last else y
        return (y, normed.float().square().mean(1, keepdim=True)) if energy else y


class _ConvNorm(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, n_styles: int, stride: int = 1,
                 upsample: bool = False, relu: bool = True):
        super().__init__()
        self.pad, self.stride, self.upsample, self.relu = kernel // 2, stride, upsample, relu
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = ConditionalInstanceNorm(cout, n_styles)

    def forward(self, x, style, energy: bool = False):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(F.pad(x, (self.pad,) * 4, mode="reflect")), style, energy)
        x, e = x if energy else (x, None)
        x = F.relu_(x) if self.relu else x
        return (x, e) if energy else x


class _Residual(nn.Module):
    def __init__(self, channels: int, n_styles: int):
        super().__init__()
        self.a = _ConvNorm(channels, channels, 3, n_styles)
        self.b = _ConvNorm(channels, channels, 3, n_styles, relu=False)

    def forward(self, x, style):
        return x + self.b(self.a(x, style), style)


class StyleNetwork(nn.Module):
    """RGB [0,1] NCHW in, RGB (about [0,1], clamp before use) out, same size; ``style`` holds one
    style index per sample. Output = photo + a learned change."""

    def __init__(self, n_styles: int = 1, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        c = config.channels
        self.config, self.n_styles = config, n_styles
        self.down = nn.ModuleList([
            _ConvNorm(3, c, 9, n_styles),
            _ConvNorm(c, 2 * c, 3, n_styles, stride=2),
            _ConvNorm(2 * c, 4 * c, 3, n_styles, stride=2),
        ])
        self.residuals = nn.ModuleList([_Residual(4 * c, n_styles) for _ in range(config.residual_blocks)])
        self.up = nn.ModuleList([
            _ConvNorm(4 * c, 2 * c, 3, n_styles, upsample=True),
            _ConvNorm(2 * c, c, 3, n_styles, upsample=True),
        ])
        self.out = nn.Conv2d(c, 3, 9)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if config.skip:  # why, and why it starts at zero: the module docstring
            self.skip_out = nn.Conv2d(c, 1 if config.skip_luma else 3, 9)
            nn.init.zeros_(self.skip_out.weight)
            nn.init.zeros_(self.skip_out.bias)
        if config.palette:  # each style's colour statistics (runtime.color_stats), set by its training
            self.register_buffer("palette_mean", torch.full((n_styles, 3), 0.5))
            self.register_buffer("palette_cov", torch.eye(3).repeat(n_styles, 1, 1) * 0.05)

    def set_palette(self, index: int, stats: tuple[torch.Tensor, torch.Tensor]) -> None:
        with torch.no_grad():
            self.palette_mean[index] = stats[0]
            self.palette_cov[index] = stats[1]

    def recolour(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Without ``palette``, the photo. With it, each photo moved to its style's colour mean and
        covariance (one affine map of RGB, ``runtime.match_color``): the network then starts from the
        style's palette and learns the texture, where a residual network started from the photo kept
        the photo's colours in flat regions (an orange suit stayed orange in the ukiyo preset)."""
        if not self.config.palette:
            return x
        with torch.autocast(x.device.type, enabled=False):  # colours in fp32: bf16 is ~1 grey level off
            return torch.cat([runtime.match_color(x[i:i + 1].float(), (self.palette_mean[s].float(),
                                                                       self.palette_cov[s].float()),
                                                  strength=self.config.palette_strength,
                                                  keep_luma=self.config.palette_luma).to(x.dtype)
                              for i, s in enumerate(style.tolist())])

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.recolour(x, style)
        padded, (h, w) = runtime.pad_to_multiple(x, self.config.multiple, min_size=8)
        # The layers run in the weights' dtype (bf16 weights skip autocast's per-call casts); the
        # photo is added back at the input's precision (bf16 would cost two grey levels).
        y = first = self.down[0](padded.to(self.out.weight.dtype), style)
        for layer in (*self.down[1:], *self.residuals):
            y = layer(y, style)
        y, energy = self.up[0](y, style, energy=True)
        y = self.up[1](y, style)
        change = output_conv(self.out, F.pad(y, (4, 4, 4, 4), mode="reflect"))
        if self.config.droplet_energy:  # why: the module docstring
            change = fill_droplets(change, energy > self.config.droplet_energy)
        if self.config.skip:  # a one-channel (skip_luma) change broadcasts over R, G and B
            change = change + output_conv(self.skip_out, F.pad(first, (4, 4, 4, 4), mode="reflect"))
        y = padded + change.to(padded.dtype)
        return y[..., :h, :w]


def fill_droplets(change: torch.Tensor, droplets: torch.Tensor, reach: int = 7, coarse: int = 4) -> torch.Tensor:
    """``change`` (N,C,H,W) with every pixel that saw a droplet filled in from the pixels around it.

    ``droplets``: N,1,H/2,W/2 booleans at the first upsampling layer's resolution. What saw one: the
    droplet widened by ``reach`` full-size pixels (the last upsampling conv's 3x3 and the output
    conv's 9x9 reach 5; 2 more for margin). The fill is smooth, so it is made at 1/``coarse`` size
    (a normalised 3x3 box filter of the known pixels, repeated until the hole is closed) and
    upsampled: at full size the same fill cost more than half the network's own time."""
    half = max(1, -(-reach // 2))
    hole = F.interpolate(F.max_pool2d(droplets.float(), 2 * half + 1, stride=1, padding=half),
                         size=change.shape[-2:], mode="nearest")
    if not bool(hole.any()):
        return change
    x, known = change.float(), 1.0 - hole
    num = F.avg_pool2d(x * known, coarse, ceil_mode=True)
    den = F.avg_pool2d(known, coarse, ceil_mode=True)
    for _ in range(max(den.shape[-2:])):  # each round reaches one coarse pixel further in
        if bool((den > 1e-3).all()):
            break
        grown_num = F.avg_pool2d(num, 3, stride=1, padding=1, count_include_pad=False)
        grown_den = F.avg_pool2d(den, 3, stride=1, padding=1, count_include_pad=False)
        keep = (den > 1e-3).float()
        num, den = num * keep + grown_num * (1 - keep), den * keep + grown_den * (1 - keep)
    if not bool((den > 1e-3).all()):  # a droplet over the whole image: nothing to fill it from
        return change
    fill = F.interpolate(num / den, size=change.shape[-2:], mode="bilinear", align_corners=False)
    return (x * known + fill * hole).to(change.dtype)
