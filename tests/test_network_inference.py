"""Stylizing with style networks: the CPU output-conv kernel, the stylizer, the registry and catalog
entries that name a network, frames, and the shipped presets' networks."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from stylebatch.models import registry
from stylebatch.models.checkpoints import WeightsError
from stylebatch.models.network_file import load_network
from stylebatch.models.network_kernels import output_conv
from stylebatch.models.network_stylizer import NetworkStylizer
from stylebatch.styles import catalog, presets
from tests.helpers import photo
from tests.networks import frame_gap, stationary, tiny_network_file


@pytest.mark.parametrize("out_channels", [1, 3])
def test_the_output_conv_by_columns_computes_the_plain_convolution(out_channels):
    torch.manual_seed(out_channels)
    conv = torch.nn.Conv2d(8, out_channels, 9)
    x = torch.randn(2, 8, 29, 37).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        plain = conv(x)
        assert torch.allclose(output_conv(conv, x), plain, atol=1e-5)   # same arithmetic, fp32
        low = copy.deepcopy(conv).to(torch.bfloat16)
        plain_bf16, columns_bf16 = low(x.bfloat16()).float(), output_conv(low, x.bfloat16()).float()
        assert columns_bf16.dtype == torch.float32 and columns_bf16.shape == plain.shape
        # bf16: as far from fp32 as the plain bf16 convolution is, within a few bf16 steps
        scale = float(plain.abs().max())
        assert float((columns_bf16 - plain).abs().max()) < 4 * max(float((plain_bf16 - plain).abs().max()), 1e-2 * scale)
    with torch.enable_grad():  # training takes the plain convolution (and its gradient)
        y = output_conv(conv, x.requires_grad_())
        y.sum().backward()
        assert x.grad is not None and torch.allclose(y, plain, atol=1e-5)


# -- the stylizer ------------------------------------------------------------------------------

def _style(path, name="a"):
    return catalog.with_network(catalog.resolve_style("ink"), str(path), name)


def test_stylizer_keeps_sizes_and_styles_differ(tmp_path):
    path = tiny_network_file(tmp_path / "n.pt")
    model = NetworkStylizer(device="cpu", precision="fp32")
    imgs = [photo(37, 53, 1), photo(64, 48, 2), photo(37, 53, 3)]
    outs_a = model.stylize(imgs, _style(path, "a"))
    outs_b = model.stylize(imgs, _style(path, "b"))
    assert [o.shape for o in outs_a] == [i.shape for i in imgs]
    assert all(o.dtype == np.uint8 for o in outs_a)
    assert np.abs(outs_a[0].astype(int) - outs_b[0].astype(int)).mean() > 0.5  # own parameters per style
    with pytest.raises(ValueError, match="has no style 'c'"):
        model.stylize(imgs[:1], _style(path, "c"))


def test_the_stylizer_runs_channels_last_and_gives_the_networks_own_output(tmp_path):
    """Inference runs channels-last (no reorder around each conv, no copy around each norm) and,
    for a batch of one style, lets group_norm apply the style's scale/shift: the same pixels as the
    network run as training runs it (contiguous, a separate multiply-add per norm)."""
    path = tiny_network_file(tmp_path / "n.pt")
    img = photo(48, 64, 4)
    out = NetworkStylizer(device="cpu", precision="fp32").stylize([img], _style(path, "b"))[0]
    net, _ = load_network(str(path))
    with torch.enable_grad():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        plain = net(x, torch.tensor([1])).detach().clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(out.astype(float) - plain).max() <= 1.0


def test_alpha_blends_with_the_photo_and_preserve_color_keeps_chroma(tmp_path):
    path = tiny_network_file(tmp_path / "n.pt")
    model = NetworkStylizer(device="cpu", precision="fp32")
    img = photo(40, 40, 5)
    assert np.array_equal(model.stylize([img], _style(path), alpha=0.0)[0], img)
    full = model.stylize([img], _style(path))[0].astype(float)
    half = model.stylize([img], _style(path), alpha=0.5)[0].astype(float)
    assert np.abs(half - (full + img) / 2).max() <= 1.0
    kept = model.stylize([img], _style(path), preserve_color=True)[0].astype(float)
    w = np.array([0.299, 0.587, 0.114])
    # Chroma (colour minus luma) comes from the photo; the luma from the stylized output.
    chroma = lambda a: a - (a @ w)[..., None]  # noqa: E731
    unclipped = ((kept > 1) & (kept < 254)).all(-1)  # where the sum left [0, 255] it was clipped
    assert unclipped.mean() > 0.1
    assert np.abs(chroma(kept) - chroma(img.astype(float)))[unclipped].mean() < 2.0
    assert np.abs(kept @ w - full @ w)[unclipped].mean() < 2.0


def test_network_reads_through_the_given_reader(tmp_path):
    data = tiny_network_file(tmp_path / "n.pt").read_bytes()
    seen = []

    def read(ref):
        seen.append(ref)
        return data

    model = NetworkStylizer(device="cpu", precision="fp32", read_bytes=read)
    style = catalog.with_network(catalog.resolve_style("ink"), "s3://bucket/n.pt", "b")
    model.stylize([photo(20, 20, 1)], style)
    model.stylize([photo(20, 20, 2)], style)
    assert seen == ["s3://bucket/n.pt"]  # loaded once per actor


# -- registry ----------------------------------------------------------------------------------

class _Invert:
    def stylize(self, images, style, *, alpha=1.0, preserve_color=False):
        return [255 - im for im in images]


def test_a_new_model_kind_plugs_in_without_touching_the_pipeline(tmp_path, monkeypatch):
    """A kind registered first for 'fast' runs in the one-image command and in the pipeline's actor."""
    from stylebatch import single
    from stylebatch.pipeline.stages import StylizeStage

    kind = registry.ModelKind("invert", "fast", lambda style: True, lambda opts: _Invert(), lambda opts: None)
    monkeypatch.setattr(registry, "MODEL_KINDS", (kind, *registry.MODEL_KINDS))
    monkeypatch.setitem(registry.KINDS, "invert", kind)
    img = photo(24, 24, 1)
    src = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(img).save(src)
    info = single.stylize_one(str(src), str(tmp_path / "out.png"), style="ink")
    assert info["model"] == "invert"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), 255 - img)

    stage = StylizeStage(model_kind="invert", options=registry.ModelOptions(), styles={"ink": catalog.resolve_style("ink")})
    batch = {"image_id": np.array(["a"], object), "uri": np.array(["/a.png"], object),
             "output_uri": np.array(["/o/a.png"], object), "style": np.array(["ink"], object),
             "alpha": np.array([1.0]), "preserve_color": np.array([False]), "status": np.array(["pending"], object),
             "error": np.array([""], object), "image": np.array([img, None], object)[:1]}
    assert np.array_equal(stage(batch)["stylized"][0], 255 - img)


def test_kind_for_prefers_a_network_and_blends_fall_back_to_adain(tmp_path):
    path = tiny_network_file(tmp_path / "n.pt")
    with_net = catalog.with_network(catalog.resolve_style("ink"), str(path), "a")
    blend = catalog.StyleCatalog.from_dict({"styles": {"mix": {"images": ["ink", "pop"]}}}).resolve("mix")
    assert registry.kind_for("fast", with_net).name == "network"
    assert registry.kind_for("fast", blend).name == "adain"
    assert blend.network is None
    assert registry.kind_for("premium", with_net).name == "gatys"
    with pytest.raises(ValueError, match="unknown quality"):
        registry.kind_for("ultra", blend)
    assert registry.QUALITIES == ("fast", "premium")


def test_catalog_entry_names_a_network(tmp_path):
    path = tiny_network_file(tmp_path / "brand.pt", styles_=("brand",))
    cat = tmp_path / "styles.yaml"
    cat.write_text("styles:\n  brand: {image: ink, network: brand.pt}\n")
    style = catalog.StyleCatalog.load(str(cat)).resolve("brand")
    assert style.network == str(path)
    out = NetworkStylizer(device="cpu", precision="fp32").stylize([photo(20, 20, 1)], style)[0]
    assert out.shape == (20, 20, 3)
    with pytest.raises(catalog.StyleError, match="needs a single 'image'"):
        catalog.StyleCatalog.from_dict({"styles": {"x": {"images": ["ink", "pop"], "network": "n.pt"}}})


def test_plan_refuses_a_bad_network_before_any_work(tmp_path):
    from stylebatch.config import JobConfig
    from stylebatch.pipeline.plan import build_plan
    from tests.helpers import write_manifest, write_photo

    src = write_photo(tmp_path / "a.jpg", 20, 20, 1)
    man = write_manifest(tmp_path / "m.parquet", [{"image_id": "a", "uri": str(src)}])
    (tmp_path / "broken.pt").write_bytes(b"not a network")
    cat = tmp_path / "styles.yaml"
    cat.write_text("styles:\n  brand: {image: ink, network: broken.pt}\n")
    with pytest.raises(WeightsError, match="broken.pt"):
        build_plan(JobConfig(manifest=str(man), output=str(tmp_path / "out"), style="brand", style_catalog=str(cat)))
    assert not (tmp_path / "out").exists()
    good = tiny_network_file(tmp_path / "good.pt", styles_=("brand",))
    cat.write_text(f"styles:\n  brand: {{image: ink, network: {good.name}}}\n")
    plan = build_plan(JobConfig(manifest=str(man), output=str(tmp_path / "out"), style="brand",
                                style_catalog=str(cat)))
    assert plan.table.column("model").to_pylist() == ["network"]


# -- frames ------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["ink", "pop"])
def test_adain_outputs_have_no_frame(shipped_decoder, preset):
    from stylebatch.models import AdaINStylizer

    img = stationary(192, 256)
    assert frame_gap(img) < 1.5
    out = AdaINStylizer(device="cpu", precision="bf16").stylize([img], catalog.resolve_style(preset))[0]
    assert frame_gap(out) < 3.5, frame_gap(out)


# -- the shipped presets -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped_networks() -> str:
    folder = os.path.join(catalog.WEIGHTS_DIR, catalog.PRESET_NETWORK_DIR)
    if not os.path.isdir(folder):
        pytest.skip(f"no shipped preset networks under {folder} (see models/weights/README.md)")
    return folder


def test_every_preset_ships_its_own_network(shipped_networks):
    total = 0
    for name in presets.preset_names():
        style = catalog.resolve_style(name)
        assert (style.network, style.network_style) == (catalog.preset_network_ref(name), name)
        path = catalog.network_location(style.network)
        assert path == os.path.join(shipped_networks, f"{name}.pt")
        assert load_network(path)[1] == [name]
        assert registry.kind_for("fast", style).name == "network"
        total += os.path.getsize(path)
    assert total + os.path.getsize(catalog.base_network_path()) < 25e6



def test_builtin_network_refs_stay_inside_the_shipped_weights():
    with pytest.raises(catalog.StyleError, match="not a shipped weights file"):
        catalog.network_location("builtin:../../secrets.pt")
    assert catalog.network_location("s3://brand/styles/brand.pt") == "s3://brand/styles/brand.pt"


@pytest.mark.parametrize("preset", ["cyberpunk", "ukiyo", "pop"])
def test_shipped_network_moves_colours_towards_its_preset(shipped_networks, preset):
    """The output's mean colour and colour spread are closer to the preset's than to the photo's."""
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[::2, ::2])
    style = catalog.resolve_style(preset)
    model = NetworkStylizer(device="cpu", precision="fp32", read_bytes=catalog.read_network)
    out = model.stylize([img], style)[0]
    framed = model.stylize([stationary(192, 256)], style)[0]
    assert frame_gap(framed) < 3.5, frame_gap(framed)

    def stats(a):
        a = a.reshape(-1, 3).astype(np.float64)
        return np.concatenate([a.mean(0), a.std(0)])

    ref = stats(np.asarray(style.images[0]))
    assert np.linalg.norm(stats(out) - ref) < np.linalg.norm(stats(img) - ref)
