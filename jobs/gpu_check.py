"""The CUDA path end to end, in one short run (about 5 minutes on one GPU); prints figures.

    python -m jobs.gpu_check                  # every model kind through `stylebatch submit` on CUDA
    python -m jobs.gpu_check --skip-training  # without the 100-step house-style training

1. Every model kind (a preset network, AdaIN, Gatys premium, a fast-neural-style and a CycleGAN
   checkpoint) restyles the same photos through ``stylebatch submit --device cuda`` (a local Ray
   on this machine); its images/s is set against a bare loop of the same model on the same GPU
   (``registry.build`` + ``stylize``), so the job's own overhead shows as a ratio.
2. A 24-megapixel photo through the preset network at full size, in tiles sized from the GPU's
   free memory: time and peak GPU memory.
3. ``stylebatch styles train`` for 100 steps from the shared base network: seconds a step.

Without a CUDA device it says so and exits 2. The checkpoints of step 1 are random weights in the
published layouts (their speed is the architecture's, whatever the weights).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHOTOS = 24          # photos per kind in the job and in the bare loop (premium: 4)
SIZE = 512           # their longer side
KINDS = ("network", "adain", "gatys", "fast-neural-style", "cyclegan")


def _write_inputs(root: Path, photos_n: int = PHOTOS) -> tuple[Path, Path]:
    """Photos (scikit-image's, resized), a manifest per kind, and a catalog naming every kind."""
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    from stylebatch.io.manifest import build_manifest
    from stylebatch.models.cyclegan import ResnetGenerator
    from stylebatch.models.fast_neural_style import TransformerNet

    photos = root / "photos"
    photos.mkdir(parents=True)
    base = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    for i in range(photos_n):
        img = Image.fromarray(np.ascontiguousarray(base[i % len(base)][..., :3]))
        scale = SIZE / max(img.size)
        img.resize((round(img.width * scale) // 8 * 8, round(img.height * scale) // 8 * 8)).save(photos / f"p{i:03d}.jpg")
    torch.save(TransformerNet().state_dict(), root / "candy.pth")
    torch.save(ResnetGenerator().state_dict(), root / "monet.pth")
    (root / "catalog.yaml").write_text(
        "styles:\n"
        "  painting: {images: [cyberpunk, ink]}\n"  # a blend of two images: AdaIN
        "  candy: {model: fast-neural-style, weights: candy.pth}\n"
        "  monet: {model: cyclegan, weights: monet.pth}\n")
    manifest = root / "manifest.parquet"
    build_manifest(str(photos), str(manifest))
    return manifest, root / "catalog.yaml"


def _style_for(kind: str) -> tuple[str, list[str]]:
    """The style and extra submit flags that make the plan pick ``kind``."""
    return {
        "network": ("cyberpunk", []),
        "adain": ("painting", []),
        "gatys": ("cyberpunk", ["--quality", "premium", "--premium-iterations", "50"]),
        "fast-neural-style": ("candy", []),
        "cyclegan": ("monet", []),
    }[kind]


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _job(kind: str, manifest: Path, catalog: Path, out: Path, device: str = "cuda") -> dict:
    style, extra = _style_for(kind)
    cmd = [sys.executable, "-m", "stylebatch.cli", "submit", str(manifest), "--style-catalog", str(catalog),
           "--style", style, "--output", str(out), "--device", device, "--precision", "auto",
           "--max-size", str(SIZE), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    metrics = json.loads(next(out.glob("_runs/*/metrics.json")).read_text())
    return {"wall_s": wall, "images_per_s": metrics.get("images_per_s"), "ok": metrics["counts"].get("ok", 0)}


def _bare(kind: str, catalog: Path, photos: list, device: str = "cuda") -> float:
    """Images/s of the same model on the same GPU, no Ray: build, warm up, then one timed pass."""
    from stylebatch.models import registry
    from stylebatch.styles.catalog import StyleCatalog, read_network, resolve_style

    style_name, extra = _style_for(kind)
    cat = StyleCatalog.load(str(catalog))
    style = resolve_style(style_name, catalog=cat)
    options = registry.ModelOptions(device=device, precision="auto", premium_iterations=50, read_bytes=read_network)
    quality = "premium" if "--quality" in extra else "fast"
    model = registry.build(registry.kind_for(quality, style).name, options)
    model.stylize(photos[:2], style)
    _sync(device)
    t0 = time.perf_counter()
    model.stylize(photos, style)
    _sync(device)
    return len(photos) / (time.perf_counter() - t0)


def _tiles_24mp() -> dict:
    import numpy as np
    import skimage.data
    import torch
    import torch.nn.functional as F

    from stylebatch.models import registry
    from stylebatch.styles.catalog import read_network, resolve_style

    src = torch.from_numpy(np.ascontiguousarray(skimage.data.astronaut())).permute(2, 0, 1)[None].float()
    img = F.interpolate(src, size=(4000, 6000), mode="bilinear")[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()
    model = registry.build("network", registry.ModelOptions(device="cuda", precision="auto", read_bytes=read_network))
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = model.stylize([img], resolve_style("cyberpunk"))[0]
    torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
            "shape": list(out.shape), "tile": getattr(model, "tiles", None) and model.tiles.tile}


def _train(root: Path) -> dict:
    from stylebatch.styles.catalog import base_network_path

    out = root / "house.pt"
    cmd = [sys.executable, "-m", "stylebatch.cli", "styles", "train", "house", "--image", "cyberpunk",
           "-o", str(out), "--steps", "100", "--init-from", base_network_path(), "--device", "cuda"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return {"seconds": seconds, "s_per_step": seconds / 100}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-training", action="store_true", help="leave out the 100-step training (default: run it)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing checked")
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest, catalog = _write_inputs(root)
        import numpy as np
        from PIL import Image

        photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((root / "photos").glob("*.jpg"))]
        print(f"\n{'kind':<18} {'job images/s':>13} {'bare images/s':>14} {'job/bare':>9}")
        failed = False
        for kind in KINDS:
            sample = photos[:4] if kind == "gatys" else photos
            job = _job(kind, manifest if kind != "gatys" else _subset(manifest, root, 4), catalog, root / f"out-{kind}")
            bare = _bare(kind, catalog, sample)
            if "error" in job:
                failed = True
                print(f"{kind:<18} job failed: {job['error']}")
                continue
            ips = job["images_per_s"] or 0.0
            print(f"{kind:<18} {ips:>13.2f} {bare:>14.2f} {ips / bare:>9.2f}")
        t = _tiles_24mp()
        print(f"\n24 MP through the network in tiles of {t['tile']} px: {t['seconds']:.1f} s, "
              f"peak GPU memory {t['peak_gpu_mb']:.0f} MB, output {t['shape']}")
        if not args.skip_training:
            tr = _train(root)
            if "error" in tr:
                failed = True
                print(f"\nhouse-style training failed: {tr['error']}")
            else:
                print(f"\nhouse-style training, 100 steps: {tr['seconds']:.0f} s ({tr['s_per_step']:.2f} s a step)")
    return 1 if failed else 0


def _subset(manifest: Path, root: Path, n: int) -> Path:
    import pyarrow.parquet as pq

    out = root / f"manifest-{n}.parquet"
    pq.write_table(pq.read_table(manifest).slice(0, n), out)
    return out


if __name__ == "__main__":
    sys.exit(main())
