"""Bare-model throughput vs end-to-end ``stylebatch`` throughput on the same 512x512 images, for a
preset's trained network and for AdaIN on the same preset image.

    python -m tools.benchmark [--images 96] [--size 512] [--kinds network,adain]

Prints images/s for (a) the model called directly on decoded arrays, batch 8, and (b) the full
job (Ray Data fetch/decode tasks -> actor pool -> encode/write tasks -> results) over the same
images as JPEG files, then the network/AdaIN ratios. AdaIN runs the preset's reference image
given as ``--style-image`` (a style image nobody trained on), so both kinds see the same style.

Ray is started, and a short warm-up job run, before anything is timed: for its first ~30 s a new
Ray cluster's own agents and actors take a good share of a 2-core machine, which would otherwise
fall on whichever kind runs first. For (b) it reports the steady state (rows committed between
the second and the second-to-last batch: no Ray start-up or model loading, which a catalog run
pays once, and no drain at the end) and the whole-run wall figure. Figures are machine- and
load-dependent: compare the ratios, measured in one run.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from stylebatch.config import JobConfig
from stylebatch.io import images, results
from stylebatch.models import registry
from stylebatch.pipeline.driver import restyle
from stylebatch.styles import catalog, presets


def make_images(n: int, size: int, folder: Path) -> list[Path]:
    """Real photos if scikit-image is installed (cropped/resized to size x size), else textures."""
    sources = []
    try:
        import skimage.data as data

        for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
            sources.append(getattr(data, name)()[..., :3])
    except ImportError:
        rng = np.random.default_rng(0)
        sources = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(4)]
    paths = []
    for i in range(n):
        src = Image.fromarray(sources[i % len(sources)]).resize((size, size), Image.LANCZOS)
        if i // len(sources) % 2:
            src = src.transpose(Image.FLIP_LEFT_RIGHT)
        p = folder / f"img_{i:04d}.jpg"
        src.save(p, quality=92)
        paths.append(p)
    return paths


def bare_model(paths: list[Path], style, kind: str, batch: int) -> float:
    model = registry.build(kind, registry.ModelOptions(max_batch=batch, read_bytes=catalog.read_network))
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    model.stylize(arrays[:batch], style)  # warm-up: style statistics cached, kernels ready
    t0 = time.perf_counter()
    for i in range(0, len(arrays), batch):
        model.stylize(arrays[i:i + batch], style)
    elapsed = time.perf_counter() - t0
    print(f"  bare per image: model {elapsed / len(arrays) * 1000:.0f} ms")
    return len(arrays) / elapsed


def steady_rate(ticks: list[tuple[float, int]]) -> float:
    """Rows per second between the second and the second-to-last commit, from ``(time, rows
    done)`` progress reports. restyle reports once before any batch (0 rows); the first commit
    waits for the actor's start-up and model load and for the first write task while the model
    already runs on, and the last batches drain together: either end would bias the rate."""
    committed = [t for t in ticks if t[1] > 0]
    if len(committed) < 2:
        raise ValueError(f"need at least two committed batches for a rate, got {len(committed)}")
    middle = committed[1:-1] if len(committed) >= 4 else committed
    (t_first, n_first), (t_last, n_last) = middle[0], middle[-1]
    return (n_last - n_first) / max(1e-9, t_last - t_first)


def end_to_end(paths: list[Path], style_args: dict, batch: int, size: int, out: Path,
               quiet: bool = False) -> tuple[float, float]:
    manifest = out.parent / f"{out.name}_manifest.parquet"
    pq.write_table(pa.table({"image_id": [p.stem for p in paths], "uri": [str(p) for p in paths]}), manifest)
    ticks: list[tuple[float, int]] = []  # (time, rows committed) after every batch
    summary = restyle(JobConfig(manifest=str(manifest), output=str(out), max_size=size, batch_size=batch,
                                overwrite=True, **style_args),
                      progress=lambda p: ticks.append((time.perf_counter(), p["done"])))
    rows = results.read_results(str(out), summary.run_id).to_pandas()
    assert (rows.status == "ok").all(), rows.error.dropna().tolist()[:3]
    committed = [t for t in ticks if t[1] > 0]
    steady = steady_rate(ticks)
    if not quiet:
        print(f"  end-to-end per image: model {rows.model_ms.mean():.0f} ms, read {rows.read_ms.mean():.0f} ms, "
              f"write {rows.write_ms.mean():.0f} ms; {len(committed)} batches committed")
    return steady, summary.metrics["images_per_s"]


def main(argv=None) -> None:
    # Ray starts its workers at nice 15; on a shared machine anything else running would then starve
    # the model actor while the bare model (nice 0) is unaffected. Compare like with like.
    os.environ.setdefault("RAY_worker_niceness", "0")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--style", default="cyberpunk", help="a preset (its network vs AdaIN on its image)")
    p.add_argument("--kinds", default="network,adain")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    rates: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "src"
        folder.mkdir()
        paths = make_images(args.images, args.size, folder)
        style_png = Path(tmp) / f"{args.style}.png"
        style_png.write_bytes(images.encode_image(presets.preset_image(args.style), fmt="png"))
        warm_up = paths[:args.batch * 2]
        end_to_end(warm_up, {"style_image": str(style_png)}, args.batch, args.size, Path(tmp) / "out_warm_up",
                   quiet=True)
        for kind in kinds:
            if kind == "network":
                style, style_args = catalog.resolve_style(args.style), {"style": args.style}
                if not style.network:
                    print(f"network: preset {args.style!r} has no shipped network; skipped")
                    continue
            else:
                style, style_args = catalog.style_from_image(str(style_png)), {"style_image": str(style_png)}
            bare = bare_model(paths, style, kind, args.batch)
            print(f"{kind}: bare model ({args.size}x{args.size}, batch {args.batch}): {bare:.3f} images/s", flush=True)
            steady, wall = end_to_end(paths, style_args, args.batch, args.size, Path(tmp) / f"out_{kind}")
            print(f"{kind}: end-to-end stylebatch, steady state: {steady:.3f} images/s; whole run incl. Ray "
                  f"start-up and model load: {wall:.3f} images/s; end-to-end/bare: steady {steady / bare:.2f}x "
                  f"(target >= 0.85), whole run {wall / bare:.2f}x", flush=True)
            rates[kind] = (bare, steady)
    if "network" in rates and "adain" in rates:
        print(f"network / adain: bare {rates['network'][0] / rates['adain'][0]:.2f}x, end-to-end steady "
              f"{rates['network'][1] / rates['adain'][1]:.2f}x (target >= 2.5x)")


if __name__ == "__main__":
    main()
