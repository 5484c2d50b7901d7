"""Peak memory and time of one picture at catalog sizes (1, 6, 12, 24 MP); prints figures, asserts nothing.

    python -m tools.benchmark_sizes                          # a preset network, 1 6 12 24 MP
    python -m tools.benchmark_sizes --kind adain --mp 1 6    # AdaIN on the preset's image
    python -m tools.benchmark_sizes --compare-untiled 3      # tiled against whole at 3 MP: colour
                                                             # statistics and the largest difference

Each picture runs in a fresh process (``stylebatch stylize`` with ``--max-size 0``), so the peak
RSS is that picture's alone: the process's imports, the model and the picture. The photo is a real
one (``../shared/data/photos`` when present, else scikit-image's astronaut) resized to the size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_PHOTO = ROOT.parent / "shared" / "data" / "photos" / "kodak_23_macaws.jpg"

_CHILD = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
from stylebatch.models import registry, tiling
from stylebatch.styles.catalog import read_network, resolve_style
import dataclasses
src, out, kind, style_name, tile = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
img = np.asarray(Image.open(src).convert("RGB"))
style = resolve_style(style_name)
if kind == "adain":
    style = dataclasses.replace(style, network=None)
model = registry.build(kind, registry.ModelOptions(device="cpu", read_bytes=read_network))
if tile == 0:  # whole: a plan whose one tile holds any picture
    model.tiles = tiling.TilePlan(tile=1 << 20, halo=8, blend=8)
t0 = time.perf_counter()
y = model.stylize([img], style)[0]
seconds = time.perf_counter() - t0
Image.fromarray(y).save(out)
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def photo_at(megapixels: float, folder: Path) -> Path:
    src = Image.open(SHARED_PHOTO) if SHARED_PHOTO.exists() else None
    if src is None:
        import skimage.data

        src = Image.fromarray(skimage.data.astronaut())
    src = src.convert("RGB")
    scale = (megapixels * 1e6 / (src.width * src.height)) ** 0.5
    size = (max(8, round(src.width * scale)), max(8, round(src.height * scale)))
    path = folder / f"photo-{megapixels:g}mp.png"
    src.resize(size, Image.LANCZOS).save(path)
    return path


def run_one(src: Path, out: Path, kind: str, style: str, tile: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(out), kind, style, str(tile)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="network", choices=["network", "adain"], help="model kind (default network)")
    ap.add_argument("--style", default="cyberpunk", help="preset (default cyberpunk)")
    ap.add_argument("--mp", type=float, nargs="+", default=[1, 6, 12, 24], help="megapixels (default 1 6 12 24)")
    ap.add_argument("--compare-untiled", type=float, default=0, metavar="MP",
                    help="also run this size whole and compare (default 0: no comparison)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'MP':>5} {'pixels':>12} {'seconds':>9} {'peak RSS MB':>12}")
        for mp in args.mp:
            src = photo_at(mp, folder)
            r = run_one(src, folder / "out.png", args.kind, args.style, tile=1)
            w, h = Image.open(src).size
            if "error" in r:
                print(f"{mp:>5g} {w * h:>12,} failed: {r['error']}")
            else:
                print(f"{mp:>5g} {w * h:>12,} {r['seconds']:>9.1f} {r['peak_rss_mb']:>12.0f}")
        if args.compare_untiled:
            src = photo_at(args.compare_untiled, folder)
            tiled = run_one(src, folder / "tiled.png", args.kind, args.style, tile=1)
            whole = run_one(src, folder / "whole.png", args.kind, args.style, tile=0)
            a = np.asarray(Image.open(folder / "tiled.png")).astype(float)
            b = np.asarray(Image.open(folder / "whole.png")).astype(float)
            print(f"\n{args.compare_untiled:g} MP tiled vs whole: peak RSS {tiled['peak_rss_mb']:.0f} / "
                  f"{whole['peak_rss_mb']:.0f} MB, {tiled['seconds']:.1f} / {whole['seconds']:.1f} s")
            print("  channel means tiled", np.round(a.reshape(-1, 3).mean(0), 2), "whole", np.round(b.reshape(-1, 3).mean(0), 2))
            print("  channel stds  tiled", np.round(a.reshape(-1, 3).std(0), 2), "whole", np.round(b.reshape(-1, 3).std(0), 2))
            d = np.abs(a - b)
            print(f"  |tiled - whole|: mean {d.mean():.2f}, 99th percentile {np.percentile(d, 99):.1f}, max {d.max():.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
