"""Small builders shared by the end-to-end tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, textured synthetic photo (gradients + blobs), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(xx * rng.uniform(3, 9) + rng.uniform(0, 6)),
                    np.cos(yy * rng.uniform(3, 9) + rng.uniform(0, 6)),
                    np.sin((xx + yy) * rng.uniform(2, 6))], -1)
    img = (img * 0.5 + 0.5) * 200 + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_photo(path: Path, h: int, w: int, seed: int, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(h, w, seed)).save(path, format=fmt, quality=95)
    return path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    cols = sorted({k for r in rows for k in r}, key=["image_id", "uri", "style", "alpha", "quality"].index)
    pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in cols}), path)
    return path


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "stylebatch.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(ROOT))
