"""Published checkpoints (fast_neural_style TransformerNet, CycleGAN ResnetGenerator) as model kinds."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from stylebatch.config import JobConfig
from stylebatch.models import registry
from stylebatch.models.checkpoints import WeightsError
from stylebatch.pipeline.plan import build_plan
from stylebatch.styles.catalog import StyleCatalog, StyleError, list_styles
from tests.helpers import photo, write_manifest, write_photo
from tests.published_checkpoints import write_checkpoint

KINDS = ("fast-neural-style", "cyclegan")


def _stylizer(kind):
    return registry.build(kind, registry.ModelOptions(device="cpu", precision="fp32"))


def _style(kind, path, name="s"):
    return StyleCatalog.from_dict({"styles": {name: {"model": kind, "weights": str(path)}}}).resolve(name)


def _reference_output(kind, net, img: np.ndarray) -> np.ndarray:
    """What the project's own inference computes from the reference module: its pixel range in and out."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = net(x * 255.0) / 255.0 if kind == "fast-neural-style" else (net(x * 2 - 1) + 1) / 2
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("small", [True, False], ids=["small", "full"])
def test_a_saved_checkpoint_runs_as_its_reference_does(tmp_path, kind, small):
    path = tmp_path / "net.pth"
    net = write_checkpoint(kind, path, small=small, seed=3)
    img = photo(48, 64, 1)  # sides a multiple of the stride: the reference runs it as it is
    out = _stylizer(kind).stylize([img], _style(kind, path))[0]
    assert out.shape == img.shape and out.dtype == np.uint8
    expected = _reference_output(kind, net, img)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert out.std() > 1.0 and not np.array_equal(out, img)  # a real, non-trivial output


@pytest.mark.parametrize("kind", KINDS)
def test_any_size_comes_back_at_its_own_size(tmp_path, kind):
    path = tmp_path / "net.pth"
    write_checkpoint(kind, path, small=True)
    stylizer = _stylizer(kind)
    for h, w in [(37, 53), (5, 7), (64, 30)]:
        out = stylizer.stylize([photo(h, w, 2)], _style(kind, path))[0]
        assert out.shape == (h, w, 3)


def test_old_files_with_instance_norm_running_stats_load(tmp_path):
    path = tmp_path / "candy.pth"
    net = write_checkpoint("fast-neural-style", path, small=True, stale_norm_keys=True)
    assert any(k.endswith("running_mean") for k in torch.load(path, weights_only=True))
    img = photo(32, 32, 5)
    out = _stylizer("fast-neural-style").stylize([img], _style("fast-neural-style", path))[0]
    assert np.abs(out.astype(int) - _reference_output("fast-neural-style", net, img).astype(int)).max() <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_and_preserve_color(tmp_path, kind):
    path = tmp_path / "net.pth"
    write_checkpoint(kind, path, small=True)
    stylizer, style, img = _stylizer(kind), _style(kind, path), photo(32, 48, 6)
    assert np.array_equal(stylizer.stylize([img], style, alpha=0.0)[0], img)
    full = stylizer.stylize([img], style)[0].astype(float)
    half = stylizer.stylize([img], style, alpha=0.5)[0].astype(float)
    assert np.abs(half - (full + img) / 2).max() <= 1.0
    kept = stylizer.stylize([img], style, preserve_color=True)[0].astype(float)

    def chroma(a):  # per-pixel colour with the brightness divided out
        return a / (a.sum(-1, keepdims=True) + 1)
    assert np.abs(chroma(kept) - chroma(img.astype(float))).mean() < np.abs(chroma(full) - chroma(img.astype(float))).mean()


def test_a_file_of_the_other_layout_is_refused_by_name(tmp_path):
    cyc, fns = tmp_path / "monet.pth", tmp_path / "candy.pth"
    write_checkpoint("cyclegan", cyc, small=True)
    write_checkpoint("fast-neural-style", fns, small=True)
    with pytest.raises(WeightsError, match=r"not a fast-neural-style checkpoint: it has no conv1\.conv2d\.weight"):
        _stylizer("fast-neural-style").network(str(cyc))
    with pytest.raises(WeightsError, match=r"not a cyclegan checkpoint: it has no model\.1\.weight"):
        _stylizer("cyclegan").network(str(fns))


def test_missing_keys_and_wrong_shapes_are_named(tmp_path):
    state = write_checkpoint("fast-neural-style", tmp_path / "a.pth", small=True).state_dict()
    del state["in5.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing in5\.bias"):
        _stylizer("fast-neural-style").network(str(tmp_path / "missing.pth"))
    state = write_checkpoint("cyclegan", tmp_path / "b.pth", small=True).state_dict()
    last = max((k for k in state if state[k].ndim == 4), key=lambda k: int(k.split(".")[1]))
    state[last] = torch.zeros(3, 8, 5, 5)  # a 5x5 output convolution where 7x7 belongs
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"model\.\d+\.weight has shape \(3, 8, 5, 5\), the architecture needs \(3, 8, 7, 7\)"):
        _stylizer("cyclegan").network(str(tmp_path / "shape.pth"))
    torch.save({"conv1.conv2d.weight": "not a tensor"}, tmp_path / "junk.pth")
    with pytest.raises(WeightsError):
        _stylizer("fast-neural-style").network(str(tmp_path / "junk.pth"))


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "net.pth"
    write_checkpoint("cyclegan", path, small=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        _stylizer("cyclegan").network(str(path))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    evil = _Evil()
    evil.target = str(tmp_path / "pwned")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv1.conv2d.weight": evil}, f)
    with pytest.raises(WeightsError, match="refused to load"):
        _stylizer("fast-neural-style").network(str(tmp_path / "evil.pth"))
    assert not (tmp_path / "pwned").exists()


def test_catalog_entries_name_published_kinds(tmp_path):
    cat = StyleCatalog.from_dict({"styles": {
        "candy": {"model": "fast-neural-style", "weights": "candy.pth", "alpha": 0.8},
        "monet": {"model": "cyclegan", "weights": "s3://models/style_monet.pth", "preserve_color": True},
        "sketch": {"image": "cyberpunk"},
    }}, base_dir=str(tmp_path))
    candy, monet = cat.entry("candy"), cat.entry("monet")
    assert (candy.model, candy.network, candy.alpha) == ("fast-neural-style", str(tmp_path / "candy.pth"), 0.8)
    assert (monet.model, monet.network, monet.preserve_color) == ("cyclegan", "s3://models/style_monet.pth", True)
    kinds = {r["name"]: r["model"] for r in list_styles(cat)}
    assert (kinds["candy"], kinds["monet"], kinds["sketch"], kinds["ink"]) == ("fast-neural-style", "cyclegan", "adain",
                                                                                 "network")
    for entry, message in [
        ({"model": "pix2pix", "weights": "x.pth"}, "field 'model' must be one of fast-neural-style, cyclegan"),
        ({"model": "cyclegan"}, "field 'weights'"),
        ({"weights": "x.pth"}, "field 'model' must be one of"),
        ({"model": "cyclegan", "weights": "x.pth", "network": "y.pt"}, "a published checkpoint goes in 'weights'"),
        ({"model": "cyclegan", "weights": "ftp://host/x.pth"}, "field 'weights'"),
        ({"alpha": 0.5}, "field 'image'"),
    ]:
        with pytest.raises(StyleError, match=message):
            StyleCatalog.from_dict({"styles": {"bad": entry}})


def test_the_plan_picks_each_kind_and_refuses_a_bad_file_before_any_work(tmp_path):
    write_checkpoint("fast-neural-style", tmp_path / "candy.pth", small=True)
    write_checkpoint("cyclegan", tmp_path / "monet.pth", small=True)
    (tmp_path / "cat.yaml").write_text(
        "styles:\n  candy: {model: fast-neural-style, weights: candy.pth}\n"
        "  monet: {model: cyclegan, weights: monet.pth}\n")
    rows = [{"image_id": f"p{i}", "uri": str(write_photo(tmp_path / f"p{i}.jpg", 32, 32, i)), "style": s, "quality": q}
            for i, (s, q) in enumerate([("candy", None), ("monet", None), ("monet", "premium"), ("ink", None)])]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    cfg = JobConfig(manifest=str(manifest), output=str(tmp_path / "out"), style_catalog=str(tmp_path / "cat.yaml"))
    table = build_plan(cfg).table.to_pylist()
    assert [r["model"] for r in table] == ["fast-neural-style", "cyclegan", "", "network"]
    assert "cannot run at quality 'premium'" in table[2]["plan_error"]
    # the candy file swapped for a CycleGAN one: refused on the driver, naming the file
    write_checkpoint("cyclegan", tmp_path / "candy.pth", small=True)
    with pytest.raises(WeightsError, match="candy.pth is not a fast-neural-style checkpoint"):
        build_plan(JobConfig(manifest=str(manifest), output=str(tmp_path / "out"),
                             style_catalog=str(tmp_path / "cat.yaml")))
