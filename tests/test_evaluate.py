"""tools.evaluate on synthetic held-out sets, and the scores of stylebatch.evaluation: scores,
summary, contact sheet, decoder choice, torch's thread count restored."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylebatch.evaluation import scores
from stylebatch.evaluation.scorer import Scorer, inner_margin
from stylebatch.reports import contact_sheet as sheets
from tools import datasets, evaluate
from tests.helpers import photo, write_photo

CONTENTS = datasets.HOLDOUT_PHOTOS[:2]
STYLES = datasets.HOLDOUT_STYLES[:2]


def _painting(h: int, w: int, seed: int) -> np.ndarray:
    """Saturated stripes: statistics far from the photos', so stylization has a gap to close."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = ((xx + yy * rng.integers(1, 4)) // rng.integers(3, 7)) % 2
    colours = rng.integers(0, 256, (2, 3))
    return colours[stripes].astype(np.uint8)


@pytest.fixture
def holdout(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    for i, name in enumerate(CONTENTS):
        write_photo(root / "photos" / name, 60, 80, seed=300 + i)
    for i, name in enumerate(STYLES):
        (root / "styles").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_painting(70, 70, seed=400 + i)).save(root / "styles" / name, quality=95)
    # A training-only photo must not be scored.
    write_photo(root / "photos" / "training_only.jpg", 60, 80, seed=399)
    monkeypatch.setattr(datasets, "SHARED_DATA", root)
    return root


@pytest.mark.heavy
def test_scores_every_held_out_pair_and_writes_a_contact_sheet(holdout, shipped_decoder, tmp_path):
    out = tmp_path / "eval"
    report = evaluate.main(["--methods", "baseline,adain", "--size", "64", "--out", str(out),
                            "--precision", "fp32", "--threads", "1"])
    pairs = [(r["content"], r["style"]) for r in report["pairs"]]
    assert pairs == [(c, s) for c in CONTENTS for s in STYLES]
    for row in report["pairs"]:
        assert row["size"] == [48, 64]  # longer side 64, aspect kept
        assert row["methods"]["baseline"]["content"] == 0.0  # the content scored against itself
        assert row["methods"]["adain"]["content"] > 0.0
        saved = out / "outputs" / "adain" / f"{Path(row['content']).stem}__{Path(row['style']).stem}.png"
        assert Image.open(saved).size == (64, 48)
        # Lossless: the saved file is the scored output, so scoring it again gives the same figures.
        photo = evaluate.load_resized(holdout / "photos" / row["content"], 64)
        assert scores.structure_score(np.asarray(Image.open(saved)), photo) == pytest.approx(
            row["methods"]["adain"]["structure"], abs=1e-6)
    means = report["summary"]["methods"]
    # The shipped decoder moves the output's feature statistics towards the painting's.
    assert means["adain"]["style"] < 0.8 * means["baseline"]["style"]
    assert means["adain"]["style_gap_closed"] == pytest.approx(1 - means["adain"]["style"] / means["baseline"]["style"])
    assert report["summary"]["acceptance"] == {}  # no gatys100 to compare with
    assert all(row["methods"]["baseline"]["structure"] == pytest.approx(1.0) for row in report["pairs"])
    assert json.loads((out / "evaluate.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    sheet = Image.open(out / "contact_adain.png")
    cell, pad, lab = evaluate.SHEET_CELL, sheets.CONTACT_PAD, sheets.CONTACT_LABEL_H
    # a header row (styles) and a header column (photos) around the outputs
    assert sheet.size == ((len(STYLES) + 1) * cell + (len(STYLES) + 2) * pad,
                          (len(CONTENTS) + 1) * (cell + lab) + (len(CONTENTS) + 2) * pad)
    x0, y0 = 2 * pad + cell, 2 * pad + cell + lab  # first output: row 1, column 1
    first = np.asarray(sheet)[y0:y0 + cell, x0:x0 + cell]
    assert first.std() > 10  # an output was pasted there, not the empty background


@pytest.mark.heavy
def test_acceptance_compares_with_gatys_and_caches_it(holdout, shipped_decoder, tmp_path):
    args = ["--methods", "adain,gatys100", "--gatys-iterations", "3", "--limit-pairs", "1", "--size", "48",
            "--threads", "1", "--cache", str(tmp_path / "cache")]
    report = evaluate.main(args + ["--out", str(tmp_path / "eval")])
    means, acc = report["summary"]["methods"], report["summary"]["acceptance"]["adain"]
    assert acc["pairs_compared"] == 1
    ratios = acc["ratios_to_gatys100"]
    assert ratios["style"] == pytest.approx(means["adain"]["style"] / means["gatys100"]["style"])
    assert ratios["content"] == pytest.approx(means["adain"]["content"] / means["gatys100"]["content"])
    assert ratios["structure"] == pytest.approx(means["adain"]["structure"] / means["gatys100"]["structure"])
    assert acc["passed"] == (ratios["style"] <= 1.5 and ratios["content"] <= 1.5 and ratios["structure"] >= 0.8)
    # The style loss split by layer: its terms add up to it, and each has its own ratio to Gatys.
    for method in ("adain", "gatys100"):
        got = report["pairs"][0]["methods"][method]
        assert list(got["style_layers"]) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
        assert sum(got["style_layers"].values()) == pytest.approx(got["style"], rel=1e-6)
    layers = {m: means[m]["style_layers"] for m in ("adain", "gatys100")}
    assert ratios["style_layers"] == pytest.approx({k: layers["adain"][k] / layers["gatys100"][k] for k in layers["adain"]})
    assert len(set(ratios["style_layers"].values())) == 4  # one ratio per layer, not the total's repeated
    cached = list((tmp_path / "cache").rglob("*.png"))
    assert len(cached) == 1
    again = evaluate.main(args + ["--out", str(tmp_path / "eval2")])  # served from the cache: same pixels and timing
    assert again["pairs"][0]["methods"]["gatys100"]["style"] == report["pairs"][0]["methods"]["gatys100"]["style"]
    assert again["pairs"][0]["methods"]["gatys100"]["seconds"] == report["pairs"][0]["methods"]["gatys100"]["seconds"]


def test_contact_sheet_puts_styles_across_and_photos_down():
    contents = {"a.jpg": photo(30, 40, 1), "b.jpg": photo(40, 30, 2)}
    styles = {"s.jpg": np.full((20, 20, 3), 128, np.uint8)}
    outputs = {("a.jpg", "s.jpg"): np.full((30, 40, 3), 250, np.uint8)}  # b's output is missing
    sheet = evaluate.contact_sheet(contents, styles, outputs, "adain", cell=48)
    pad, lab = sheets.CONTACT_PAD, sheets.CONTACT_LABEL_H
    assert sheet.shape == (3 * (48 + lab) + 4 * pad, 2 * 48 + 3 * pad, 3)
    x1, y1, y2 = 2 * pad + 48, 2 * pad + 48 + lab, 3 * pad + 2 * (48 + lab)
    assert (sheet[pad + 24, x1 + 24] == 128).all()  # the style, in the header row
    assert (sheet[y1 + 24, x1 + 24] == 250).all()  # a's output
    assert (sheet[y2:y2 + 48, x1:x1 + 48] == sheets.CONTACT_BG).all()  # b's: empty


def test_structure_score_tells_the_photo_from_an_unrelated_one():
    a, b = photo(96, 128, 1), photo(96, 128, 2)
    blurred = np.asarray(Image.fromarray(a).resize((64, 48)).resize((128, 96)))
    assert scores.structure_score(a, a) == pytest.approx(1.0)
    assert scores.structure_score(blurred, a) > 0.5
    assert abs(scores.structure_score(b, a)) < 0.3
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    assert abs(scores.structure_score(noise, a)) < 0.1


def test_face_score_reads_the_outlines_inside_the_face_box_only():
    """A network can keep a photo's outlines and lose its face: the structure score hardly notices
    a flat patch over a small face, the face score does; outside the box nothing counts."""
    a, b = photo(192, 256, 1), photo(192, 256, 2)
    box = (0.375, 0.25, 0.5, 0.417)  # 32 x 32 px at (96, 48); the edits below reach 8 px beyond it
    assert scores.face_score(a, a, box) == pytest.approx(1.0)
    patched = a.copy()
    patched[40:88, 88:136] = patched[40:88, 88:136].mean((0, 1)).astype(np.uint8)  # the face a flat patch
    assert scores.structure_score(patched, a) > 0.7
    assert abs(scores.face_score(patched, a, box)) < 0.1
    elsewhere = b.copy()
    elsewhere[40:88, 88:136] = a[40:88, 88:136]  # only the face kept, the rest another photo
    assert scores.face_score(elsewhere, a, box) == pytest.approx(1.0)
    assert abs(scores.structure_score(elsewhere, a)) < 0.2


def test_held_out_faces_are_boxes_in_held_out_photos():
    for name, (left, top, right, bottom) in datasets.HOLDOUT_FACES.items():
        assert name in datasets.HOLDOUT_PHOTOS
        assert 0 <= left < right <= 1 and 0 <= top < bottom <= 1


def test_layout_score_tells_a_kept_tonal_layout_from_outlines_alone():
    """A face lighter than its wall: the score is the strength at which the output keeps that, and
    drops when only the outline stays."""
    yy, xx = np.mgrid[0:96, 0:128]
    face = ((yy - 48) ** 2 + (xx - 64) ** 2 < 30 ** 2)
    img = np.repeat(np.where(face, 200, 60)[..., None], 3, axis=2).astype(np.uint8)
    assert scores.layout_score(img, img) == pytest.approx(1.0)
    darker = (img * 0.5 + 20).astype(np.uint8)  # a dark style: the same layout at half contrast
    assert scores.layout_score(darker, img) == pytest.approx(0.5, abs=0.01)
    assert scores.layout_score(255 - img, img) == pytest.approx(-1.0, abs=0.01)
    faint = (np.full(img.shape, 100.0) + 0.05 * img).astype(np.uint8)  # a trace of it
    assert scores.layout_score(faint, img) < 0.1
    # the outline only, in one tone inside and out (what "structure" still scores well)
    outline = np.full_like(img, 100)
    ring = face ^ ((yy - 48) ** 2 + (xx - 64) ** 2 < 28 ** 2)
    outline[ring] = 0
    assert scores.structure_score(outline, img) > 0.5
    assert scores.layout_score(outline, img) < 0.1
    assert scores.layout_score(np.full_like(img, 90), img) == 0.0


def test_colour_score_tells_kept_region_hues_in_any_palette_from_unrelated_ones():
    """An orange suit against a blue wall: recoloured by one affine map (a palette network's first
    step) every region keeps its own hue and scores 1; tiles of colours unrelated to the regions
    score about 0, as does an output with no hue at all."""
    yy, xx = np.mgrid[0:96, 0:128]
    suit = (np.abs(xx - 64) < 28) & (yy > 30)
    img = np.where(suit[..., None], [230, 120, 40], [40, 70, 160]).astype(np.uint8)
    img = np.clip(img + np.random.default_rng(1).normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    assert scores.colour_score(img, img) == pytest.approx(1.0, abs=1e-6)
    palette = np.clip(img[..., [1, 2, 0]] * 0.6 + 40, 0, 255).astype(np.uint8)  # another palette, same regions
    assert scores.colour_score(palette, img) > 0.95
    tiles = np.random.default_rng(2).integers(0, 256, (12, 16, 3))  # one random colour per 8x8 block
    unrelated = np.kron(tiles, np.ones((8, 8, 1))).astype(np.uint8)
    assert scores.colour_score(unrelated, img) < 0.2
    assert scores.colour_score(np.repeat(img.mean(2, keepdims=True), 3, 2).astype(np.uint8), img) == 0.0


@pytest.mark.heavy
def test_presets_set_scores_each_preset_on_the_held_out_photos(holdout, shipped_decoder, tmp_path):
    report = evaluate.main(["--set", "presets", "--styles", "ink,pop", "--methods", "baseline,adain", "--size", "48",
                            "--out", str(tmp_path / "eval"), "--precision", "fp32", "--threads", "1"])
    assert [(r["content"], r["style"]) for r in report["pairs"]] == [(c, s) for c in CONTENTS for s in ("ink", "pop")]
    with pytest.raises(SystemExit, match="unknown"):
        evaluate.main(["--set", "presets", "--styles", "nope", "--methods", "baseline", "--out", str(tmp_path / "x")])
    # --photos picks held-out photos by name, with or without the suffix, in the order given.
    second = CONTENTS[1].rsplit(".", 1)[0]
    report = evaluate.main(["--set", "presets", "--styles", "ink", "--photos", f"{second},{CONTENTS[0]}",
                            "--methods", "baseline", "--size", "48", "--out", str(tmp_path / "p")])
    assert [r["content"] for r in report["pairs"]] == [CONTENTS[1], CONTENTS[0]]
    with pytest.raises(SystemExit, match=r"--photos: unknown \['training_only'\]"):
        evaluate.main(["--set", "presets", "--photos", "training_only", "--methods", "baseline", "--out", str(tmp_path / "y")])


@pytest.mark.heavy
def test_a_decoder_from_train_decoder_needs_no_encoder_option(holdout, shipped_decoder, tmp_path):
    copy = tmp_path / "my_decoder.pt"
    shutil.copy(shipped_decoder, copy)
    args = ["--methods", "adain", "--size", "48", "--limit-pairs", "1", "--precision", "fp32", "--threads", "1"]
    default = evaluate.main(args + ["--out", str(tmp_path / "a")])
    chosen = evaluate.main(args + ["--out", str(tmp_path / "b"), "--decoder-weights", str(copy)])
    assert chosen["pairs"][0]["methods"]["adain"]["style"] == default["pairs"][0]["methods"]["adain"]["style"]


def test_threads_are_the_callers_again_after_main(holdout, tmp_path):
    """--threads sets torch's thread count for the evaluation only: the caller's is back when main
    returns, and when it exits with an error."""
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    args = ["--methods", "baseline", "--size", "48", "--limit-pairs", "1", "--threads", str(other)]
    report = evaluate.main(args + ["--out", str(tmp_path / "a")])
    assert report["config"]["threads"] == other and len(report["pairs"]) == 1
    assert torch.get_num_threads() == before
    with pytest.raises(SystemExit, match="unknown"):
        evaluate.main(args + ["--styles", "nope", "--out", str(tmp_path / "b")])
    assert torch.get_num_threads() == before


def test_no_held_out_images_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "SHARED_DATA", tmp_path / "empty")
    with pytest.raises(SystemExit, match="no held-out images"):
        evaluate.main(["--methods", "baseline", "--out", str(tmp_path / "eval")])


@pytest.mark.heavy
def test_paintings_set_scores_a_house_style_network_per_painting(holdout, tmp_path):
    """--set paintings --network FOLDER: a painting with FOLDER/<stem>.pt is run by that network (any
    one-style network file); a painting without one is a clear error naming the file it looked for."""
    from stylebatch.styles import catalog

    nets = tmp_path / "nets"
    nets.mkdir()
    shutil.copy(catalog.network_location(catalog.preset_network_ref("ink")), nets / f"{Path(STYLES[0]).stem}.pt")
    args = ["--set", "paintings", "--methods", "baseline,network", "--size", "48", "--precision", "fp32",
            "--threads", "1", "--network", str(nets)]
    report = evaluate.main(args + ["--styles", STYLES[0], "--out", str(tmp_path / "a")])
    assert [(r["content"], r["style"]) for r in report["pairs"]] == [(c, STYLES[0]) for c in CONTENTS]
    for row in report["pairs"]:
        assert row["methods"]["network"]["content"] > 0.0  # the network changed the photo
        assert (tmp_path / "a" / "outputs" / "network" / f"{Path(row['content']).stem}__{Path(STYLES[0]).stem}.png").exists()
    with pytest.raises(SystemExit, match=f"{Path(STYLES[1]).stem}.pt"):
        evaluate.main(args + ["--styles", STYLES[1], "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="a folder of <painting stem>.pt"):
        evaluate.main(args[:-1] + [str(nets / f"{Path(STYLES[0]).stem}.pt"), "--out", str(tmp_path / "c")])


@pytest.mark.heavy
def test_encode_scores_what_the_job_delivers(holdout, tmp_path):
    """--encode jpeg:Q scores outputs after a round trip through the encoder: even the photo itself
    then has a content loss, more so at a low quality; a bad value is refused by name."""
    args = ["--methods", "baseline", "--size", "48", "--limit-pairs", "1", "--precision", "fp32", "--threads", "1"]
    raw = evaluate.main(args + ["--out", str(tmp_path / "raw")])["pairs"][0]["methods"]["baseline"]
    q90 = evaluate.main(args + ["--out", str(tmp_path / "q90"), "--encode", "jpeg:90"])["pairs"][0]["methods"]["baseline"]
    q10 = evaluate.main(args + ["--out", str(tmp_path / "q10"), "--encode", "jpg:10"])["pairs"][0]["methods"]["baseline"]
    assert raw["content"] == 0.0 and raw["structure"] == pytest.approx(1.0)
    assert 0.0 < q90["content"] < q10["content"]
    assert q10["structure"] < q90["structure"] <= 1.0
    assert evaluate.parse_encoding("png") == ("png", 90)
    for bad in ("gif:90", "jpeg:0", "jpeg:high"):
        with pytest.raises(SystemExit):
            evaluate.main(args + ["--out", str(tmp_path / "bad"), "--encode", bad])


def test_style_inside_the_margin_ignores_a_frame_and_agrees_on_an_even_texture():
    """A frame painted in the outer margin moves the whole picture's style loss, not the loss
    inside the margin; on a texture that is the same all over, the two agree."""
    scorer = Scorer(torch.device("cpu"))
    painting = _painting(128, 128, seed=7)
    target = scorer.style_target(painting)
    texture = _painting(96, 128, seed=7)          # the painting's own stripes, same colours
    content = scorer.content_target(texture)
    framed = texture.copy()
    m = inner_margin(framed)
    assert m == 4
    framed[:m - 1], framed[-(m - 1):], framed[:, :m - 1], framed[:, -(m - 1):] = 255, 255, 255, 255
    plain, boxed = scorer.score(texture, content, target), scorer.score(framed, content, target)
    assert boxed["style"] > 1.5 * plain["style"]
    assert boxed["style_inner"] == pytest.approx(plain["style_inner"], rel=1e-6)
    assert plain["style_inner"] < 3 * plain["style"]
    flat = np.full_like(texture, 128)
    assert scorer.score(flat, content, target)["style_inner"] > 20 * plain["style_inner"]


def test_repainting_the_margin_changes_only_the_margin_and_buys_style():
    """The probe changes no pixel inside the margin, and the few pixels it may change lower the
    whole picture's style loss: what a thin frame can buy."""
    scorer = Scorer(torch.device("cpu"))
    target = scorer.style_target(_painting(128, 128, seed=7))
    yy, xx = np.mgrid[0:96, 0:128]
    smooth = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], -1).astype(np.uint8)  # a gradient, no stripes
    content = scorer.content_target(smooth)
    out = scorer.repaint_margin(smooth, target, iterations=10)
    m = inner_margin(smooth)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.array_equal(out[m:-m, m:-m], smooth[m:-m, m:-m])
    assert np.abs(out.astype(int) - smooth).max() > 20                 # the margin was repainted
    before, after = scorer.score(smooth, content, target), scorer.score(out, content, target)
    assert after["style"] < 0.9 * before["style"]
    assert after["style_inner"] == pytest.approx(before["style_inner"], rel=1e-6)


def test_a_negative_repaint_count_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--repaint-margin", "-1", "--out", str(tmp_path / "out")])
    assert "--repaint-margin" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_reflection_padded_scorer_sees_a_crop_of_the_style_as_the_style():
    """Zero padding gives a small picture's border features their own statistics; reflection
    padding does not, so a crop of an even texture scores closer to the texture itself."""
    painting = _painting(160, 160, seed=3)
    crop = painting[40:104, 40:104]
    losses_by = {}
    for padding in ("zeros", "reflect"):
        scorer = Scorer(torch.device("cpu"), padding)
        losses_by[padding] = scorer.score(crop, scorer.content_target(crop), scorer.style_target(painting))["style"]
    assert losses_by["reflect"] < 0.5 * losses_by["zeros"]
