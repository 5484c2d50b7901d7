"""Per-style feed-forward networks (Johnson et al. 2016, "Perceptual Losses for Real-Time Style
Transfer"), with instance normalisation (Ulyanov et al. 2016) made conditional on the style
(Dumoulin et al. 2017, "A Learned Representation for Artistic Style"): every style shares the
convolutions and owns only the scale/shift of each normalisation layer. A file holding one style is
Johnson's network: each shipped preset has one (``weights/presets/<name>.pt``), fine-tuned from the
shared base file that holds all nine in one 1.7M-parameter network (``weights/preset_networks.pt``).

conv 9x9 -> two stride-2 convs -> residual blocks -> two nearest-upsample convs -> conv 9x9,
reflection padding everywhere (zero padding draws dark frames along the borders). The last conv's
output is added to the photo and starts at zero, so an untrained network is the identity: like
Gatys's optimisation started from the photo, training moves from the photo towards the style and the
photo's structure is there from the first step, instead of having to be rebuilt from a blur (on 2
CPU cores that is the difference between recognisable faces after minutes and after hours).

A *palette* network (``NetworkConfig.palette``) first moves the photo to its style's RGB mean and
covariance (one affine map per image, ``runtime.match_color``; the style's statistics are buffers in
the file) and learns the texture on top: started from the photo itself, the residual kept the
photo's colours in flat regions and the outputs looked washed out next to the style. With
``palette_luma`` the recolouring keeps that share of the photo's luminance variation: a pale,
low-contrast style's covariance alone squeezed the photo's brightness range to a third and faces went.
``palette_strength`` below 1 recolours only part of the way (the identity map blended with the
transfer), leaving the network to carry the rest of the palette where the photo's content needs it.

A *skip* network (``NetworkConfig.skip``) adds a second output conv fed by the first layer's
full-resolution features: the rest of the network sees the photo only through two downsamplings, so
it could paint texture over the photo's fine detail (fur, grain) but not remove it, where Gatys
flattens such regions into the style's shapes. It starts at zero, so fine-tuning a file without it
starts from that file's outputs. With ``skip_luma`` it changes brightness only (one channel added to
R, G and B alike): a colour skip conv also learned to cancel the photo's small colour accents (a
cat's green eyes, a blue badge) that Gatys keeps.

*Droplets* (``NetworkConfig.droplet_energy``): every shipped network, as StyleGAN2 found of its
generator, has learned to grow a spike at one or two places of the photo that nearly every channel
shares and that holds most of a layer's variance (at the first upsampling layer, 100-400 times a
position's mean energy where the median position holds 0.03), which the instance norms divide by:
a volume knob on the rest of the picture. Drawn, it is a bright diamond some 30 px across (the
cyberpunk and sunset_synthwave outputs had one on almost every photo). Removing the spike changes
every norm's statistics and wrecks the picture, so the spike is left to do its work inside the
network and only the output's change where it shows is filled in from around it.

A network file is a weights-only torch.save of ``{"format", "styles", "config", "state_dict"}``
(plus ``"scales"`` when its convolution weights are stored as int8): plain strings, numbers and
tensors, so loading it never runs pickled code.
"""
from __future__ import annotations

import collections
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stylebatch.models import runtime
from stylebatch.models.checkpoints import (
    WeightsError,
    load_weights_bytes,
    load_weights_record,
    read_weights_file,
)

FORMAT = "stylebatch-style-network/1"


def setting(default, help: str):
    """A config field with its ``--help`` text: the command lines that set it read it from here."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class NetworkConfig:
    """Widths of the network; the defaults are Johnson et al.'s."""

    channels: int = setting(32, "the first layer's channels (doubled by each of the two downsamplings); with "
                                "--init-from a narrower file the network starts as that file, its new channels unused")
    residual_blocks: int = setting(5, "residual blocks in the network's trunk; with --init-from a shallower file "
                                      "the extra blocks start as the identity")
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
        # faster than torch.var_mean alone, which had been a third of the network's inference time.
        # The per-sample scale/shift is then one multiply-add.
        # Training runs the network channels-last (the convolutions' fast layout), where the CPU
        # group_norm *backward* is 5-7x slower than on a contiguous tensor (a quarter of a training
        # step): on CPU the norm works on a contiguous copy and hands back the caller's layout.
        # Inference (no autograd) normalises channels-last in place: the forward kernel is fast
        # there, and the two copies were 40% of a 512 px batch's time.
        if not (energy or torch.is_grad_enabled()) and bool((style == style[0]).all()):
            # Inference with one style for the whole batch (a catalog run): group_norm applies the
            # scale/shift in its own pass, where a separate multiply-add was 16% of the time.
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


def output_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for the output convolutions (9x9, 1 or 3 output channels, full resolution).

    On CPU at inference it is computed as a k x 1 convolution to ``out * k`` channels (one per
    output channel and kernel column) and the sum of the k column slices, each shifted by its
    column: the same arithmetic, but oneDNN's direct 9x9 kernel costs as much for 1 or 3 output
    channels as for 16 (it is bound by gathering the 81 taps), and together the two output convs
    were a quarter of the network's time. This way they take half (3 channels) and a sixth (1
    channel) of it. The sum accumulates in fp32. Training and GPUs use the plain convolution."""
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return conv(x)
    out_ch, in_ch, kh, kw = conv.weight.shape
    columns = conv.weight.permute(0, 3, 1, 2).reshape(out_ch * kw, in_ch, kh, 1)
    y = F.conv2d(x, columns)
    y = y.view(y.shape[0], out_ch, kw, y.shape[-2], y.shape[-1])
    width = y.shape[-1] - kw + 1
    total = y[:, :, 0, :, :width].float()
    for k in range(1, kw):
        total = total + y[:, :, k, :, k:k + width]
    if conv.bias is not None:
        total = total + conv.bias.float().view(1, -1, 1, 1)
    return total.to(x.dtype)


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


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

STORAGE = ("fp32", "fp16", "int8")


def pack_state(state: dict[str, torch.Tensor], storage: str = "fp16") -> dict:
    """A state dict as a file stores it: ``state_dict`` (and ``scales`` for int8).

    fp16 halves the bytes; its outputs differ from fp32 weights by under one grey level. int8
    quarters them (the shipped per-preset networks: nine in the space of three at fp16): each
    convolution weight is rounded per output channel to 127 steps of that channel's largest
    magnitude, one fp32 scale per channel; everything else (biases, norm scales/shifts) stays fp16."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}, got {storage!r}")
    out, scales = {}, {}
    for k, v in state.items():
        v = v.detach().float().cpu()
        if storage == "int8" and v.ndim == 4:  # conv weights: out, in, kh, kw
            scale = v.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0
            out[k] = (v / scale[:, None, None, None]).round().clamp(-127, 127).to(torch.int8)
            scales[k] = scale
        else:
            out[k] = v if storage == "fp32" else v.half()
    return {"state_dict": out, **({"scales": scales} if scales else {})}


def unpack_state(record: dict, source: str) -> dict[str, torch.Tensor]:
    """``pack_state``'s inverse: fp32 tensors; an int8 tensor without a fitting scale is a WeightsError."""
    state, scales = record["state_dict"], record.get("scales", {})
    if not isinstance(scales, dict):
        raise WeightsError(f"{source}: 'scales' must map weight names to tensors")
    out = {}
    for k, v in state.items():
        if not torch.is_tensor(v):
            raise WeightsError(f"{source}: {k} is not a tensor")
        if v.dtype == torch.int8:
            scale = scales.get(k)
            if not torch.is_tensor(scale) or v.ndim < 1 or scale.shape != (v.shape[0],):
                raise WeightsError(f"{source}: {k} is stored as int8 but has no per-channel scale of shape "
                                   f"({v.shape[0] if v.ndim else '?'},)")
            out[k] = v.float() * scale.float().view(-1, *([1] * (v.ndim - 1)))
        else:
            out[k] = v.float()
    return out


def network_record(net: StyleNetwork, styles: Sequence[str], *, storage: str = "fp16") -> dict:
    """What ``save_network`` writes: plain data plus tensors (see ``pack_state`` for ``storage``)."""
    if len(styles) != net.n_styles or len(set(styles)) != len(styles):
        raise ValueError(f"need {net.n_styles} distinct style names, got {list(styles)}")
    return {"format": FORMAT, "styles": list(styles), "config": asdict(net.config),
            **pack_state(net.state_dict(), storage)}


def save_network(net: StyleNetwork, styles: Sequence[str], path: str, *, storage: str = "fp16") -> None:
    from stylebatch.io import storage as _storage

    buf = io.BytesIO()
    torch.save(network_record(net, styles, storage=storage), buf)
    _storage.write_bytes(path, buf.getvalue())  # atomic


def network_from_record(record: dict, source: str) -> tuple[StyleNetwork, list[str]]:
    """Build the network a file describes; anything that does not fit raises WeightsError."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise WeightsError(f"{source}: not a stylebatch style network (format {got!r}, expected {FORMAT!r})")
    styles, config, state = record.get("styles"), record.get("config"), record.get("state_dict")
    if not (isinstance(styles, list) and styles and all(isinstance(s, str) for s in styles)):
        raise WeightsError(f"{source}: 'styles' must be a non-empty list of names, got {styles!r}")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise WeightsError(f"{source}: missing 'config' or 'state_dict'")
    try:
        net = StyleNetwork(len(styles), NetworkConfig(**config))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: bad network config {config!r}: {exc}") from exc
    state = unpack_state(record, source)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise WeightsError(f"{source}: state_dict does not fit the network (missing {missing[:3]}, "
                           f"unexpected {extra[:3]})")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise WeightsError(f"{source}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    net.load_state_dict(state)
    return net.eval(), list(styles)


def load_network(path: str) -> tuple[StyleNetwork, list[str]]:
    return network_from_record(load_weights_record(path), path)


def load_network_styles(path: str) -> list[str]:
    """The style names a network file holds (the whole file is validated)."""
    return load_network(path)[1]


# ---------------------------------------------------------------------------------------------
# Stylizer
# ---------------------------------------------------------------------------------------------

class NetworkStylizer:
    """Stylize with trained networks: a style names its network file (``style.network``, an opaque
    reference read with ``read_bytes``; a local path by default) and its name inside it
    (``style.network_style``). Each file is loaded once and kept (LRU of ``cache_size``: every
    preset has its own file, so a catalog run over all nine keeps all nine, ~7 MB each)."""

    def __init__(self, *, device: str = "auto", precision: str = "auto",
                 read_bytes: Optional[Callable[[str], bytes]] = None, cache_size: int = 16, max_batch: int = 8):
        self.device = runtime.pick_device(device)
        self.precision = runtime.pick_precision(precision, self.device)
        self.read_bytes = read_bytes or _read_network_file
        self.cache_size = cache_size
        self.max_batch = max_batch
        self._loaded: "collections.OrderedDict[str, tuple[StyleNetwork, list[str]]]" = collections.OrderedDict()

    def network(self, ref: str) -> tuple[StyleNetwork, list[str]]:
        if ref not in self._loaded:
            net, styles = network_from_record(load_weights_bytes(self.read_bytes(ref), ref), ref)
            # bf16 runs on bf16 weights (no autocast: its per-call weight casts cost a third of
            # the time on CPU); fp16 keeps fp32 weights under autocast, as fp16 instance-norm
            # scales can overflow.
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
            # Channels-last, as training runs it: on CPU the convolutions otherwise reorder every
            # input and output (bf16: 1.6 s against 0.95 s for 4 images at 512 px on a 2-core Xeon).
            net = net.to(self.device, dtype).to(memory_format=torch.channels_last)
            self._loaded[ref] = (net, styles)
            while len(self._loaded) > self.cache_size:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(ref)
        return self._loaded[ref]

    def style_index(self, style) -> tuple[StyleNetwork, int]:
        ref, name = getattr(style, "network", None), getattr(style, "network_style", None)
        if not ref:
            raise ValueError(f"style {getattr(style, 'name', style.key)!r} has no trained network")
        net, styles = self.network(ref)
        if name is None and len(styles) == 1:
            return net, 0
        if name not in styles:
            raise ValueError(f"network {ref} has no style {name!r}; it holds {', '.join(styles)}")
        return net, styles.index(name)

    @torch.inference_mode()
    def stylize(self, images: Sequence[np.ndarray], style, *, alpha: float = 1.0,
                preserve_color: bool = False) -> list[np.ndarray]:
        """Each HxWx3 uint8 image through the style's network. ``alpha`` blends the output with the
        photo in pixel space (1 = fully stylized, 0 = the photo); ``preserve_color`` keeps the
        photo's chrominance (applied before the blend)."""
        alpha = runtime.check_alpha(alpha)
        net, index = self.style_index(style)

        def run(x: torch.Tensor) -> torch.Tensor:
            with runtime.autocast(self.device, "fp32" if self.precision == "bf16" else self.precision):
                y = net(x.contiguous(memory_format=torch.channels_last),
                        torch.full((x.shape[0],), index, dtype=torch.long, device=self.device))
            y = y.float().clamp(0, 1)
            if preserve_color:
                y = runtime.keep_content_color(y, x)
            return alpha * y + (1.0 - alpha) * x if alpha < 1.0 else y

        return runtime.map_in_batches(images, self.device, self.max_batch, run)


def _read_network_file(path: str) -> bytes:
    return read_weights_file(path, "network file")
