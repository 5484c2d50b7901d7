"""The style network's architecture: the identity start, droplets, channels-last, skip and palette."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from stylebatch.models import runtime
from stylebatch.models.checkpoints import WeightsError
from stylebatch.models.network import NetworkConfig, StyleNetwork, fill_droplets
from stylebatch.models.network_file import load_network, network_record, save_network
from tests.helpers import photo
from tests.networks import TINY


def test_an_untrained_network_is_the_identity():
    img = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        assert torch.equal(StyleNetwork(2, NetworkConfig(**TINY))(img, torch.tensor([1])), img)


def test_fill_droplets_fills_the_hole_from_around_it_and_leaves_the_rest():
    yy, xx = torch.meshgrid(torch.linspace(0, 0.1, 64), torch.linspace(0, 0.1, 64), indexing="ij")
    change = (0.2 + yy + xx).expand(1, 3, 64, 64).clone()
    change[..., 28:36, 28:36] = 0.9                      # what the droplet drew
    droplets = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    droplets[..., 15:17, 15:17] = True                   # full size 30:34, plus 4 half-size px of reach: 22:42
    out = fill_droplets(change, droplets)
    hole = torch.zeros(64, 64, dtype=torch.bool)
    hole[22:42, 22:42] = True
    assert torch.equal(out[..., ~hole], change[..., ~hole])
    assert (out[..., 28:36, 28:36] - (0.2 + 0.1)).abs().max() < 0.03   # the surroundings' level there
    assert torch.equal(fill_droplets(change, torch.zeros_like(droplets)), change)


def test_a_network_fills_in_a_droplet_only_where_it_shows():
    """A spike shared by every channel of the first upsampling layer (a planted droplet) changes the
    output only within its reach, and there the output takes its surroundings' level."""
    torch.manual_seed(0)
    net = StyleNetwork(1, NetworkConfig(**TINY))
    with torch.no_grad():
        net.out.weight.normal_(0, 0.02)
    net.up[0].conv.register_forward_hook(lambda m, i, o: o.index_put_(
        (torch.tensor([0]), torch.arange(o.shape[1]), torch.tensor([10]), torch.tensor([12])), torch.tensor(300.0)))
    off = StyleNetwork(1, replace(net.config, droplet_energy=0.0))
    off.load_state_dict(net.state_dict())
    off.up[0].conv._forward_hooks = net.up[0].conv._forward_hooks
    img = torch.full((1, 3, 48, 48), 0.5)
    with torch.no_grad():
        healed, drawn = net(img, torch.tensor([0])), off(img, torch.tensor([0]))
    changed = (healed - drawn).abs().amax(1)[0] > 1e-6
    rows, cols = changed.nonzero().T
    assert changed.any() and rows.min() >= 20 - 8 and rows.max() <= 21 + 8 and cols.min() >= 24 - 8 and cols.max() <= 25 + 8
    spot = (slice(None), slice(None), slice(19, 23), slice(23, 27))
    around = torch.cat([healed[..., 6:10, :].flatten(2), healed[..., -10:-6, :].flatten(2)], 2).mean(2)
    assert (drawn[spot].mean((2, 3)) - around).abs().max() > 5 * (healed[spot].mean((2, 3)) - around).abs().max()


def test_channels_last_training_layout_gives_the_same_outputs_and_gradients():
    # Training runs the network channels-last; the norm normalises a contiguous copy there (its CPU
    # backward is several times faster) and must hand back the same numbers in the caller's layout.
    torch.manual_seed(0)
    net = StyleNetwork(2, NetworkConfig(**TINY))
    with torch.no_grad():
        torch.nn.init.normal_(net.out.weight, std=0.05)
    x = torch.rand(2, 3, 24, 32)
    style = torch.tensor([0, 1])
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        net.zero_grad()
        net.to(memory_format=layout)
        xin = x.contiguous(memory_format=layout)
        y = net(xin, style)
        norm_out = net.down[0].norm(torch.rand(2, 8, 6, 6).contiguous(memory_format=layout), style)
        assert norm_out.is_contiguous(memory_format=layout)
        (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y.detach().clone(), {n: p.grad.clone() for n, p in net.named_parameters()}))
    (y0, g0), (y1, g1) = results
    assert torch.allclose(y0, y1, atol=1e-5)
    assert g0.keys() == g1.keys()
    # Relative to the largest gradient: a conv bias before a norm has a true gradient of zero, so
    # both layouts give rounding noise there.
    scale = max(float(g.abs().max()) for g in g0.values())
    for name in g0:
        assert torch.allclose(g0[name], g1[name], rtol=1e-4, atol=1e-6 * scale), name


def test_a_luma_skip_changes_brightness_only_and_needs_skip(tmp_path):
    """NetworkConfig.skip_luma: the skip conv has one output channel, added to R, G and B alike, so
    whatever it learns moves no pixel's colour (the photo's colour accents stay the trunk's)."""
    cfg = NetworkConfig(**{**TINY, "skip": True, "skip_luma": True})
    net = StyleNetwork(1, cfg).eval()
    assert net.skip_out.out_channels == 1
    x, s = torch.rand(1, 3, 40, 52), torch.tensor([0])
    with torch.no_grad():
        trunk_only = net(x, s)
        torch.nn.init.normal_(net.skip_out.weight, std=0.05)
        delta = net(x, s) - trunk_only
    assert float(delta.abs().max()) > 1e-3                               # the skip conv acts...
    assert torch.allclose(delta[:, 0], delta[:, 1], atol=1e-5) and torch.allclose(delta[:, 0], delta[:, 2], atol=1e-5)
    save_network(net, ["a"], str(tmp_path / "luma.pt"))
    loaded, _ = load_network(str(tmp_path / "luma.pt"))
    assert loaded.config.skip_luma and loaded.skip_out.out_channels == 1
    with pytest.raises(ValueError, match="skip_luma needs skip"):
        NetworkConfig(skip_luma=True)


def test_a_palette_network_recolours_each_sample_to_its_own_style():
    net = StyleNetwork(2, NetworkConfig(**TINY, palette=True))
    net.set_palette(0, (torch.tensor([0.8, 0.2, 0.2]), torch.eye(3) * 0.01))
    net.set_palette(1, (torch.tensor([0.1, 0.3, 0.7]), torch.eye(3) * 0.02))
    x = torch.from_numpy(photo(40, 48, 2)).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    with torch.no_grad():
        y = net(x, torch.tensor([1, 0]))
    assert torch.allclose(y[0].mean((1, 2)), torch.tensor([0.1, 0.3, 0.7]), atol=0.02)
    assert torch.allclose(y[1].mean((1, 2)), torch.tensor([0.8, 0.2, 0.2]), atol=0.02)
    plain = StyleNetwork(2, NetworkConfig(**TINY))
    assert not any("palette" in k for k in plain.state_dict())        # older files stay loadable as they are
    assert torch.equal(plain(x, torch.tensor([1, 0])), x)


def assert_palette_option_defaults_and_is_checked(tmp_path, field: str, default: float, bad: float) -> None:
    """A palette option of NetworkConfig: a file written before it existed loads with ``default``, it
    needs ``palette``, and a bad value in a file is a WeightsError naming the field."""
    old = network_record(StyleNetwork(1, NetworkConfig(**TINY, palette=True)), ["a"])
    del old["config"][field]
    torch.save(old, tmp_path / "old.pt")
    assert getattr(load_network(str(tmp_path / "old.pt"))[0].config, field) == default
    with pytest.raises(ValueError, match=f"{field} needs palette"):
        NetworkConfig(**{field: 0.5})
    broken = network_record(StyleNetwork(1, NetworkConfig(**TINY, palette=True)), ["a"])
    broken["config"][field] = bad
    torch.save(broken, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=f"{field} must be in"):
        load_network(str(tmp_path / "bad.pt"))


def _through_a_file(tmp_path, field: str, value: float, stats: tuple, x: torch.Tensor) -> torch.Tensor:
    """The output for ``x`` of an untrained palette network with ``field`` at ``value`` and the style
    colour statistics ``stats``, saved and loaded again (the setting travels in the file)."""
    net = StyleNetwork(1, NetworkConfig(**TINY, palette=True, **{field: value}))
    net.set_palette(0, stats)
    save_network(net, ["a"], str(tmp_path / f"{field}-{value}.pt"))
    loaded, _ = load_network(str(tmp_path / f"{field}-{value}.pt"))
    assert getattr(loaded.config, field) == value
    with torch.no_grad():
        return loaded(x, torch.zeros(1, dtype=torch.long))


def test_palette_luma_travels_in_the_file_and_keeps_the_photos_brightness_range(tmp_path):
    """NetworkConfig.palette_luma: the recolouring keeps that share of the photo's luminance variation
    (a pale, flat style no longer flattens faces); it is in the file's config, and a file written
    before it existed loads with 0 (the style's covariance alone)."""
    x = torch.from_numpy(photo(48, 64, 4)).permute(2, 0, 1)[None].float() / 255
    pale = (torch.tensor([0.85, 0.86, 0.75]), torch.eye(3) * 1e-4)
    luma = runtime.RGB_TO_Y.view(1, 3, 1, 1)
    spreads = {keep: float((_through_a_file(tmp_path, "palette_luma", keep, pale, x) * luma).sum(1).std())
               for keep in (0.0, 0.6)}
    photo_spread = float((x * luma).sum(1).std())
    assert spreads[0.0] < 0.1 * photo_spread                  # the style's flat covariance alone
    assert spreads[0.6] == pytest.approx(0.6 * photo_spread, rel=0.15)
    assert_palette_option_defaults_and_is_checked(tmp_path, "palette_luma", 0.0, bad=2.0)


def test_palette_strength_travels_in_the_file_and_recolours_part_of_the_way(tmp_path):
    """NetworkConfig.palette_strength: the recolouring moves the photo that share of the way to the
    style's colour mean (an untrained network is the identity after it); it is in the file's config,
    a file written before it existed loads with 1 (all the way), and a bad value names itself."""
    x = torch.from_numpy(photo(48, 64, 4)).permute(2, 0, 1)[None].float() / 255
    red = (torch.tensor([0.8, 0.2, 0.2]), torch.eye(3) * 0.01)
    means = {strength: _through_a_file(tmp_path, "palette_strength", strength, red, x)[0].mean((1, 2))
             for strength in (1.0, 0.5)}
    photo_mean = x[0].mean((1, 2))
    assert torch.allclose(means[1.0], red[0], atol=0.02)
    assert torch.allclose(means[0.5], (photo_mean + red[0]) / 2, atol=0.03)
    assert_palette_option_defaults_and_is_checked(tmp_path, "palette_strength", 1.0, bad=0.0)


def test_a_palette_network_stylizes_a_one_pixel_image():
    """One pixel has no covariance: it is recoloured as flat, not turned into NaN (the bad-input
    corpus has a 1x1 image, and a catalog row must not fail for it)."""
    net = StyleNetwork(1, NetworkConfig(**TINY, palette=True))
    net.set_palette(0, (torch.tensor([0.8, 0.2, 0.2]), torch.eye(3) * 0.01))
    with torch.no_grad():
        y = net(torch.full((1, 3, 1, 1), 0.5), torch.zeros(1, dtype=torch.long))
    assert torch.isfinite(y).all()
    assert torch.allclose(y.flatten(), torch.tensor([0.8, 0.2, 0.2]), atol=1e-3)
