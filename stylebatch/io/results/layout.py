"""Where a run's files live under an output root ``<out>`` (local path, file:// or s3://), how
runs are named and listed, and how a file is written there::

    <out>/_runs/<run_id>/results/        per-row results (``parts``)
    <out>/_runs/<run_id>/metrics.json    run metrics (``metrics``)
    <out>/_runs/_index.parquet           completed-output snapshot (``index``)
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets

import pyarrow as pa
import pyarrow.parquet as pq

from stylebatch.io import storage as _storage

RUNS_DIR = "_runs"
INDEX_NAME = "_index.parquet"
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def make_run_id(now: _dt.datetime | None = None) -> str:
    """Sortable run id: UTC second + random suffix, e.g. ``20261121T221500Z-3f9a``."""
    now = (now or utcnow()).astimezone(_dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    # Run ids become path segments; refusing separators and dot-dot keeps a
    # run from writing outside its own directory.
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-' (no path separators)")
    return run_id


def run_dir(out_uri: str, run_id: str) -> str:
    return _storage.join(out_uri, RUNS_DIR, check_run_id(run_id))


def results_dir(out_uri: str, run_id: str) -> str:
    return _storage.join(run_dir(out_uri, run_id), "results")


def metrics_uri(out_uri: str, run_id: str) -> str:
    return _storage.join(run_dir(out_uri, run_id), "metrics.json")


def index_uri(out_uri: str) -> str:
    return _storage.join(out_uri, RUNS_DIR, INDEX_NAME)


def list_runs(out_uri: str) -> list[str]:
    """Run ids that have a directory under ``<out>/_runs``, sorted (= chronological for generated ids)."""
    _, folders = _storage.list_dir(_storage.join(out_uri, RUNS_DIR))
    return sorted(name for name in folders if not name.startswith(("_", ".")) and _RUN_ID_RE.match(name))


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write ``table`` as one zstd-compressed Parquet file. storage.write_bytes is atomic (local:
    hidden temp file + rename, which dataset readers skip; S3: a single PUT), so readers never see
    a partial file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    _storage.write_bytes(uri, sink.getvalue().to_pybytes(), content_type="application/vnd.apache.parquet")
