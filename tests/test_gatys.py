"""GatysStylizer behaviour on small generated images (CPU, fp32 so results are bit-reproducible)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stylebatch.models import GatysStylizer, registry, runtime
from stylebatch.models import gatys as gatys_mod
from stylebatch.models.adain import StyleSpec
from stylebatch.models.gatys import CONTENT_LAYER, GatysObjective, gatys_loss

SIZE = 48


def _content(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """Mid-tone gradient with a disc and a bar: structure for the content loss, no clipped colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 60 * xx / w, 90 + 50 * yy / h, 140 - 40 * xx / w], -1)
    disc = (yy - h * 0.55) ** 2 + (xx - w * 0.4) ** 2 < (min(h, w) * 0.25) ** 2
    img[disc] = (170, 120, 90)
    img[int(h * 0.15):int(h * 0.25), int(w * 0.2):int(w * 0.85)] = (60, 110, 80)
    return img.clip(0, 255).astype(np.uint8)


def _stripes(seed: int = 1) -> np.ndarray:
    """Saturated red/yellow diagonal stripes with noise: a strong, colourful style."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    band = ((xx + yy) // 6) % 2 == 0
    img = np.where(band[..., None], [220, 40, 30], [240, 210, 40]).astype(np.float32)
    return (img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)


def _blue_checks(seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    cell = ((yy // 8) + (xx // 8)) % 2 == 0
    img = np.where(cell[..., None], [20, 60, 200], [30, 170, 140]).astype(np.float32)
    return (img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)


STRIPES = StyleSpec("test-stripes", (_stripes(),), (1.0,))
CHECKS = StyleSpec("test-checks", (_blue_checks(),), (1.0,))


@pytest.fixture(scope="module")
def gatys():
    # One thread: tiny images gain nothing from two, and on a busy machine spinning OpenMP workers
    # waiting for each other make every VGG pass tens of times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield GatysStylizer(device="cpu", precision="fp32")
    torch.set_num_threads(threads)


def _score(model: GatysStylizer, content: np.ndarray, out: np.ndarray, style) -> float:
    """The default objective of an output image, scored the same way for every candidate."""
    grams = model.style_grams(style)
    x = runtime.to_tensor([out], model.device)
    with torch.no_grad():
        cf = model.encoder(runtime.to_tensor([content], model.device), [CONTENT_LAYER])[CONTENT_LAYER]
        return float(gatys_loss(model.encoder, x, cf, grams, GatysObjective())[0])


def _fast(**kw):
    return dict(dict(init="content", coarse_to_fine=False), **kw)


def test_loss_decreases_with_iterations(gatys):
    content = _content()
    losses = []
    outs = {n: gatys.stylize([content], STRIPES, iterations=n, **_fast(callback=(
        (lambda p: losses.append(p.loss)) if n == 12 else None)))[0] for n in (0, 4, 12)}
    # The optimiser's own trace goes down (line-search trial points may sit above the previous
    # iterate, so compare ends), and so does the score of the returned images.
    assert 12 <= len(losses) <= 15
    assert losses[-1] < 0.5 * losses[0]
    scores = [_score(gatys, content, outs[n], STRIPES) for n in (0, 4, 12)]
    assert scores[0] > scores[1] > scores[2], scores
    np.testing.assert_array_equal(outs[0], content)  # zero iterations from the content: the content


def test_output_sizes_match_odd_input_sizes(gatys, monkeypatch):
    # Let tiny images have a coarse level too, so the odd-size resampling path is exercised.
    monkeypatch.setattr(gatys_mod, "MIN_COARSE_SIDE", 16)
    images = [_content(37, 53), _content(53, 37), _content(33, 33)]
    assert gatys.levels(37, 53) == [(19, 27), (37, 53)]
    out = gatys.stylize(images, STRIPES, iterations=2, coarse_iterations=2, init="content", coarse_to_fine=True)
    assert [o.shape for o in out] == [im.shape for im in images]
    assert all(o.dtype == np.uint8 for o in out)


def test_multi_style_weights(gatys):
    content = _content(40, 40)
    run = lambda style: gatys.stylize([content], style, iterations=6, **_fast())[0]  # noqa: E731
    stripes, checks = run(STRIPES), run(CHECKS)
    both = (_stripes(), _blue_checks())
    # Weight (1, 0) is exactly the first style alone; weights are normalised, so (0, 3) is the second.
    np.testing.assert_array_equal(run(StyleSpec("test-mix-1-0", both, (1.0, 0.0))), stripes)
    np.testing.assert_array_equal(run(StyleSpec("test-mix-0-3", both, (0.0, 3.0))), checks)
    mixed = run(StyleSpec("test-mix-half", both, (0.5, 0.5)))
    differs = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean() > 1.0  # noqa: E731
    assert differs(mixed, stripes) and differs(mixed, checks)
    # The blend's target is the weighted sum of the Gram matrices.
    g_mix = gatys.style_grams(StyleSpec("test-mix-half", both, (0.5, 0.5)))
    g_a, g_b = gatys.style_grams(STRIPES), gatys.style_grams(CHECKS)
    for layer in g_mix:
        torch.testing.assert_close(g_mix[layer], 0.5 * g_a[layer] + 0.5 * g_b[layer])


def _cbcr(img: np.ndarray) -> np.ndarray:
    rgb = img.astype(np.float64)
    y = rgb @ [0.299, 0.587, 0.114]
    return np.stack([(rgb[..., 2] - y) * 0.564, (rgb[..., 0] - y) * 0.713], -1)


def test_preserve_color_keeps_content_chroma(gatys):
    content = _content()
    plain = gatys.stylize([content], STRIPES, iterations=8, **_fast())[0]
    kept = gatys.stylize([content], STRIPES, iterations=8, **_fast(preserve_color=True))[0]
    drift_plain = np.abs(_cbcr(plain) - _cbcr(content)).mean()
    drift_kept = np.abs(_cbcr(kept) - _cbcr(content)).mean()
    assert drift_plain > 8.0, drift_plain      # the red/yellow style really recolours
    assert drift_kept < 2.0, drift_kept        # only rounding and clipping remain
    # ... while the luminance is still the stylized one.
    luma = lambda im: im.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    assert np.abs(luma(kept) - luma(plain)).mean() < 3.0


def test_style_targets_are_cached_per_key(gatys):
    before = gatys.cache.misses
    first = gatys.style_grams(StyleSpec("test-cache-key", (_stripes(3),), (1.0,)))
    second = gatys.style_grams(StyleSpec("test-cache-key", (_stripes(3),), (1.0,)))
    assert gatys.cache.misses == before + 1
    assert first is second


@pytest.mark.parametrize("kwargs, name", [
    ({"init": "noise"}, "init"),
    ({"iterations": -1}, "iterations"),
    ({"iterations": 2.5}, "iterations"),
    ({"coarse_iterations": -3}, "coarse_iterations"),
    ({"alpha": 1.5}, "alpha"),
    ({"style_weight": -1.0}, "style_weight"),
])
def test_invalid_arguments_name_the_argument(gatys, kwargs, name):
    with pytest.raises(ValueError, match=name):
        gatys.stylize([_content(16, 16)], STRIPES, **kwargs)


def test_match_color_gives_the_target_mean_and_covariance():
    rng = np.random.default_rng(3)
    target = (rng.multivariate_normal([150, 60, 200], [[400, 150, 0], [150, 300, -80], [0, -80, 250]], 4096)
              .clip(0, 255).reshape(64, 64, 3).astype(np.uint8))
    mean, cov = runtime.color_stats([target])
    content = torch.from_numpy(_content(64, 64)).permute(2, 0, 1)[None].float() / 255.0
    out = runtime.match_color(content, (mean, cov))
    px = out[0].permute(1, 2, 0).reshape(-1, 3)
    assert torch.allclose(px.mean(0), mean, atol=2e-3)
    assert torch.allclose(torch.cov(px.T, correction=0), cov, atol=2e-3)
    # The map is affine and monotone in luminance: the photo's edges stay where they were.
    edges_in = (content[0, :, 1:] - content[0, :, :-1]).abs().sum(0) > 0.05
    edges_out = (out[0, :, 1:] - out[0, :, :-1]).abs().sum(0) > 0.01
    assert edges_out[edges_in].float().mean() > 0.99


def test_color_stats_weights_mix_the_images():
    red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    mean, cov = runtime.color_stats([red, blue], [3.0, 1.0])
    assert torch.allclose(mean, torch.tensor([0.75, 0.0, 0.25]))
    assert cov[0, 0] == pytest.approx(0.75 * 0.25, abs=1e-5) and cov[0, 2] == pytest.approx(-0.75 * 0.25, abs=1e-5)


def test_palette_init_starts_from_the_photo_in_the_style_colours(gatys, monkeypatch):
    monkeypatch.setattr(gatys, "palette_strength", 1.0)  # all the way (premium goes half-way: below)
    content = _content()
    start = runtime.to_images(gatys._initial(runtime.to_tensor([content], gatys.device), STRIPES, "palette"))[0]
    style_mean = _stripes().reshape(-1, 3).mean(0)
    assert np.abs(start.reshape(-1, 3).mean(0) - style_mean).max() < 6        # the style's palette
    assert np.abs(content.reshape(-1, 3).mean(0) - style_mean).max() > 60     # which the photo lacked
    out = gatys.stylize([content], STRIPES, iterations=0, init="palette", coarse_to_fine=False)[0]
    assert np.array_equal(out, start)                                         # it is what the optimiser gets


def test_palette_strength_goes_part_of_the_way():
    content = runtime.to_tensor([_content()], torch.device("cpu"))
    target = runtime.color_stats([_stripes()])
    full = runtime.match_color(content, target)
    half = runtime.match_color(content, target, strength=0.5)
    inside = (full > 0) & (full < 1)  # the blend is of the maps; clamping to [0, 1] comes after
    assert inside.float().mean() > 0.5
    assert torch.allclose(half[inside], (0.5 * (full + content))[inside], atol=1e-5)
    assert torch.equal(runtime.match_color(content, target, strength=0.0), content)
    with pytest.raises(ValueError, match="strength must be in"):
        runtime.match_color(content, target, strength=1.5)


def test_match_color_keep_luma_gives_back_part_of_the_photos_brightness_range():
    """A pale, flat target squeezes the photo's luminance; keep_luma gives back that share of the
    photo's own variation about the mean, leaving the target's mean brightness and mean colour."""
    content = runtime.to_tensor([_content(64, 64)], torch.device("cpu"))
    pale = np.full((32, 32, 3), (215, 220, 190), np.uint8)
    pale[::4] += 2                                            # a little spread: a covariance to match
    target = runtime.color_stats([pale])
    luma = runtime.RGB_TO_Y.view(1, 3, 1, 1)

    def luminance(x):
        return (x * luma).sum(1).flatten()

    squeezed, half = runtime.match_color(content, target), runtime.match_color(content, target, keep_luma=0.5)
    photo_std, squeezed_std, half_std = (float(luminance(x).std()) for x in (content, squeezed, half))
    assert squeezed_std < 0.2 * photo_std                      # what the flat palette does alone
    assert half_std == pytest.approx(0.5 * photo_std + 0.5 * squeezed_std, rel=0.1)
    assert float(luminance(half).mean()) == pytest.approx(float(luminance(squeezed).mean()), abs=0.01)
    assert torch.allclose(half.mean((0, 2, 3)), target[0], atol=0.02)
    with pytest.raises(ValueError, match="keep_luma must be in"):
        runtime.match_color(content, target, keep_luma=-0.1)


def test_premium_starts_half_way_to_the_style_palette():
    premium = registry.build("gatys", registry.ModelOptions(device="cpu", precision="fp32"))
    assert (premium.init, premium.coarse_to_fine, premium.palette_strength) == ("palette", False, 0.5)
    content = _content()
    photo = runtime.to_tensor([content], torch.device("cpu"))
    start = premium._initial(photo, STRIPES, premium.init)
    full = runtime.match_color(photo, runtime.color_stats(STRIPES.images, STRIPES.weights))
    inside = (full > 0) & (full < 1)
    assert torch.allclose(start[inside], (0.5 * (full + photo))[inside], atol=1e-5)
