"""Load benchmark: does the driver's memory stay flat as the catalog grows?

Generates small JPEGs (one file per row), runs the real job (``python -m stylebatch.cli submit``,
a local Ray started by the driver) on a small and a large manifest with separate outputs, and
prints for each: rows in, result rows out, duplicates, lost rows, wall time, images/s and the
peak RSS of the driver process alone (its own VmHWM, polled from /proc/<pid>/status; Ray's
workers and daemons are other processes and are not counted). The large/small peak-RSS ratio
should stay at or below the target (1.2x by default).

    python -m tools.benchmark_load                          # 1,000 then 10,000 rows
    python -m tools.benchmark_load --rows-small 50 --rows-large 200   # smoke test
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = 16  # distinct encoded images; every row still gets its own file


@dataclass
class Result:
    label: str
    rows_in: int
    rows_out: int
    duplicates: int
    lost: int
    ok: int
    errors: int
    wall_s: float
    images_per_s: float
    peak_rss_mb: float
    exit_code: int


def _variants(size: int) -> list[bytes]:
    out = []
    for seed in range(VARIANTS):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size] / size
        img = np.stack([np.sin(xx * rng.uniform(2, 8) + seed), np.cos(yy * rng.uniform(2, 8)),
                        np.sin((xx + yy) * rng.uniform(1, 5))], -1)
        arr = np.clip((img * 0.5 + 0.5) * 220 + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_catalog(folder: Path, rows: int, size: int, blobs: list[bytes]) -> Path:
    """``rows`` JPEG files (100 per sub-folder) and a manifest listing them."""
    ids, uris = [], []
    for i in range(rows):
        path = folder / "images" / f"{i // 100:04d}" / f"img{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs[i % len(blobs)])
        ids.append(f"img{i:06d}")
        uris.append(str(path))
    manifest = folder / "manifest.parquet"
    pq.write_table(pa.table({"image_id": ids, "uri": uris}), manifest)
    return manifest


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_job(label: str, manifest: Path, out: Path, rows: int, args: argparse.Namespace) -> Result:
    cmd = [sys.executable, "-m", "stylebatch.cli", "submit", str(manifest), "--output", str(out),
           "--style", args.style, "--max-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--run-id", f"bench-{label}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local Ray
    log_path = out.parent / f"{label}.log"
    t0 = time.perf_counter()
    peak_kb = 0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            # VmHWM is the process's own high-water mark: polling it misses nothing but the last
            # interval before exit, and never counts Ray's worker processes.
            hwm = _vm_hwm_kb(proc.pid)
            if hwm:
                peak_kb = max(peak_kb, hwm)
            time.sleep(args.poll_s)
    wall = time.perf_counter() - t0

    import pandas as pd

    results_dir = out / "_runs" / f"bench-{label}" / "results"
    table = pd.read_parquet(results_dir) if results_dir.exists() else pd.DataFrame(columns=["image_id", "status"])
    expected = {f"img{i:06d}" for i in range(rows)}
    got = table["image_id"].tolist()
    ok = int((table["status"] == "ok").sum())
    errors = int((table["status"] == "error").sum())
    if proc.returncode not in (0, 1):
        print(f"[{label}] the job exited with {proc.returncode}; log tail:\n"
              + "".join(open(log_path).readlines()[-30:]), file=sys.stderr)
    return Result(label, rows, len(got), len(got) - len(set(got)), len(expected - set(got)), ok, errors, wall,
                  ok / wall if wall > 0 else 0.0, peak_kb / 1024, proc.returncode)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-small", type=int, default=1000)
    ap.add_argument("--rows-large", type=int, default=10000)
    ap.add_argument("--image-size", type=int, default=32, help="side of the generated JPEGs (and --max-size)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--style", default="cyberpunk")
    ap.add_argument("--target-ratio", type=float, default=1.2, help="allowed large/small peak driver RSS")
    ap.add_argument("--poll-s", type=float, default=0.1)
    ap.add_argument("--workdir", default=None, help="keep catalogs and outputs here (default: a temp dir, removed)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    blobs = _variants(args.image_size)
    runs = []
    try:
        for label, rows in (("small", args.rows_small), ("large", args.rows_large)):
            folder = work / label
            shutil.rmtree(folder, ignore_errors=True)
            t = time.perf_counter()
            manifest = make_catalog(folder, rows, args.image_size, blobs)
            print(f"[{label}] generated {rows} images in {time.perf_counter() - t:.1f}s; running the job...",
                  flush=True)
            res = run_job(label, manifest, folder / "out", rows, args)
            runs.append(res)
            print(f"[{label}] rows in {res.rows_in}  result rows out {res.rows_out}  duplicates {res.duplicates}  "
                  f"lost {res.lost}  ok {res.ok}  error {res.errors}  wall {res.wall_s:.1f}s  "
                  f"{res.images_per_s:.1f} images/s  peak driver RSS {res.peak_rss_mb:.0f} MiB  "
                  f"(exit {res.exit_code})", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    small, large = runs
    ratio = large.peak_rss_mb / small.peak_rss_mb if small.peak_rss_mb else float("nan")
    complete = all(r.rows_out == r.rows_in and r.duplicates == 0 and r.lost == 0 and r.errors == 0 for r in runs)
    verdict = "PASS" if ratio <= args.target_ratio and complete else "FAIL"
    print()
    print(f"{'run':<6} {'rows in':>8} {'rows out':>9} {'dups':>5} {'lost':>5} {'wall s':>8} {'img/s':>7} {'peak RSS MiB':>13}")
    for r in runs:
        print(f"{r.label:<6} {r.rows_in:>8} {r.rows_out:>9} {r.duplicates:>5} {r.lost:>5} {r.wall_s:>8.1f} "
              f"{r.images_per_s:>7.1f} {r.peak_rss_mb:>13.0f}")
    print(f"peak driver RSS ratio large/small: {ratio:.2f}x (target <= {args.target_ratio}x); "
          f"rows complete: {complete} -> {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": [r.__dict__ for r in runs], "ratio": ratio,
                                               "target": args.target_ratio, "verdict": verdict}, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
