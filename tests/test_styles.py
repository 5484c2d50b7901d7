import itertools
import json
import os

import numpy as np
import pytest
from PIL import Image

from stylebatch.styles import presets
from stylebatch.styles.presets import PRESET_DESCRIPTIONS, UnknownPreset, preset_image
from stylebatch.styles.catalog import (
    ResolvedStyle, StyleCatalog, StyleError, available_styles, list_styles, resolve_style,
    style_from_image, style_key,
)

PRESETS = presets.preset_names()


def _colour_hist(img: np.ndarray, bins: int = 4) -> np.ndarray:
    q = (img.astype(np.int64) * bins) // 256
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    h = np.bincount(idx.ravel(), minlength=bins**3).astype(np.float64)
    return h / h.sum()


def _pool(g: np.ndarray, k: int) -> np.ndarray:
    h, w = g.shape
    return g[: h // k * k, : w // k * k].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def _texture(img: np.ndarray) -> np.ndarray:
    """Mean horizontal and vertical gradient energy of luminance at 3 scales."""
    g = img.astype(np.float64).mean(axis=2) / 255.0
    out = []
    for k in (1, 4, 16):
        p = _pool(g, k) if k > 1 else g
        out += [np.abs(np.diff(p, axis=1)).mean(), np.abs(np.diff(p, axis=0)).mean()]
    return np.array(out)


def _png(path, arr: np.ndarray) -> str:
    Image.fromarray(arr).save(path, format="PNG")
    return str(path)


@pytest.fixture(scope="module")
def preset_pixels():
    return {n: preset_image(n) for n in PRESETS}


def test_catalogue_of_presets_is_described():
    assert "cyberpunk" in PRESETS
    assert len(PRESETS) >= 7
    assert set(PRESET_DESCRIPTIONS) == set(PRESETS)
    assert all(len(PRESET_DESCRIPTIONS[n]) > 20 for n in PRESETS)


def test_presets_are_512_rgb_uint8_and_deterministic(preset_pixels):
    for name, img in preset_pixels.items():
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8, name
    # Regenerate from scratch (bypassing the per-process cache): fixed seeds
    # must give identical pixels.
    presets._preset_cached.cache_clear()
    for name, img in preset_pixels.items():
        assert np.array_equal(preset_image(name), img), name


# sha256 of each preset's pixels: the shipped network was trained on exactly these images, so a
# change to the drawing code must be deliberate (update these and retrain, models/weights/README.md).
PRESET_HASHES = {
    "cyberpunk": "2ba1969f36e1c02bdb5276efe8f153eede57f36481077606c4138de74adb6b9b",
    "impressionist": "3318d21bd7114e78374daf55de9e5285b2c5caec02eb5ab07f7b792a22fd0e44",
    "ink": "06da14137af6e2b9c8a28f471cd8bf5722b80ab483210606f2c3569420808aeb",
    "mosaic": "79df70ddabc5f634410b66ebe72be0751574f8c71ffbc8f2c519e8f528f337c9",
    "pop": "4a931ed1cc730d03b8a3e5d229b5b6aca56445dbc9468b6e4e271cf4c698e84f",
    "stained_glass": "974ffaca926a081202dd012fb3e09c7d26049e2f43db5d86707823696e4f24c0",
    "sunset_synthwave": "fca727a858dc01939a29fcf155fdd5459f8bb5a70c04737f5e37da2ad67f50ac",
    "ukiyo": "1162e40693f162d181e175774126bdcf0d9761ad8b774f48c11df1ddb845a076",
    "watercolor": "ba675865803382e357a7183a353999b81cc04f29a6079f7e063c621ddde01736",
}


def test_preset_pixels_are_pinned(preset_pixels):
    import hashlib

    assert set(PRESET_HASHES) == set(PRESETS)
    for name, img in preset_pixels.items():
        assert hashlib.sha256(img.tobytes()).hexdigest() == PRESET_HASHES[name], name
    with pytest.raises(UnknownPreset, match="unknown preset 'nope'; built-in presets: cyberpunk"):
        preset_image("nope")


def test_preset_image_returns_independent_copies():
    a = preset_image("mosaic")
    a[:] = 0
    assert preset_image("mosaic").max() > 0


def test_presets_are_rich_in_texture(preset_pixels):
    for name, img in preset_pixels.items():
        tex = _texture(img)
        # AdaIN transfers feature statistics: flat colour would carry no style.
        assert img.std(axis=(0, 1)).mean() > 25, name
        assert tex[:2].mean() > 0.006, (name, tex)  # fine scale
        assert tex[2:4].mean() > 0.01, (name, tex)  # mid scale


def test_presets_pairwise_differ_in_palette_and_texture(preset_pixels):
    hists = {n: _colour_hist(img) for n, img in preset_pixels.items()}
    tex = {n: np.log(_texture(img)) for n, img in preset_pixels.items()}
    for a, b in itertools.combinations(PRESETS, 2):
        tv = 0.5 * np.abs(hists[a] - hists[b]).sum()
        assert tv > 0.3, f"{a} vs {b}: colour histograms too similar ({tv:.2f})"
        # At least one directional/scale gradient energy differs by > 35%.
        dt = np.abs(tex[a] - tex[b]).max()
        assert dt > 0.3, f"{a} vs {b}: texture statistics too similar ({dt:.2f})"


def test_cyberpunk_is_dark_with_neon_magenta_and_cyan(preset_pixels):
    img = preset_pixels["cyberpunk"].astype(np.int64)
    lum = img @ np.array([0.299, 0.587, 0.114])
    assert lum.mean() < 80
    magenta = (img[..., 0] > 200) & (img[..., 2] > 180) & (img[..., 1] < 120)
    cyan = (img[..., 1] > 200) & (img[..., 2] > 200) & (img[..., 0] < 120)
    assert magenta.mean() > 0.02 and cyan.mean() > 0.003


def test_ink_is_near_monochrome_and_ukiyo_is_blue(preset_pixels):
    ink = preset_pixels["ink"].astype(np.int64)
    assert np.abs(ink[..., 0] - ink[..., 2]).mean() < 20  # greys on warm paper
    assert (ink.sum(-1) < 120).mean() > 0.03  # real black ink present
    ukiyo = preset_pixels["ukiyo"].astype(np.int64)
    assert ((ukiyo[..., 2] - ukiyo[..., 0]) > 60).mean() > 0.25  # indigo sea


def test_builtin_resolution_and_keys():
    a = resolve_style("cyberpunk")
    assert isinstance(a, ResolvedStyle)
    assert a.name == "cyberpunk" and a.weights == (1.0,) and a.alpha == 1.0
    assert a.preserve_color is False and a.quality == "fast"
    assert np.array_equal(a.images[0], preset_image("cyberpunk"))
    assert not a.images[0].flags.writeable
    assert resolve_style("cyberpunk").key == a.key == style_key([preset_image("cyberpunk")], [1.0])
    keys = {resolve_style(n).key for n in PRESETS}
    assert len(keys) == len(PRESETS)
    # Equality/hash go by key and settings (arrays would make them ambiguous).
    assert resolve_style("cyberpunk") == a and len({a, resolve_style("cyberpunk"), resolve_style("ink")}) == 2
    with pytest.raises(StyleError, match="alpha"):
        ResolvedStyle("x", a.key, a.images, a.weights, alpha=2.0)
    with pytest.raises(StyleError, match="quality"):
        ResolvedStyle("x", a.key, a.images, a.weights, quality="best")


def test_unknown_style_lists_every_available_name():
    with pytest.raises(StyleError) as exc:
        resolve_style("vaporwave")
    msg = str(exc.value)
    assert "'vaporwave'" in msg
    for name in available_styles():
        assert name in msg

    cat = StyleCatalog.from_dict({"styles": {"brand": {"image": "ink"}}})
    with pytest.raises(StyleError) as exc:
        resolve_style("nope", catalog=cat)
    assert "brand" in str(exc.value) and "cyberpunk" in str(exc.value)


@pytest.mark.parametrize("uri", ["http://example.com/style.jpg", "https://example.com/a.png", "gs://bucket/a.jpg"])
def test_non_local_non_s3_style_uris_are_refused(uri):
    with pytest.raises(StyleError) as exc:
        resolve_style(uri)
    scheme = uri.split("://")[0]
    assert f"unsupported URI scheme '{scheme}'" in str(exc.value)
    assert "s3://" in str(exc.value) and "file://" in str(exc.value)


def test_local_image_resolves_to_its_pixels(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = _png(tmp_path / "ref.png", arr)
    s = resolve_style(path)
    assert s.name == path and len(s.images) == 1 and s.weights == (1.0,)
    assert np.array_equal(s.images[0], arr)
    # Key is a content hash: same pixels via file:// and style_from_image agree.
    assert resolve_style("file://" + path).key == s.key == style_from_image(path).key
    other = _png(tmp_path / "other.png", 255 - arr)
    assert resolve_style(other).key != s.key
    assert s.key not in {resolve_style(n).key for n in PRESETS}


def test_large_style_images_are_downscaled(tmp_path):
    arr = np.zeros((600, 1500, 3), np.uint8)
    arr[:, :750] = (255, 0, 0)
    arr[:, 750:] = (0, 0, 255)
    s = style_from_image(_png(tmp_path / "wide.png", arr))
    assert s.images[0].shape == (410, 1024, 3)
    assert tuple(s.images[0][200, 100]) == (255, 0, 0) and tuple(s.images[0][200, 900]) == (0, 0, 255)


def test_missing_style_image_is_a_style_error(tmp_path):
    with pytest.raises(StyleError, match="cannot read style image"):
        resolve_style(str(tmp_path / "nope.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(StyleError, match="cannot decode style image"):
        resolve_style(str(bad))


YAML_CATALOG = """
styles:
  brand:
    image: refs/brand.png        # relative to the catalog file
    alpha: 0.8
    preserve_color: true
    quality: premium
    description: Our brand look
  blend:
    images: [{uri: cyberpunk, weight: 0.7}, {uri: ukiyo, weight: 0.3}]
  blend_raw:
    images:
      - {uri: mosaic, weight: 2}
      - {uri: pop, weight: 6}
  equal: {images: [ink, watercolor]}
  short: impressionist
  cyberpunk: {image: cyberpunk, alpha: 0.5}
"""


@pytest.fixture()
def catalog_file(tmp_path):
    (tmp_path / "refs").mkdir()
    arr = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3))
    _png(tmp_path / "refs" / "brand.png", arr)
    path = tmp_path / "styles.yaml"
    path.write_text(YAML_CATALOG)
    return str(path), arr


def test_yaml_catalog_resolution(catalog_file):
    path, arr = catalog_file
    cat = StyleCatalog.load(path)
    assert cat.names() == ["blend", "blend_raw", "brand", "cyberpunk", "equal", "short"]

    brand = cat.resolve("brand")
    assert np.array_equal(brand.images[0], arr)
    assert (brand.alpha, brand.preserve_color, brand.quality) == (0.8, True, "premium")

    blend = cat.resolve("blend")
    assert blend.weights == pytest.approx((0.7, 0.3))
    assert np.array_equal(blend.images[0], preset_image("cyberpunk"))
    assert np.array_equal(blend.images[1], preset_image("ukiyo"))
    assert cat.resolve("blend_raw").weights == pytest.approx((0.25, 0.75))
    assert cat.resolve("equal").weights == pytest.approx((0.5, 0.5))
    assert cat.resolve("short").key == resolve_style("impressionist").key

    # The catalog may retune a preset; the key covers pixels+weights only.
    tuned = resolve_style("cyberpunk", catalog=cat)
    assert tuned.alpha == 0.5 and tuned.key == resolve_style("cyberpunk").key
    assert resolve_style("brand", catalog=cat).key == brand.key
    assert len({cat.resolve(n).key for n in ("blend", "blend_raw", "equal", "brand")}) == 4

    assert available_styles(cat) == sorted(set(PRESETS) | set(cat.names()))
    listed = {d["name"]: d for d in list_styles(cat)}
    assert listed["brand"]["source"] == "catalog" and listed["brand"]["description"] == "Our brand look"
    assert listed["cyberpunk"]["source"] == "catalog"
    assert listed["ukiyo"]["source"] == "builtin"
    assert listed["ukiyo"]["description"] == PRESET_DESCRIPTIONS["ukiyo"]
    assert all(d["source"] == "builtin" for d in list_styles())


def test_json_catalog(tmp_path):
    data = {"styles": {"j": {"images": [{"uri": "pop", "weight": 1}, {"uri": "ink", "weight": 3}], "alpha": 0.25}}}
    path = tmp_path / "styles.json"
    path.write_text(json.dumps(data))
    s = StyleCatalog.load(str(path)).resolve("j")
    assert s.weights == pytest.approx((0.25, 0.75)) and s.alpha == 0.25


@pytest.mark.parametrize(
    "entry, fragments",
    [
        ({"image": "ink", "alpha": 1.5}, ["'bad'", "alpha", "[0, 1]"]),
        ({"image": "ink", "alpha": "strong"}, ["'bad'", "alpha"]),
        ({"image": "ink", "quality": "ultra"}, ["'bad'", "quality", "'ultra'", "fast", "premium"]),
        ({"alpha": 0.5}, ["'bad'", "'image'", "'images'"]),
        ({"image": "ink", "images": ["pop"]}, ["'bad'", "not both"]),
        ({"image": "http://example.com/x.jpg"}, ["'bad'", "image", "unsupported URI scheme 'http'"]),
        ({"images": [{"uri": "ink"}, {"uri": "ftp://h/x.jpg"}]}, ["'bad'", "images[1]", "'ftp'"]),
        ({"images": [{"uri": "ink", "weight": -1}]}, ["'bad'", "images[0]", "weight"]),
        ({"images": [{"weight": 1}]}, ["'bad'", "images[0]", "'uri'"]),
        ({"images": []}, ["'bad'", "images", "non-empty"]),
        ({"image": "ink", "apha": 0.3}, ["'bad'", "apha"]),
        ({"image": "ink", "preserve_color": "maybe"}, ["'bad'", "preserve_color"]),
    ],
)
def test_catalog_validation_names_style_and_field(entry, fragments):
    with pytest.raises(StyleError) as exc:
        StyleCatalog.from_dict({"styles": {"bad": entry, "good": {"image": "ink"}}})
    for frag in fragments:
        assert frag in str(exc.value)


def test_catalog_structure_errors(tmp_path):
    with pytest.raises(StyleError, match="styles"):
        StyleCatalog.loads("brand: {image: ink}")
    with pytest.raises(StyleError, match="invalid name"):
        StyleCatalog.from_dict({"styles": {"has space": {"image": "ink"}}})
    with pytest.raises(StyleError, match="cannot read style catalog"):
        StyleCatalog.load(str(tmp_path / "missing.yaml"))
    cat = StyleCatalog.from_dict({"styles": {"x": {"image": str(tmp_path / "gone.png")}}})
    with pytest.raises(StyleError, match="style 'x'.*cannot read style image"):
        cat.resolve("x")


def test_catalog_yaml_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    text = f'styles: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(StyleError, match="not valid YAML"):
        StyleCatalog.loads(text)
    assert not marker.exists()
    assert not os.path.exists(marker)
